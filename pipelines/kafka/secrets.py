"""Where the command-signing key comes from, and how commands are signed.

In order: ``--hmac-key-file``, the ``twin.hmac.key`` setting (a ``--kafka-config`` file;
``-X`` refuses secrets), ``$TWIN_HMAC_KEY``, else a random per-user key created once
(mode 0600, in the 0700 state folder), so ``twin run``, ``twin flink`` and ``twin
simulate`` on one machine agree without setup. Across machines, configure the same key
explicitly. The key is never printed.

The per-user key is created atomically: concurrent first runs all end up with the one
complete key one of them wrote (:func:`pipelines.private_files.create_private_once`).

:func:`command_signer` adds how long a signed command stays valid: the
``twin.command.validity.ms`` setting, default 300000 (5 minutes).
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pipelines.kafka.broker import state_dir
from pipelines.private_files import create_private_once, private_dir
from transforms.signing import DEFAULT_VALIDITY_MS, Signer

ENV = "TWIN_HMAC_KEY"
KEY_SETTING = "twin.hmac.key"
VALIDITY_SETTING = "twin.command.validity.ms"


def user_key_path() -> Path:
    return state_dir() / "hmac.key"


def hmac_key(key_file: str | Path | None = None, settings: dict[str, str] | None = None,
             create: bool = True) -> bytes | None:
    """The key, from the first place that has one; ``create=False``: ``None`` instead of
    creating the per-user key (for readers such as ``twin tail``)."""
    if key_file:
        data = Path(key_file).read_bytes().strip()
        if not data:
            raise ValueError(f"HMAC key file {key_file} is empty")
        return data
    if settings and settings.get(KEY_SETTING):
        return settings[KEY_SETTING].encode()
    if os.environ.get(ENV):
        return os.environ[ENV].encode()
    path = user_key_path()
    if not path.is_file():
        if not create:
            return None
        private_dir(path.parent)
        create_private_once(path, secrets.token_hex(32).encode())
    data = path.read_bytes().strip()
    if not data:
        raise ValueError(f"the per-user HMAC key {path} is empty (a damaged file): delete "
                         "it to have a new one created, or configure a key")
    return data


def validity_ms(settings: dict[str, str] | None = None) -> int:
    """``twin.command.validity.ms`` (a positive whole number of ms), or the default."""
    raw = (settings or {}).get(VALIDITY_SETTING)
    if raw is None or raw == "":
        return DEFAULT_VALIDITY_MS
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value <= 0:
        raise ValueError(f"{VALIDITY_SETTING} must be a positive number of milliseconds, "
                         f"got {raw!r}")
    return value


def command_signer(key_file: str | Path | None = None,
                   settings: dict[str, str] | None = None) -> Signer:
    """The :class:`~transforms.signing.Signer` the twin's sinks sign actions with: the key
    of :func:`hmac_key` and the validity of :func:`validity_ms`."""
    return Signer(hmac_key(key_file, settings), validity_ms(settings))

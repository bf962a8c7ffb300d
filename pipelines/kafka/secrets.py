"""Where the command-signing key comes from.

In order: ``--hmac-key-file``, the ``twin.hmac.key`` setting (Kafka config file or
``-X``), ``$TWIN_HMAC_KEY``, else a random per-user key created once (mode 0600) in the
state folder, so ``twin run`` and ``twin simulate`` on one machine agree without setup.
Across machines, configure the same key explicitly. The key is never printed.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from pipelines.kafka.broker import state_dir

ENV = "TWIN_HMAC_KEY"


def hmac_key(key_file: str | Path | None = None, settings: dict[str, str] | None = None,
             create: bool = True) -> bytes | None:
    """The key, from the first place that has one; ``create=False``: ``None`` instead of
    creating the per-user key (for readers such as ``twin tail``)."""
    if key_file:
        data = Path(key_file).read_bytes().strip()
        if not data:
            raise ValueError(f"HMAC key file {key_file} is empty")
        return data
    if settings and settings.get("twin.hmac.key"):
        return settings["twin.hmac.key"].encode()
    if os.environ.get(ENV):
        return os.environ[ENV].encode()
    path = state_dir() / "hmac.key"
    if not path.is_file() and not create:
        return None
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    return path.read_bytes().strip()

"""The durable state of bounded Kafka runs: every asset's twin plus the offsets read.

One file, written atomically (temporary file, fsync, rename; mode 0600) after a slice's
outputs are on the broker, so twins and offsets always belong together: the next slice or
run starts each twin where it stopped and reads from exactly the next offset. Paths go
through Beam's FileSystems, so a ``gs://`` path works where a runner needs shared storage.

Authenticated, because it holds pickles
---------------------------------------
The twins are River models, which only pickle faithfully, and unpickling runs whatever the
bytes say. So the file is signed, the way signed cookies (Django's ``signing``,
itsdangerous) carry data a server must be able to trust: an HMAC-SHA256 tag over the
bytes, with a key derived from the run's signing key (the one that signs setpoint
commands: ``--hmac-key-file``, ``twin.hmac.key`` or ``$TWIN_HMAC_KEY``, see
:mod:`pipelines.kafka.secrets`), checked in constant time *before* anything is
unpickled. A file changed by anyone without the key, or written with another key, is
refused with :class:`StateFileError`. Files of older versions carry no tag: they are
refused too, unless the user vouches for one explicitly (``trust_unsigned``, the
``--trust-unsigned-state`` flag), which loads it once so the next write stores it signed.

Layout: ``FORMAT`` (one line), the 32-byte tag, then a pickle of ``{"version": 2,
"offsets": {"topic/partition": next_offset}, "topic_ids": {topic: id}, "twins":
{asset_id: pickled AssetTwin}, "seen": {asset_id: last event ms}, "pending": [committed
steps whose files are not yet the run's outputs], "runs": n, "slices": n, "steps": n,
"evicted": n, "updated_ms": t}``.

Workers that start the twins from the file (:class:`~pipelines.beam.twin.TwinFn`) do
not hold the key: the job hands them the SHA-256 of the file it verified, and
:func:`load_twins` unpickles only a file with exactly that digest.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pickle
import tempfile
import time
from typing import Any

VERSION = 2
FORMAT = b"twinstream-state/2\n"
TAG_BYTES = 32
_KEY_PURPOSE = b"twinstream state file v2"  # a state-file key is no command-signing key


class StateFileError(ValueError):
    """A state file that cannot be used, with what to do about it."""


def empty_state() -> dict[str, Any]:
    return {"version": VERSION, "offsets": {}, "topic_ids": {}, "twins": {}, "seen": {},
            "pending": [], "runs": 0, "slices": 0, "steps": 0, "evicted": 0,
            "updated_ms": None}


def _state_key(key: bytes) -> bytes:
    if not key:
        raise StateFileError("a state file needs a signing key")
    return hmac.new(key, _KEY_PURPOSE, hashlib.sha256).digest()


def _tag(key: bytes, body: bytes) -> bytes:
    return hmac.new(_state_key(key), FORMAT + body, hashlib.sha256).digest()


def seal(state: dict[str, Any], key: bytes) -> bytes:
    """The file's bytes for ``state``: format line, tag, pickle."""
    body = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    return FORMAT + _tag(key, body) + body


def _body(data: bytes, path: str) -> tuple[bytes, bytes]:
    """``(tag, body)`` of a signed file's bytes, or a clear error for anything else."""
    if data.startswith(FORMAT) and len(data) > len(FORMAT) + TAG_BYTES:
        start = len(FORMAT)
        return data[start:start + TAG_BYTES], data[start + TAG_BYTES:]
    if data[:1] == b"\x80":  # a bare pickle: what twinstream wrote before files were signed
        raise StateFileError(
            f"state file {path} is not signed (an older twinstream wrote it): it holds "
            "pickles, and loading an unauthenticated pickle runs whatever code is in it. "
            "If you wrote it and nobody else could change it, run once with "
            "--trust-unsigned-state to load it and store it signed; otherwise move it "
            "away, and the twins start afresh from the consumer group's committed offsets")
    if data.startswith(b"twinstream-state/"):
        found = data.split(b"\n", 1)[0].decode(errors="replace")
        raise StateFileError(f"state file {path} is of format {found!r}, this twinstream "
                             f"reads {FORMAT.strip().decode()!r}")
    raise StateFileError(f"{path} is not a twinstream state file")


def unseal(data: bytes, key: bytes, path: str = "state file") -> dict[str, Any]:
    """The state in a file's bytes, after checking its tag with ``key``."""
    tag, body = _body(data, path)
    if not hmac.compare_digest(tag, _tag(key, body)):
        raise StateFileError(
            f"state file {path} fails its signature check: it was tampered with, or written "
            "with another key (it must be read with the signing key it was written with: "
            "--hmac-key-file, twin.hmac.key or $TWIN_HMAC_KEY). Nothing in it was loaded")
    return _checked(pickle.loads(body), path)


def _checked(state: Any, path: str) -> dict[str, Any]:
    if not isinstance(state, dict) or state.get("version") != VERSION:
        version = state.get("version") if isinstance(state, dict) else None
        raise StateFileError(f"state file {path} has version {version}, this twinstream "
                             f"reads version {VERSION}")
    return {**empty_state(), **state}


def _upgrade(old: Any, path: str) -> dict[str, Any]:
    """A version-1 state (unsigned; the user vouched for it) as version 2."""
    if not isinstance(old, dict) or old.get("version") != 1:
        raise StateFileError(f"{path} is not a twinstream state file of version 1")
    state = {**empty_state(), "offsets": dict(old.get("offsets") or {}),
             "twins": dict(old.get("twins") or {}), "runs": old.get("runs", 0)}
    for asset_id, blob in state["twins"].items():  # when each asset was last seen
        last = getattr(getattr(pickle.loads(blob), "buffer", None), "max_ts_ms", None)
        if isinstance(last, int) and last > -(2**62):
            state["seen"][asset_id] = last
    return state


def _read_bytes(path: str) -> bytes | None:
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return None
    with FileSystems.open(path) as f:
        return f.read()


def read_state(path: str | None, key: bytes, trust_unsigned: bool = False) -> dict[str, Any]:
    """The verified state at ``path`` (an empty one if there is none yet), with its
    ``"sha256"`` (of the file, for :func:`load_twins`; None when there is no file).

    Raises :class:`StateFileError` for a file that is not signed with ``key`` (nothing is
    unpickled before the check), unless it is an old unsigned one and ``trust_unsigned``.
    """
    data = _read_bytes(path) if path else None
    if data is None:
        return {**empty_state(), "sha256": None}
    if trust_unsigned and data[:1] == b"\x80":
        state = _upgrade(pickle.loads(data), path)
        return {**state, "sha256": None, "unsigned": True}  # for the caller to sign
    state = unseal(data, key, path)
    return {**state, "sha256": hashlib.sha256(data).hexdigest()}


def load_twins(path: str, sha256: str) -> dict[str, bytes]:
    """The twins of the state file at ``path``, if its bytes are exactly the ones the job
    verified (``sha256``); for workers, which do not hold the signing key."""
    data = _read_bytes(path)
    if data is None or hashlib.sha256(data).hexdigest() != sha256:
        raise StateFileError(f"state file {path} changed after the job verified it")
    _, body = _body(data, path)
    return _checked(pickle.loads(body), path)["twins"]


def write_state(path: str, state: dict[str, Any], key: bytes) -> dict[str, Any]:
    """Store ``state`` signed with ``key``, atomically, readable by the owner only; returns
    it with ``updated_ms`` and the new file's ``"sha256"``."""
    state = {k: v for k, v in state.items() if k not in ("sha256", "unsigned")}
    state.update(version=VERSION, updated_ms=int(time.time() * 1000))
    data = seal(state, key)
    digest = hashlib.sha256(data).hexdigest()
    if "://" in path:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as f:  # object stores replace objects atomically
            f.write(data)
        return {**state, "sha256": digest}
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".twin-state-")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:  # the rename itself survives a crash
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return {**state, "sha256": digest}

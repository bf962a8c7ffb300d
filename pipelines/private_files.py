"""Files only their owner may read: secrets and security state, written safely.

- :func:`private_dir`: a folder of mode 0700 (created so, or tightened if it is ours).
- :func:`write_private`: replace a file atomically with content of mode 0600. The content
  goes to a temporary file created 0600 from the start (never a moment readable by
  others), is fsynced, and is renamed over the target; the folder is fsynced too, so
  after a crash the file is either the old or the new content, never a mix or empty.
- :func:`create_private_once`: create a file exactly once, even when several processes
  race: each writes and fsyncs its own temporary file, then ``link()`` publishes it under
  the final name, which fails if the name exists; losers read the winner's complete file.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | Path) -> Path:
    """``path`` as a folder that only its owner can enter (parents created as needed)."""
    p = Path(path)
    p.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    st = p.stat()
    if st.st_mode & 0o077 and st.st_uid == os.getuid():
        p.chmod(DIR_MODE)
    return p


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_temp(folder: Path, name: str, data: bytes) -> Path:
    tmp = folder / f".{name}.{secrets.token_hex(8)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0),
                 FILE_MODE)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    return tmp


def write_private(path: str | Path, data: bytes) -> Path:
    """Atomically make ``path`` hold ``data``, mode 0600, in a 0700 folder."""
    p = Path(path)
    folder = private_dir(p.parent)
    tmp = _write_temp(folder, p.name, data)
    try:
        os.replace(tmp, p)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(folder)
    return p


def create_private_once(path: str | Path, data: bytes) -> bool:
    """Create ``path`` with ``data`` (0600, in a 0700 folder) unless it exists.

    Returns True if this call created it, False if another writer had (its content is
    then complete: a name only ever appears for a fully written file).
    """
    p = Path(path)
    folder = private_dir(p.parent)
    tmp = _write_temp(folder, p.name, data)
    try:
        os.link(tmp, p)
    except FileExistsError:
        return False
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    _fsync_dir(folder)
    return True


def is_private(path: str | Path) -> bool:
    """Whether neither group nor others may read or write ``path``."""
    return not stat.S_IMODE(Path(path).stat().st_mode) & 0o077

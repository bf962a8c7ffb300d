"""The durable state of bounded Kafka runs: every asset's twin plus the offsets read.

One file, written atomically (temporary file, fsync, rename) after a run's outputs are on
the broker, so twins and offsets always belong together: the next run starts each twin
where it stopped and reads from exactly the next offset. Paths go through Beam's
FileSystems, so a ``gs://`` path works where a runner needs shared storage.

Format: a pickle of ``{"version": 1, "offsets": {"topic/partition": next_offset},
"twins": {asset_id: pickled AssetTwin}, "runs": n, "updated_ms": t}``. It holds pickles:
read only state files you wrote.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import time
from typing import Any

VERSION = 1


def empty_state() -> dict[str, Any]:
    return {"version": VERSION, "offsets": {}, "twins": {}, "runs": 0, "updated_ms": None}


def read_state(path: str | None) -> dict[str, Any]:
    """The state at ``path``, or an empty one if there is none yet."""
    if not path:
        return empty_state()
    from apache_beam.io.filesystems import FileSystems

    if not FileSystems.exists(path):
        return empty_state()
    with FileSystems.open(path) as f:
        state = pickle.loads(f.read())
    if state.get("version") != VERSION:
        raise ValueError(f"state file {path} has version {state.get('version')}, "
                         f"this twinstream reads version {VERSION}")
    return state


def write_state(path: str, offsets: dict[str, int], twins: dict[str, bytes],
                previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """Merge this run's offsets and twins over ``previous`` and store them atomically."""
    previous = previous or empty_state()
    state = {
        "version": VERSION,
        "offsets": {**previous["offsets"], **offsets},
        "twins": {**previous["twins"], **twins},
        "runs": previous.get("runs", 0) + 1,
        "updated_ms": int(time.time() * 1000),
    }
    data = pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)
    if "://" in path:
        from apache_beam.io.filesystems import FileSystems

        with FileSystems.create(path) as f:  # object stores replace objects atomically
            f.write(data)
        return state
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".twin-state-")
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
    return state

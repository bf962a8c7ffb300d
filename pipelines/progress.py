"""Process-local progress counters for the CLI's progress display.

Engine code calls :func:`add`; the CLI polls :func:`snapshot` from another thread. Only
meaningful when the pipeline runs in the CLI's process (DirectRunner in-process); on a
remote runner the counters simply stay at zero and the display shows elapsed time.
"""

from __future__ import annotations

import threading
from collections import Counter

_lock = threading.Lock()
_counts: Counter[str] = Counter()


def add(name: str, n: int = 1) -> None:
    with _lock:
        _counts[name] += n


def snapshot() -> dict[str, int]:
    with _lock:
        return dict(_counts)


def reset() -> None:
    with _lock:
        _counts.clear()

"""The Python worker process that hosts the twins: its garbage collector.

A worker holding thousands of twins keeps ~90 GC-tracked objects per twin (dicts, lists,
River's estimators) alive for the whole run, and the window work allocates and frees
containers at a high rate. With CPython's default thresholds (700, 10, 10) that means a
full collection, which walks every tracked object in the process, every ~100,000 net
allocations, each finding almost no garbage among the long-lived twins. :func:`tune_gc`
is called once per
worker process by the twin's engine bindings (Beam ``TwinFn.setup``, Flink
``TwinFunction.open``) before any twin exists:

- ``gc.freeze()``: what the process loaded before its first twin (modules, the engine's
  machinery) is moved out of the collector's sight for good; a full collection walks
  ~90,000 objects instead of ~260,000 at the end of the benchmark's run;
- the youngest generation's threshold from 700 to :data:`GEN0_THRESHOLD`: fourteen times
  fewer collections of every generation. Garbage cycles are still collected, later; the
  memory they hold meanwhile is bounded by the threshold's allocations.

Set ``TWIN_GC_DEFAULTS=1`` in the worker's environment to keep CPython's own settings.
"""

from __future__ import annotations

import gc
import os

GEN0_THRESHOLD = 10_000
_tuned = False


def tune_gc() -> bool:
    """Freeze what is loaded and raise the youngest generation's threshold, once per
    process; returns whether this call changed anything."""
    global _tuned
    if _tuned or os.environ.get("TWIN_GC_DEFAULTS") == "1":
        return False
    _tuned = True
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(GEN0_THRESHOLD, gen1, gen2)
    return True

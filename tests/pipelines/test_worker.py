"""The twin worker's garbage-collector settings (in a fresh interpreter: they are global)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import gc, json
from pipelines.worker import GEN0_THRESHOLD, tune_gc
before = gc.get_threshold()
first = tune_gc()
frozen = gc.get_freeze_count()
second = tune_gc()
print(json.dumps([before, first, frozen, second, gc.get_threshold(), GEN0_THRESHOLD]))
"""


def _probe(**env: str) -> list:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                         check=True, env={**os.environ, **env})
    return json.loads(out.stdout)


def test_tune_gc_freezes_what_is_loaded_and_raises_the_young_threshold_once():
    env = {k: v for k, v in os.environ.items() if k != "TWIN_GC_DEFAULTS"}
    before, first, frozen, second, after, gen0 = _probe(**env)
    assert before == [700, 10, 10] and gen0 == 10_000
    assert first is True and second is False
    assert frozen > 1_000  # the modules and whatever else was loaded
    assert after == [10_000, 10, 10]


def test_tune_gc_keeps_cpythons_defaults_when_asked():
    before, first, frozen, second, after, _ = _probe(TWIN_GC_DEFAULTS="1")
    assert first is False and frozen == 0 and after == before == [700, 10, 10]

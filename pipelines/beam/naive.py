"""The textbook per-element Beam pipeline of the twin's scoring, for ``twin bench``.

Written the way Beam's programming guide teaches: one element per message, a ``Map`` to
decode and normalize, event timestamps, ``FixedWindows``, a ``GroupByKey`` per asset and
window, window features, then per asset all its windows in time order through the same
:mod:`detector <transforms.detectors>` the twin uses (Beam keeps state per key
*and window*, so ordered per-asset scoring is a second ``GroupByKey`` in the global
window and a sort). It computes the same predictions as the twin on clean input (no
lateness handling, duplicates or dead letters: the benchmark's workload has none); it is
the yardstick the twin's own pipeline is measured against, not a product path.
"""

from __future__ import annotations

import time
from typing import Any

import apache_beam as beam
from apache_beam.transforms.window import FixedWindows, GlobalWindows, TimestampedValue

from transforms.detectors import for_asset
from transforms.features import window_features
from transforms.normalize import normalize_message
from transforms.windowing import Window


def _normalize(msg: tuple[str, bytes, bytes, int]):
    _topic, _key, value, arrival_ms = msg
    # judged as the twin judges it: by arrival time and this machine's clock (the twin's
    # per-asset event-time guard has no place here: no dead letters, clean input)
    reading = normalize_message(value, now_ms=arrival_ms, clock_ms=int(time.time() * 1000))
    return TimestampedValue(reading, reading["ts_ms"] / 1000.0)


class _Features(beam.DoFn):
    def process(self, kv, window=beam.DoFn.WindowParam):
        asset_id, readings = kv
        readings = sorted(readings, key=lambda r: r["ts_ms"])
        start, end = int(window.start.micros // 1000), int(window.end.micros // 1000)
        w = Window.from_readings(asset_id, readings[0]["asset_type"], start, end, readings)
        yield asset_id, (end, readings[0]["asset_type"], len(readings), window_features(w))


def _score(kv, detector_kwargs: dict[str, Any], min_readings: int):
    asset_id, windows = kv
    det = None
    for end, asset_type, count, feats in sorted(windows, key=lambda w: w[0]):
        if count < min_readings or not feats:
            continue
        det = det or for_asset(asset_type, detector_kwargs)
        a = det.assess(feats)
        det.learn_one(feats, a)
        yield {"asset_id": asset_id, "window_end_ms": end, "anomaly_score": a.score,
               "is_anomaly": a.is_anomaly, "warming_up": a.warming_up}


class NaiveTwin(beam.PTransform):
    """``(topic, key, value, arrival_ms)`` messages -> prediction dicts."""

    def __init__(self, window_s: float, detector_kwargs: dict[str, Any] | None = None,
                 min_readings: int = 4) -> None:
        super().__init__()
        self.window_s = window_s
        self.detector_kwargs = detector_kwargs or {}
        self.min_readings = min_readings

    def expand(self, messages):
        return (
            messages
            | "Normalize" >> beam.Map(_normalize)
            | "Window" >> beam.WindowInto(FixedWindows(self.window_s))
            | "KeyByAsset" >> beam.Map(lambda r: (r["asset_id"], r))
            | "GroupPerWindow" >> beam.GroupByKey()
            | "Features" >> beam.ParDo(_Features())
            | "GlobalWindow" >> beam.WindowInto(GlobalWindows())
            | "GroupPerAsset" >> beam.GroupByKey()
            | "Score" >> beam.FlatMap(_score, self.detector_kwargs, self.min_readings)
        )

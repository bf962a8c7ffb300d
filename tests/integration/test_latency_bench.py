"""``twin bench latency`` end to end at a tiny rate: a paced stream through the twin job
on a real standalone Flink cluster and the embedded broker; every prediction is matched
to its window of readings and its latency beyond the watermark is finite and not
negative."""

from __future__ import annotations

import math

import pytest

from jobs.bench_latency import run


@pytest.mark.slow
def test_every_prediction_is_matched_and_its_latency_is_finite_and_not_negative(tmp_path):
    report = run(capacity=40.0, loads=[0.5], rate=None, assets=4, phase_s=16.0,
                 warmup_s=6.0, window_s=2.0, allowed_lateness_s=0.5,
                 out_of_orderness_s=0.5, watermark_delay_s=30.0, partitions=1,
                 out=tmp_path / "bench")
    # 4 assets at 20 msg/s: every asset's 2 s windows closed on its own data
    assert report["raw_messages"] == pytest.approx(20 * 22, abs=8)
    assert report["predictions"] >= 4 * 8
    assert report["unmatched"] == 0 and report["matched"] == report["predictions"]
    assert report["negative"] == 0 and report["beyond_min_ms"] >= 0
    assert report["readings_left_out"] == {"late": 0, "duplicate": 0}
    (phase,) = report["phases"]
    assert phase["rate"] == 20.0 and phase["load"] == 0.5
    # windows that start within the phase after its first one, the last ones left open
    # (no later data closes them): 4 or 5 of each asset's 2 s windows in 16 s
    assert phase["predictions"] >= 4 * 4
    for figures in (phase["beyond_ms"], phase["beyond_received_ms"], report["beyond_all_ms"]):
        assert all(math.isfinite(figures[k]) and figures[k] >= 0
                   for k in ("p50", "p99", "max"))
    assert phase["beyond_received_ms"]["max"] >= phase["beyond_ms"]["p50"]

"""TwinFn under Beam: windows closed by the runner's watermark, late data, state per key."""

from __future__ import annotations

import random

import apache_beam as beam
import pytest
from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.test_stream import TestStream
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.window import TimestampedValue

from pipelines.beam.twin import RunTwins
from transforms.twin import shard_of

WINDOW = 60_000
TWIN = {"window_ms": WINDOW, "allowed_lateness_ms": 0, "out_of_orderness_ms": 0,
        "min_readings": 1, "detector": {"warmup": 2}}


def reading(asset: str, ts_ms: int, flow: float = 0.05) -> dict:
    return {"reading_id": f"v:{asset}:{ts_ms}", "asset_id": asset, "asset_type": "pump",
            "vendor": "v", "ts_ms": ts_ms, "values": {"flow": flow}, "bad_quality": []}


def streaming_pipeline() -> TestPipeline:
    options = PipelineOptions()
    options.view_as(StandardOptions).streaming = True
    return TestPipeline(options=options)


def tv(r: dict) -> TimestampedValue:
    return TimestampedValue(r, r["ts_ms"] / 1000)


def test_runner_watermark_closes_quiet_window_and_later_data_is_late():
    stream = (
        TestStream()
        .add_elements([tv(reading("p1", 5_000)), tv(reading("p1", 20_000))])
        .advance_watermark_to(30)  # window [0, 60s) still open
        .add_elements([tv(reading("p1", 40_000))])
        .advance_watermark_to(61)  # passes end + lateness: timer closes the window
        .add_elements([tv(reading("p1", 50_000))])  # its window is closed: late
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        outs = p | stream | RunTwins(TWIN)
        windows = outs["features"] | "W" >> beam.Map(
            lambda f: (f["asset_id"], f["window_start_ms"], f["count"]))
        late = outs["late"] | "L" >> beam.Map(lambda r: r["ts_ms"])
        assert_that(windows, equal_to([("p1", 0, 3)]), label="windows")
        assert_that(late, equal_to([50_000]), label="late")


def test_state_is_per_asset_and_windows_in_order():
    rng = random.Random(0)
    readings = [reading(a, t * 10_000, 0.05 + rng.random() * 1e-3)
                for t in range(30) for a in ("p1", "p2")]
    stream = TestStream().add_elements([tv(r) for r in readings[:30]])
    stream = stream.advance_watermark_to(150).add_elements([tv(r) for r in readings[30:]])
    stream = stream.advance_watermark_to(400)
    stream = stream.advance_watermark_to_infinity()
    with streaming_pipeline() as p:
        outs = p | stream | RunTwins(TWIN)
        states = outs["state"] | beam.Map(lambda s: (s["asset_id"], s["windows_seen"],
                                                     s["ts_ms"]))
        # 30 readings of 10 s per asset = 5 windows each; windows_seen counts 1..5 in order
        expected = [(a, i + 1, (i + 1) * WINDOW) for a in ("p1", "p2") for i in range(5)]
        assert_that(states, equal_to(expected))


def test_bounded_batch_run_flushes_every_window():
    readings = [reading("p1", t * 10_000) for t in range(13)]  # windows 0, 1, 2 (last partial)
    with TestPipeline() as p:
        outs = p | beam.Create(readings) | RunTwins(TWIN)
        counts = outs["features"] | beam.Map(lambda f: (f["window_start_ms"], f["count"]))
        assert_that(counts, equal_to([(0, 6), (60_000, 6), (120_000, 1)]))


@pytest.mark.parametrize("shards", [0, 1, 64])
def test_end_of_input_closes_every_open_window_in_one_state_write(monkeypatch, shards):
    """When the watermark jumps past many open windows (here: the end of a bounded input,
    no window closed by data), they close in order, in one timer firing and one state
    write per shard: not one firing, state write and twin pickle per window."""
    import pipelines.beam.twin as twin_fn

    pickles = []
    reduce = twin_fn._Cached.__reduce__
    monkeypatch.setattr(twin_fn._Cached, "__reduce__",
                        lambda self: pickles.append(tuple(sorted(self.shard.twins)))
                        or reduce(self))
    # lateness of 20 windows: none of the 10 windows closes while data comes in
    twin = {**TWIN, "allowed_lateness_ms": 20 * WINDOW}
    readings = [reading(a, t * 10_000) for t in range(60) for a in ("p1", "p2")]
    with TestPipeline() as p:
        outs = p | beam.Create(readings) | RunTwins(twin, shards=shards)
        states = outs["state"] | beam.Map(lambda s: (s["asset_id"], s["windows_seen"],
                                                     s["ts_ms"]))
        assert_that(states, equal_to([(a, i + 1, (i + 1) * WINDOW)
                                      for a in ("p1", "p2") for i in range(10)]))
    # per shard: one write after the data, one after the watermark closed all ten windows
    if shards == 1:
        assert pickles == [("p1", "p2"), ("p1", "p2")]
    else:  # 0: one key per asset; 64: p1 and p2 fall in different shards
        assert shards == 0 or shard_of("p1", 64) != shard_of("p2", 64)
        assert sorted(pickles) == [("p1",), ("p1",), ("p2",), ("p2",)]


def test_a_forged_reading_in_a_stream_is_a_dead_letter_and_closes_nothing():
    """Unbounded: one reading of p1 in 2100 arrives among its genuine ones. Without the
    event-time guard it closed every open window at once and made the rest late."""
    forged = {**reading("p1", 4_102_444_800_000), "reading_id": "v:p1:forged"}
    stream = (
        TestStream()
        .add_elements([tv(reading("p1", 5_000)), tv(reading("p1", 20_000))])
        .add_elements([TimestampedValue(forged, 25)])  # arrives now, claims 2100
        .add_elements([tv(reading("p1", 40_000)), tv(reading("p1", 70_000))])
        .advance_watermark_to(200)
        .add_elements([tv(reading("p1", 130_000))])  # its window [120 s, 180 s) is open
        .advance_watermark_to_infinity()
    )
    with streaming_pipeline() as p:
        outs = p | stream | RunTwins(TWIN, shards=0)
        windows = outs["features"] | "W" >> beam.Map(
            lambda f: (f["window_start_ms"], f["count"]))
        late = outs["late"] | "L" >> beam.Map(lambda r: r["ts_ms"])
        dead = outs["dead_letter"] | "D" >> beam.Map(
            lambda d: (d["stage"], d["reason"], d["ts_ms"], d["key"]))
        assert_that(windows, equal_to([(0, 3), (60_000, 1), (120_000, 1)]), label="windows")
        assert_that(late, equal_to([]), label="late")
        assert_that(dead, equal_to([("twin", "timestamp_jump", 20_000, b"p1")]), label="dead")


def test_checkpoint_hands_over_each_twin_with_its_newest_event_time():
    import pickle

    rs = [reading("p1", t * 10_000) for t in range(5)] + [reading("p2", 7_000)]
    with TestPipeline() as p:
        outs = p | beam.Create([tv(r) for r in rs]) | RunTwins(TWIN, checkpoint=True)
        got = outs["checkpoint"] | beam.Map(
            lambda t: (t[0], pickle.loads(t[1]).asset_id, t[2]))
        assert_that(got, equal_to([("p1", "p1", 40_000), ("p2", "p2", 7_000)]))


def test_initial_twins_come_only_from_a_verified_file():
    from pipelines.beam.twin import TwinFn

    with pytest.raises(ValueError, match="initial_sha256"):
        TwinFn(TWIN, checkpoint=True, initial_path="some/state.pkl")


def test_flushing_a_twin_closes_and_scores_its_open_windows():
    """How an evicted asset leaves: what it held is scored, its last state emitted."""
    import pickle

    from pipelines.beam.twin import FlushTwins
    from transforms.twin import AssetTwin

    twin = AssetTwin("p1", "pump", **TWIN)
    for t in range(3):
        twin.add(reading("p1", 130_000 + t * 10_000))  # window [120 s, 180 s), still open
    with TestPipeline() as p:
        outs = p | beam.Create([("p1", pickle.dumps(twin))]) | FlushTwins()
        assert_that(outs["features"] | "F" >> beam.Map(
            lambda f: (f["window_start_ms"], f["count"])), equal_to([(120_000, 3)]),
            label="features")
        assert_that(outs["state"] | "S" >> beam.Map(lambda s: (s["asset_id"], s["ts_ms"])),
                    equal_to([("p1", 180_000)]), label="state")

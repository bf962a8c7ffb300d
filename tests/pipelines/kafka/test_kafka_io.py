"""The Beam Kafka source's reading logic against a real broker, outside a pipeline."""

from __future__ import annotations

import pytest
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.runners.sdf_utils import RestrictionTrackerView, ThreadsafeRestrictionTracker
from apache_beam.utils.timestamp import Timestamp
from confluent_kafka import Producer

from pipelines.beam.kafka import (
    PartitionRange,
    _ReadPartitionFn,
    _ReadPartitionUnboundedFn,
    commit_offsets,
    message_sizes,
    plan_partitions,
    plan_reads,
)
from pipelines.kafka.offsets import OffsetResetError
from pipelines.kafka.topics import ensure_topics, topic_ids

T0 = 1_795_800_000_000


def produce(bootstrap: str, n: int, topic: str = "t", start: int = 0) -> None:
    cfg = {"bootstrap.servers": bootstrap}
    ensure_topics(cfg, [topic], partitions=1)
    p = Producer(cfg)
    for i in range(start, start + n):
        p.produce(topic, key=b"a", value=b"v%d" % i, timestamp=T0 + i * 1000, partition=0)
    assert p.flush(10) == 0


def test_plan_starts_at_committed_or_given_offsets_and_ends_at_the_real_end(broker):
    cfg = {"bootstrap.servers": broker.bootstrap_servers}
    produce(broker.bootstrap_servers, 500)
    assert plan_partitions(cfg, ["t", "absent"], "g") == [PartitionRange("t", 0, 0, 500)]
    commit_offsets(cfg, "g", {"t/0": 120})
    assert plan_partitions(cfg, ["t"], "g") == [PartitionRange("t", 0, 120, 500)]
    assert plan_partitions(cfg, ["t"], "g", {"t/0": 300}) == [PartitionRange("t", 0, 300, 500)]
    assert plan_partitions(cfg, ["t"], "g", bounded=False) == [PartitionRange("t", 0, 120, None)]


def test_stored_offsets_that_do_not_fit_stop_the_plan_unless_the_user_chose(broker):
    cfg = {"bootstrap.servers": broker.bootstrap_servers}
    produce(broker.bootstrap_servers, 500)
    stored = {"t/0": 900, "gone/0": 7}  # past the end; a topic that is not there
    with pytest.raises(OffsetResetError) as err:
        plan_reads(cfg, ["t", "gone"], "g", stored, source="the state file s")
    assert [(m.partition, m.why, m.low, m.high) for m in err.value.mismatches] == [
        ("t/0", "past_end", 0, 500), ("gone/0", "gone", None, None)]
    early = plan_reads(cfg, ["t", "gone"], "g", stored, on_offset_reset="earliest")
    assert early.ranges == [PartitionRange("t", 0, 0, 500)] and early.dropped == ["gone/0"]
    assert [(r["partition"], r["start"]) for r in early.resets] == [("t/0", 0),
                                                                     ("gone/0", None)]
    late = plan_reads(cfg, ["t"], "g", stored, on_offset_reset="latest")
    assert late.ranges == [PartitionRange("t", 0, 500, 500)]  # nothing, never backwards
    # the group's committed offsets are checked the same way
    commit_offsets(cfg, "g2", {"t/0": 501})
    with pytest.raises(OffsetResetError, match="consumer group"):
        plan_reads(cfg, ["t"], "g2", source="consumer group 'g2'")


def test_a_topic_with_another_id_than_the_stored_one_was_recreated(broker):
    cfg = {"bootstrap.servers": broker.bootstrap_servers}
    produce(broker.bootstrap_servers, 50)
    ids = topic_ids(cfg, ["t", "absent"])
    assert set(ids) == {"t"}
    fine = plan_reads(cfg, ["t"], "g", {"t/0": 20}, stored_topic_ids=ids)
    assert fine.ranges == [PartitionRange("t", 0, 20, 50)] and fine.topic_ids == ids
    with pytest.raises(OffsetResetError) as err:
        plan_reads(cfg, ["t"], "g", {"t/0": 20}, stored_topic_ids={"t": "another-id"})
    assert err.value.mismatches[0].why == "recreated"


def test_message_sizes_weigh_each_message_of_a_range(broker):
    cfg = {"bootstrap.servers": broker.bootstrap_servers}
    produce(broker.bootstrap_servers, 30)  # key b"a", value b"v<i>"
    sizes = message_sizes(cfg, [PartitionRange("t", 0, 5, 25), PartitionRange("u", 0, 7, 7)])
    assert sizes == {"t/0": [(i, 1 + len(b"v%d" % i)) for i in range(5, 25)], "u/0": []}


def test_bounded_read_claims_exactly_its_range(broker):
    cfg = {"bootstrap.servers": broker.bootstrap_servers}
    produce(broker.bootstrap_servers, 300)
    fn = _ReadPartitionFn(cfg)
    tracker = OffsetRestrictionTracker(OffsetRange(100, 250))
    try:
        out = list(fn._read(PartitionRange("t", 0, 100, 250), tracker, None))
    finally:
        fn.teardown()
    msgs = [m for v in out for m in v.value]  # one list per poll
    assert [m[2] for m in msgs] == [b"v%d" % i for i in range(100, 250)]
    assert msgs[0][0] == "t/0@100" and msgs[0][3] == T0 + 100_000
    # each list is stamped with its earliest message
    assert out[0].timestamp == Timestamp.of((T0 + 100_000) / 1000)
    assert all(v.timestamp == Timestamp.of(min(m[3] for m in v.value) / 1000) for v in out)
    tracker.check_done()  # the whole range is claimed: the runner will accept it


def test_unbounded_read_defers_when_caught_up_and_advances_the_watermark(broker):
    cfg = {"bootstrap.servers": broker.bootstrap_servers}
    produce(broker.bootstrap_servers, 50)
    fn = _ReadPartitionUnboundedFn(cfg, max_out_of_orderness_ms=5_000)
    try:
        # as the runner hands it to the DoFn: a thread-safe tracker behind a view
        safe = ThreadsafeRestrictionTracker(OffsetRestrictionTracker(OffsetRange(0, 2**63 - 1)))
        wm = ManualWatermarkEstimator(None)
        out = list(fn._read(PartitionRange("t", 0, 0, None), RestrictionTrackerView(safe), wm))
        assert [m[2] for v in out for m in v.value] == [b"v%d" % i for i in range(50)]
        # caught up: the rest of the range was deferred for the runner to resume later
        residual, delay = safe.deferred_status()
        assert residual.start == 50 and delay.micros > 0
        assert safe.current_restriction().stop == 50
        # the watermark is at least the newest timestamp minus the disorder bound
        assert wm.current_watermark() >= Timestamp.of((T0 + 49_000 - 5_000) / 1000)
        # new data is read by the resumed remainder
        produce(broker.bootstrap_servers, 10, start=50)
        resumed = ThreadsafeRestrictionTracker(OffsetRestrictionTracker(residual))
        more = list(fn._read(PartitionRange("t", 0, 50, None),
                             RestrictionTrackerView(resumed), wm))
        assert [m[2] for v in more for m in v.value] == [b"v%d" % i for i in range(50, 60)]
    finally:
        fn.teardown()

"""Kafka IO for Beam in Python (confluent-kafka; no Java expansion service).

Source
------
:class:`ReadFromKafka` reads every partition of the given topics in parallel: one element
per partition, read by a splittable DoFn whose restriction is that partition's offset
range. Elements are lists (one per poll, up to ``POLL_BATCH``) of messages
``(source, key, value, arrival_ms)`` with ``source`` = ``"<topic>/<partition>@<offset>"``
(so every dead letter points back at its original message), stamped with the earliest
Kafka timestamp in the list; normalization then stamps each reading with the event time
in its payload.

- **bounded** (``stop`` offsets given, what :func:`plan_reads` computes from the end
  offsets present at start, after checking the stored start offsets against the broker):
  reads ``[start, stop)`` and finishes. This is how
  ``twin run --source kafka`` runs on the DirectRunner, which does not advance
  event-time watermarks for unbounded splittable DoFns (Beam 2.61).
- **unbounded** (``unbounded=True``): the same DoFn marked unbounded per element; when it
  has caught up it defers the rest of its range and reports a watermark (the smallest
  recent message timestamp minus the allowed disorder; idle partitions advance with the
  clock), so runners that drive watermarks (Flink, Dataflow) run it as a stream.

Offsets are never committed by the source: the job commits them after the outputs the
messages produced are written (at-least-once; outputs carry deterministic ids).

Sink
----
:class:`WriteToKafka` produces records as Confluent-framed Avro keyed by asset id, flushes
at the end of every bundle and fails the bundle if any delivery failed, so the runner
retries it: nothing is acknowledged before it is on the broker. Action messages are
signed (``twin-hmac-sha256`` header) when a key is given.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, NamedTuple

import apache_beam as beam
from apache_beam.io.restriction_trackers import OffsetRange, OffsetRestrictionTracker
from apache_beam.io.watermark_estimators import ManualWatermarkEstimator
from apache_beam.metrics import Metrics
from apache_beam.transforms.core import RestrictionProvider
from apache_beam.transforms.window import TimestampedValue
from apache_beam.utils.timestamp import Duration, Timestamp

from pipelines.kafka.broker import BrokerUnavailable
from pipelines.kafka.config import with_logger
from pipelines.kafka.offsets import (
    OffsetMismatch,
    OffsetResetError,
    PartitionRange,
    check,
    recreated_topics,
    reset_start,
)
from pipelines.kafka.outputs import encode_output
from pipelines.kafka.serde import LocalSerde

MAX_OFFSET = 2**63 - 1
POLL_BATCH = 5_000
POLL_TIMEOUT_S = 1.0
STALL_TIMEOUT_S = 30.0  # bounded reads: how long data that should be there may not come


def _consumer(config: dict[str, Any], partition_eof: bool = False):
    from confluent_kafka import Consumer

    return Consumer(with_logger({
        # a fetch at the end of a partition waits this long for more: after a reader is
        # reassigned to its next range, the fetch it had in flight costs as much
        "fetch.wait.max.ms": 100,
        **config,
        "group.id": config.get("group.id", "twinstream-reader"),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": partition_eof,
    }))


class ReadPlan(NamedTuple):
    """What a run reads (:func:`plan_reads`), and what it had to decide on the way."""

    ranges: list[PartitionRange]
    resets: list[dict[str, Any]]  # offsets that did not fit, under earliest/latest
    dropped: list[str]  # "topic/partition" whose stored offsets are gone with them
    topic_ids: dict[str, str]  # topic -> id, where the broker has topic ids


def plan_reads(
    config: dict[str, Any],
    topics: list[str],
    group_id: str,
    start_offsets: dict[str, int] | None = None,
    stored_topic_ids: dict[str, str] | None = None,
    on_offset_reset: str = "fail",
    bounded: bool = True,
    source: str = "the stored offsets",
    timeout_s: float = 15.0,
) -> ReadPlan:
    """Offset ranges to read: from ``start_offsets`` (``"topic/partition" -> offset``, e.g.
    a state file), else the group's committed offsets, else the beginning; up to the end
    offsets present now when ``bounded``.

    Every stored offset is checked against the partition's low and high watermarks and,
    with ``stored_topic_ids``, the topic's id (:mod:`pipelines.kafka.offsets`); one that
    does not fit raises :class:`~pipelines.kafka.offsets.OffsetResetError` (naming
    ``source``) under ``on_offset_reset="fail"``, else reading starts at the partition's
    start (``earliest``) or end (``latest``) and the plan says so. Topics that do not exist
    are skipped (nothing was ever produced to them); a stored partition of them is
    ``gone``, a mismatch like the others.
    """
    from confluent_kafka import KafkaException, TopicPartition

    from pipelines.kafka.topics import topic_ids

    c = _consumer({**config, "group.id": group_id}, partition_eof=True)
    try:
        try:
            metadata = c.list_topics(timeout=timeout_s)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {config.get('bootstrap.servers')} "
                f"({exc.args[0].str()}); is the broker running? (`twin broker start` "
                "starts one)") from exc
        tps = [TopicPartition(t, p) for t in topics if t in metadata.topics
               for p in sorted(metadata.topics[t].partitions)]
        committed = {(tp.topic, tp.partition): tp.offset
                     for tp in (c.committed(tps, timeout=timeout_s) if tps else [])}
        ends = end_offsets(c, tps, timeout_s)  # (the reported high watermark may be short)
        stored = dict(start_offsets or {})
        ids = topic_ids(config, [t for t in topics if t in metadata.topics], timeout_s)
        recreated = recreated_topics(
            {t: i for t, i in (stored_topic_ids or {}).items() if t in topics}, ids)
        planned: list[tuple[TopicPartition, int, int | None]] = []
        mismatches: list[OffsetMismatch] = []
        for tp in tps:
            key = f"{tp.topic}/{tp.partition}"
            low, high = c.get_watermark_offsets(tp, timeout=timeout_s)
            high = max(high, ends[(tp.topic, tp.partition)])
            start = stored.pop(key, None)
            if start is None:
                start = committed.get((tp.topic, tp.partition), -1001)
            if start < 0:  # nothing stored or committed: the beginning
                planned.append((tp, low, high))
                continue
            wrong = check(key, start, low, high, tp.topic in recreated)
            if wrong is not None:
                mismatches.append(wrong)
            planned.append((tp, start, high))
        topic_set = set(topics)
        for key, start in stored.items():  # stored partitions the broker does not have
            if key.rpartition("/")[0] in topic_set:
                mismatches.append(check(key, start, None, None))
        if mismatches and on_offset_reset == "fail":
            raise OffsetResetError(mismatches, source)
        starts = {m.partition: reset_start(m, on_offset_reset) for m in mismatches}
        ranges = []
        for tp, start, high in planned:
            start = starts.get(f"{tp.topic}/{tp.partition}", start)
            ranges.append(PartitionRange(tp.topic, tp.partition, start,
                                         max(high, start) if bounded else None))
        return ReadPlan(ranges, [m.as_record(on_offset_reset, starts[m.partition])
                                 for m in mismatches],
                        [m.partition for m in mismatches if starts[m.partition] is None], ids)
    finally:
        c.close()


def plan_partitions(
    config: dict[str, Any],
    topics: list[str],
    group_id: str,
    start_offsets: dict[str, int] | None = None,
    bounded: bool = True,
    timeout_s: float = 15.0,
) -> list[PartitionRange]:
    """The ranges of :func:`plan_reads` where offsets that do not fit start at the
    partition's beginning (for callers that only need the end offsets, such as the Flink
    job, whose source starts where its group stopped)."""
    return plan_reads(config, topics, group_id, start_offsets, on_offset_reset="earliest",
                      bounded=bounded, timeout_s=timeout_s).ranges


def end_offsets(consumer, tps, timeout_s: float = 15.0, probe_s: float = 5.0
                ) -> dict[tuple[str, int], int]:
    """The offset after the last message of each partition, as it stands now.

    The broker's high watermark, confirmed by reading past it: some Kafka-compatible
    brokers (Tansu 0.x) report the start of the last record batch rather than its end, so
    the tail beyond the reported watermark is read (for at most ``probe_s`` seconds; on
    Kafka itself that tail is empty). A consumer with ``enable.partition.eof`` is done
    when every partition reported its end; any other once two polls came back empty.
    """
    from confluent_kafka import KafkaError, TopicPartition

    ends = {}
    for tp in tps:
        _, high = consumer.get_watermark_offsets(tp, timeout=timeout_s)
        ends[(tp.topic, tp.partition)] = high
    consumer.assign([TopicPartition(t, p, max(h - 1, 0)) for (t, p), h in ends.items()])
    deadline = time.monotonic() + probe_s
    idle = 0
    at_end: set[tuple[str, int]] = set()
    try:
        while idle < 2 and len(at_end) < len(ends) and time.monotonic() < deadline:
            batch = consumer.consume(POLL_BATCH, timeout=0.3)
            idle = 0 if batch else idle + 1
            for m in batch:
                key = (m.topic(), m.partition())
                if key not in ends:
                    continue
                if m.error() is None:
                    ends[key] = max(ends[key], m.offset() + 1)
                elif m.error().code() == KafkaError._PARTITION_EOF:
                    ends[key] = max(ends[key], m.offset())
                    at_end.add(key)
    finally:
        consumer.unassign()
    return ends


def message_sizes(config: dict[str, Any], ranges: list[PartitionRange],
                  stall_s: float = STALL_TIMEOUT_S) -> dict[str, list[tuple[int, int]]]:
    """``(offset, bytes of key and value)`` of every message in each bounded range, read
    and dropped (to cut a slice by weight: :func:`pipelines.kafka.offsets.trim`)."""
    from confluent_kafka import TopicPartition

    c = _consumer({"queued.min.messages": 2 * POLL_BATCH, "queued.max.messages.kbytes": 8192,
                   **config})
    out: dict[str, list[tuple[int, int]]] = {}
    try:
        for r in ranges:
            sizes = out[r.key] = []
            if r.stop is None or r.stop <= r.start:
                continue
            tp = TopicPartition(r.topic, r.partition)
            c.assign([TopicPartition(r.topic, r.partition, r.start)])
            nxt, since = r.start, time.monotonic()
            while nxt < r.stop:
                batch = [m for m in c.consume(max(1, min(POLL_BATCH, r.stop - nxt)),
                                              timeout=POLL_TIMEOUT_S)
                         if m.error() is None and m.topic() == r.topic
                         and m.partition() == r.partition]
                for m in batch:
                    if m.offset() >= r.stop:
                        break
                    sizes.append((m.offset(), len(m.value() or b"") + len(m.key() or b"")))
                    nxt = m.offset() + 1
                if batch:
                    since = time.monotonic()
                    continue
                nxt = max(nxt, c.position([tp])[0].offset)  # past control records
                if time.monotonic() - since > stall_s and nxt < r.stop:
                    raise BrokerUnavailable(
                        f"no progress reading {r.key} at offset {nxt} of {r.stop} for "
                        f"{stall_s:.0f} s (broker down, restarted without its data, or "
                        "retention removed it)")
            c.unassign()
    finally:
        c.close()
    return out


def commit_offsets(config: dict[str, Any], group_id: str, offsets: dict[str, int],
                   timeout_s: float = 15.0) -> None:
    """Commit ``"topic/partition" -> next offset`` for ``group_id`` (after outputs are safe)."""
    from confluent_kafka import TopicPartition

    if not offsets:
        return
    c = _consumer({**config, "group.id": group_id})
    try:
        tps = []
        for key, offset in offsets.items():
            topic, _, partition = key.rpartition("/")
            tps.append(TopicPartition(topic, int(partition), int(offset)))
        c.commit(offsets=tps, asynchronous=False)
    finally:
        c.close()


class _PartitionRestrictions(RestrictionProvider):
    def initial_restriction(self, element: PartitionRange) -> OffsetRange:
        stop = MAX_OFFSET if element.stop is None else element.stop
        return OffsetRange(element.start, max(stop, element.start))

    def create_tracker(self, restriction: OffsetRange) -> OffsetRestrictionTracker:
        return OffsetRestrictionTracker(restriction)

    def restriction_size(self, element, restriction: OffsetRange) -> int:
        return restriction.size()

    def split(self, element, restriction):  # a partition is read in order by one reader
        yield restriction


def _advance(estimator, ts: Timestamp) -> None:
    """Move a manual watermark estimator forward (never back)."""
    current = estimator.current_watermark()
    if current is None or ts > current:
        estimator.set_watermark(ts)


_RESTRICTIONS = _PartitionRestrictions()
_WATERMARKS = ManualWatermarkEstimator.default_provider()


class _ReadPartitionFn(beam.DoFn):
    """Read one partition's offset range; see the module doc."""

    def __init__(self, config: dict[str, Any], max_out_of_orderness_ms: int = 20_000) -> None:
        self.config = config
        self.max_out_of_orderness_ms = max_out_of_orderness_ms
        self.read = Metrics.counter("twin.kafka", "messages_read")
        self._consumer = None

    def setup(self) -> None:
        # librdkafka fetches ahead of what is consumed, by default up to 100,000 messages
        # or 64 MB per partition: past the end of a bounded range that is memory spent
        # on messages the next slice reads again; a few polls' worth keeps it busy
        self._consumer = _consumer({"queued.min.messages": 2 * POLL_BATCH,
                                    "queued.max.messages.kbytes": 8192, **self.config})

    def teardown(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def _read(self, element: PartitionRange, tracker, watermark) -> Iterator[Any]:
        from confluent_kafka import TopicPartition

        if self._consumer is None:
            self.setup()
        restriction = tracker.current_restriction()
        if restriction.start >= restriction.stop:
            return
        self._consumer.assign([TopicPartition(element.topic, element.partition,
                                              restriction.start)])
        last: int | None = None
        stalled_since: float | None = None
        tp = TopicPartition(element.topic, element.partition)
        try:
            while True:
                # a bounded range asks for no more than it lacks: consume returns once it
                # has that many, rather than waiting out its timeout for a full batch
                want = POLL_BATCH
                if element.stop is not None:
                    nxt = restriction.start if last is None else last + 1
                    want = max(1, min(POLL_BATCH, restriction.stop - nxt))
                batch = self._consumer.consume(want, timeout=POLL_TIMEOUT_S)
                for m in batch:
                    if m.error() is not None and m.error().fatal():
                        raise BrokerUnavailable(f"Kafka error on {element.topic}/"
                                                f"{element.partition}: {m.error()}")
                # only this partition: a reused consumer may still hold prefetched
                # messages of the partition it read before
                messages = [m for m in batch if m.error() is None
                            and m.partition() == element.partition
                            and m.topic() == element.topic]
                if not messages:
                    if element.stop is None:  # caught up: come back later
                        if watermark is not None:
                            now = Timestamp.of(time.time())
                            idle_wm = now - Duration(micros=self.max_out_of_orderness_ms * 1000)
                            _advance(watermark, idle_wm)
                        tracker.defer_remainder(Duration(seconds=1))
                        return
                    if last is not None and last >= restriction.stop - 1:
                        return
                    position = self._consumer.position([tp])[0].offset
                    if position >= restriction.stop:  # the rest were control records
                        tracker.try_claim(restriction.stop - 1)
                        return
                    stalled_since = stalled_since or time.monotonic()
                    if time.monotonic() - stalled_since > STALL_TIMEOUT_S:
                        raise BrokerUnavailable(
                            f"no progress reading {element.topic}/{element.partition} at "
                            f"offset {position} of {restriction.stop} for "
                            f"{STALL_TIMEOUT_S:.0f} s (broker down, restarted without its "
                            f"data, or retention removed it)")
                    continue
                stalled_since = None
                out: list[tuple[str, bytes | None, bytes, int]] = []
                claimed_all = True
                for m in messages:
                    if not tracker.try_claim(m.offset()):
                        claimed_all = False
                        break
                    last = m.offset()
                    ts_ms = m.timestamp()[1]
                    out.append((f"{m.topic()}/{m.partition()}@{m.offset()}", m.key(),
                                m.value(), ts_ms))
                if out:  # one element per poll: the pipeline normalizes it as columns
                    self.read.inc(len(out))
                    first = min(o[3] for o in out)
                    if watermark is not None:
                        _advance(watermark, Timestamp(
                            micros=(max(o[3] for o in out) - self.max_out_of_orderness_ms)
                            * 1000))
                    yield TimestampedValue(out, first / 1000.0)
                if not claimed_all:
                    return
                if element.stop is not None and last is not None and last >= restriction.stop - 1:
                    return  # the whole range is claimed
        finally:
            self._consumer.unassign()

    def process(
        self,
        element: PartitionRange,
        tracker=beam.DoFn.RestrictionParam(_RESTRICTIONS),
    ):
        yield from self._read(element, tracker, None)


class _ReadPartitionUnboundedFn(_ReadPartitionFn):
    @beam.DoFn.unbounded_per_element()
    def process(
        self,
        element: PartitionRange,
        tracker=beam.DoFn.RestrictionParam(_RESTRICTIONS),
        watermark=beam.DoFn.WatermarkEstimatorParam(_WATERMARKS),
    ):
        yield from self._read(element, tracker, watermark)


class ReadFromKafka(beam.PTransform):
    """Kafka partitions -> ``(source, key, value, arrival_ms)``, partitions read in parallel.

    Parameters
    ----------
    config
        librdkafka settings (``bootstrap.servers``, TLS/SASL, ...).
    partitions
        What to read, from :func:`plan_reads` (or a slice of it).
    unbounded
        Keep reading (for runners that drive watermarks); ranges' ``stop`` must be None.
    """

    def __init__(self, config: dict[str, Any], partitions: list[PartitionRange],
                 unbounded: bool = False, max_out_of_orderness_ms: int = 20_000) -> None:
        super().__init__()
        if unbounded and any(p.stop is not None for p in partitions):
            raise ValueError("unbounded reads take ranges without stop offsets")
        self.config = config
        self.partitions = list(partitions)
        self.unbounded = unbounded
        self.max_out_of_orderness_ms = max_out_of_orderness_ms

    def expand(self, pbegin):
        fn_cls = _ReadPartitionUnboundedFn if self.unbounded else _ReadPartitionFn
        return (
            pbegin
            | "Partitions" >> beam.Create(self.partitions)
            | "Spread" >> beam.Reshuffle()
            | "Read" >> beam.ParDo(fn_cls(self.config, self.max_out_of_orderness_ms))
        )


class _ProduceFn(beam.DoFn):
    def __init__(self, config: dict[str, Any], topic: str, schema: str,
                 secret: bytes | None = None, max_value_bytes: int = 900_000,
                 serde=None) -> None:
        self.config = config
        self.serde = serde
        self.topic = topic
        self.schema = schema
        self.secret = secret
        self.max_value_bytes = max_value_bytes
        self.written = Metrics.counter("twin.kafka", f"written:{topic}")
        self._producer = None
        self._errors: list[str] = []

    def setup(self) -> None:
        from confluent_kafka import Producer

        self._producer = Producer(with_logger({"linger.ms": 20, "acks": "all",
                                               "enable.idempotence": False, **self.config}))
        self._serde = self.serde or LocalSerde()

    def _delivered(self, err, _msg) -> None:
        if err is not None:
            self._errors.append(str(err))

    def process(self, record: dict[str, Any]):
        key, value, headers = encode_output(self.topic, self.schema, record, self._serde,
                                            self.secret, self.max_value_bytes)
        ts = record.get("ts_ms", record.get("window_end_ms"))
        while True:
            try:
                self._producer.produce(self.topic, value=value, key=key, headers=headers,
                                       timestamp=int(ts) if ts is not None else 0,
                                       on_delivery=self._delivered)
                break
            except BufferError:
                self._producer.poll(0.1)
        self._producer.poll(0)
        self.written.inc()
        yield from ()  # a sink: nothing downstream

    def finish_bundle(self) -> None:
        left = self._producer.flush(60)
        if left or self._errors:
            errors, self._errors = self._errors, []
            raise BrokerUnavailable(
                f"{left} messages to {self.topic} undelivered, {len(errors)} failed "
                f"({'; '.join(errors[:3])}); the bundle will be retried")

    def teardown(self) -> None:
        if self._producer is not None:
            self._producer.flush(10)


class WriteToKafka(beam.PTransform):
    """Records of ``schema`` -> ``topic`` as Confluent-framed Avro, keyed by ``asset_id``
    (:func:`pipelines.kafka.outputs.encode_output`, shared with the Flink binding)."""

    def __init__(self, config: dict[str, Any], topic: str, schema: str,
                 secret: bytes | None = None, serde=None) -> None:
        """``serde``: a :class:`~pipelines.kafka.serde.RegistrySerde` to frame with a schema
        registry's ids (default: the repo's local ids)."""
        super().__init__()
        self.config = config
        self.topic = topic
        self.schema = schema
        self.secret = secret
        self.serde = serde

    def expand(self, records):
        return records | "Produce" >> beam.ParDo(
            _ProduceFn(self.config, self.topic, self.schema, self.secret, serde=self.serde))

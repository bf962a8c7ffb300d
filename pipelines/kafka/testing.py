"""Publishing raw messages to a broker and reading the twin's topics back, whole.

For the tests and the benches that drive ``twin run --source kafka`` against a real broker
(the embedded one) and check what landed: :func:`publish` writes messages the way a plant
would (keyed by asset, Kafka timestamp = arrival time), :func:`read_topic` reads a topic
from its first offset until it is idle and at least to the end it had when called, and
:func:`output_records` decodes every copy of the twin's output records (copies are how
at-least-once shows: a run killed after publishing a slice's outputs but before committing
it publishes them again).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from confluent_kafka import Consumer, Message, Producer, TopicPartition

from pipelines.kafka.serde import LocalSerde
from pipelines.kafka.topics import OUTPUT_TOPICS, ensure_topics, raw_topics

# The deterministic id of each output record: a copy of a record has the same id.
ID_FIELDS = {"prediction": "prediction_id", "action": "action_id"}
# Raw messages up to the raw topics' limit (oversize ones are part of the tests).
MAX_MESSAGE_BYTES = 4_000_000


def publish(bootstrap: str, messages: Iterable[Any], partitions: int = 2,
            flush_s: float = 60.0, producer: dict[str, Any] | None = None) -> int:
    """Produce ``messages`` (anything with ``topic``, ``key``, ``value``, ``arrival_ms``,
    like the simulator's) to their topics (the raw topics are created with ``partitions``
    partitions if missing), in order; returns how many. A message whose ``value`` is
    ``None`` is a tombstone. ``producer``: more librdkafka settings (e.g. larger batches
    for a big backlog). Raises ``RuntimeError`` if the broker did not take them all."""
    cfg = {"bootstrap.servers": bootstrap}
    ensure_topics(cfg, raw_topics(), partitions=partitions)
    p = Producer({**cfg, "linger.ms": 10, "message.max.bytes": MAX_MESSAGE_BYTES,
                  **(producer or {})})
    n = 0
    for m in messages:
        while True:
            try:
                p.produce(m.topic, key=m.key, value=m.value, timestamp=m.arrival_ms)
                break
            except BufferError:
                p.poll(0.1)
        n += 1
        if n % 5000 == 0:
            p.poll(0)
    left = p.flush(flush_s)
    if left:
        raise RuntimeError(f"the broker at {bootstrap} did not take {left} of {n} messages")
    return n


def read_topic(bootstrap: str, topic: str, idle_s: float = 1.5,
               wait_s: float = 30.0) -> list[Message]:
    """Every message of ``topic`` (partition by partition in offset order): read until
    nothing new arrived for ``idle_s`` seconds and, in any case, up to the end offsets the
    topic had when called (waiting up to ``wait_s`` for those). A topic that does not exist
    has no messages."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "twin-reader",
                  "enable.auto.commit": False, "fetch.message.max.bytes": 2 * MAX_MESSAGE_BYTES})
    try:
        md = c.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            return []
        ends = {p: c.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
                for p in md.partitions}
        c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
        out: list[Message] = []
        reached = {p: end <= 0 for p, end in ends.items()}
        last = time.monotonic()
        while True:
            batch = [m for m in c.consume(5000, timeout=0.3) if m.error() is None]
            now = time.monotonic()
            if batch:
                last = now
            for m in batch:
                out.append(m)
                if m.offset() + 1 >= ends.get(m.partition(), 0):
                    reached[m.partition()] = True
            if now - last >= idle_s and (all(reached.values()) or now - last >= wait_s):
                break
        out.sort(key=lambda m: (m.partition(), m.offset()))
        return out
    finally:
        c.close()


def output_records(bootstrap: str, tag: str) -> list[dict[str, Any]]:
    """Every record of output ``tag`` (``prediction``, ``action``, ``state``,
    ``dead_letter``) on the broker, copies included, in topic order."""
    topic, schema = OUTPUT_TOPICS[tag]
    serde, records = LocalSerde(), []
    for m in read_topic(bootstrap, topic):
        name, record = serde.decode(m.value(), max_bytes=2 * MAX_MESSAGE_BYTES)
        if name != schema:
            raise ValueError(f"{topic} holds a {name} record, not {schema}")
        records.append(record)
    return records


def decoded(bootstrap: str, tag: str) -> dict[str, dict[str, Any]]:
    """Output records of ``tag`` (``prediction`` or ``action``) on the broker, one per
    deterministic id (the last copy)."""
    return {r[ID_FIELDS[tag]]: r for r in output_records(bootstrap, tag)}

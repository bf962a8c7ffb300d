"""Publishing a fleet, running `twin run --source kafka` and reading what landed on the
broker, for the Kafka tests."""

from __future__ import annotations

import json
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from pipelines.kafka.serde import LocalSerde
from pipelines.kafka.topics import OUTPUT_TOPICS, ensure_topics, raw_topics
from transforms.simulator import Fleet, FleetConfig

START_MS = 1_795_800_000_000


def fleet(hours: float = 2.0, assets: int = 3, start_ms: int = START_MS,
          malformed_rate: float = 0.02) -> Fleet:
    return Fleet(FleetConfig(assets=assets, duration_s=hours * 3600, seed=4, start_ms=start_ms,
                             malformed_rate=malformed_rate))


def publish(bootstrap: str, messages) -> int:
    """Produce ``messages`` (the simulator's) to their raw topics (2 partitions each)."""
    cfg = {"bootstrap.servers": bootstrap}
    ensure_topics(cfg, raw_topics(), partitions=2)
    p = Producer({**cfg, "linger.ms": 10, "message.max.bytes": 4_000_000})  # oversize tests
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
    assert p.flush(30) == 0
    return n


def read_topic(bootstrap: str, topic: str, idle_s: float = 1.5) -> list:
    """Every message of ``topic`` (partition by partition in offset order), once nothing new
    arrived for ``idle_s`` seconds."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": "test-reader",
                  "enable.auto.commit": False})
    md = c.list_topics(topic, timeout=10).topics[topic]
    c.assign([TopicPartition(topic, p, 0) for p in md.partitions])
    out, idle = [], 0
    while idle < max(1, int(idle_s / 0.3)):
        batch = [m for m in c.consume(5000, timeout=0.3) if m.error() is None]
        idle = 0 if batch else idle + 1
        out.extend(batch)
    c.close()
    return out


ID_FIELDS = {"prediction": "prediction_id", "action": "action_id"}


def decoded(bootstrap: str, tag: str) -> dict[str, dict]:
    """Output records of ``tag`` on the broker, deduplicated by their deterministic id."""
    topic, schema = OUTPUT_TOPICS[tag]
    serde, records = LocalSerde(), {}
    for m in read_topic(bootstrap, topic):
        name, record = serde.decode(m.value())
        assert name == schema
        records[record[ID_FIELDS[tag]]] = record
    return records


def run_args(bootstrap: str, out: Path, *extra: str) -> list[str]:
    """`twin run --source kafka` into ``out``, signed with ``out.parent / "hmac.key"``."""
    return ["run", "--source", "kafka", "--bootstrap-servers", bootstrap, "--out", str(out),
            "--no-progress", "--hmac-key-file", str(out.parent / "hmac.key"), *extra]


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())

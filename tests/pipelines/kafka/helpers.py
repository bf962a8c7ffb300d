"""Reading what landed on the broker, for the Kafka tests."""

from __future__ import annotations

from confluent_kafka import Consumer, TopicPartition


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

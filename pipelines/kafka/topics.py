"""Topic names and creation.

Raw vendor streams are ``twin.raw.<vendor>``, keyed by asset id; the twin writes to the
output topics below, keyed by asset id, values in Confluent-framed Avro.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

RAW_PREFIX = "twin.raw."
# pipeline output tag -> (topic, schema)
OUTPUT_TOPICS: dict[str, tuple[str, str]] = {
    "prediction": ("twin.predictions", "twin/prediction.v1"),
    "action": ("twin.actions", "twin/action.v1"),
    "state": ("twin.state", "twin/state.v1"),
    "dead_letter": ("twin.deadletter", "twin/deadletter.v1"),
}
DEFAULT_PARTITIONS = 3
# Raw topics accept messages up to 4 MiB (Kafka's default is 1 MiB): a vendor payload that
# is too large must reach the twin and become an ``oversize_payload`` dead letter (with its
# bytes), not be refused by the broker where nobody sees it.
RAW_TOPIC_CONFIG = {"max.message.bytes": str(4 << 20)}


def raw_topic(vendor: str) -> str:
    return f"{RAW_PREFIX}{vendor}"


def raw_topics() -> list[str]:
    from transforms.normalize import VENDORS

    return [raw_topic(v) for v in VENDORS]


def ensure_topics(config: dict[str, Any], topics: Iterable[str],
                  partitions: int = DEFAULT_PARTITIONS, timeout_s: float = 15.0) -> None:
    """Create the topics that do not exist yet (existing ones are left as they are).

    Replication follows the cluster's ``default.replication.factor``; raw topics get
    :data:`RAW_TOPIC_CONFIG`.
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import AdminClient, NewTopic

    from pipelines.kafka.broker import BrokerUnavailable
    from pipelines.kafka.config import with_logger

    admin = AdminClient(with_logger(config))
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"cannot reach Kafka at {config.get('bootstrap.servers')} "
                f"({exc.args[0].str()}); is the broker running? (`twin broker start` "
                "starts one)") from exc
    new = [NewTopic(t, num_partitions=partitions, replication_factor=-1,
                    config=dict(RAW_TOPIC_CONFIG) if t.startswith(RAW_PREFIX) else {})
           for t in dict.fromkeys(topics) if t not in existing]
    if not new:
        return
    for future in admin.create_topics(new, request_timeout=timeout_s).values():
        try:
            future.result()
        except KafkaException as exc:
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise


def topic_ids(config: dict[str, Any], topics: Iterable[str], timeout_s: float = 15.0
              ) -> dict[str, str]:
    """Each existing topic's id (a UUID, base64 as Kafka prints it): a topic deleted and
    recreated under the same name gets a new one. Empty where the broker has no topic ids
    (Kafka before 2.8) or cannot say; topics that do not exist are left out."""
    from confluent_kafka import KafkaException, TopicCollection
    from confluent_kafka.admin import AdminClient

    from pipelines.kafka.config import with_logger

    names = list(dict.fromkeys(topics))
    if not names:
        return {}
    admin = AdminClient(with_logger(config))
    out: dict[str, str] = {}
    try:
        futures = admin.describe_topics(TopicCollection(names), request_timeout=timeout_s)
    except (KafkaException, ValueError, TypeError, NotImplementedError):
        return {}
    for name, future in futures.items():
        try:
            topic_id = future.result().topic_id
        except KafkaException:
            continue  # e.g. the topic does not exist
        if topic_id is not None:
            out[name] = str(topic_id)
    return out

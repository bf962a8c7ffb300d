"""Example: act on the twin's output in your own service. Copy this file and edit ``handle``.

Run it::

    python -m jobs.example_consumer --bootstrap-servers 127.0.0.1:9092 [--predictions]
        [--group my-service] [--max N] [--timeout S] [--hmac-key-file FILE] [-X key=value]

It needs only ``confluent-kafka``, ``fastavro`` and the schema files
``schemas/avro/twin/action.v1.avsc`` and ``prediction.v1.avsc`` (``--schema-dir``), so it
can live outside this repo. What it does, and why:

Consumer group
    It subscribes as group ``--group``: start several copies with the same group and Kafka
    shares the partitions among them; a new group starts at the oldest retained message
    (``auto.offset.reset=earliest``), so nothing written before the first start is missed.

Decoding
    Values are Confluent wire format: byte 0, a 4-byte big-endian schema id, then the
    Avro body (no schema inside). Without a schema registry twinstream's ids are
    ``crc32("twin/action.v1") & 0x7fffffff`` and so on (:func:`local_id`); the id is
    checked, so a message of another schema is reported instead of misread. If your
    twin runs with ``--schema-registry-url``, replace :class:`Decoder` by
    ``confluent_kafka.schema_registry.avro.AvroDeserializer``.

At-least-once, deduplicated
    Offsets are committed only after ``handle`` returned for the message (never before),
    so a crash or a Ctrl-C never loses an action; it may deliver one again. The twin is
    at-least-once too (a retried bundle re-sends its records). Every record has a
    deterministic id (``action_id``, ``prediction_id``): the last ``--dedup-capacity``
    ids are remembered so a duplicate is skipped. Memory is bounded, so across restarts
    make ``handle`` idempotent as well (e.g. a unique key on ``action_id`` in your DB).

Failures
    A message that cannot be decoded (or an action whose signature is wrong, with
    ``--hmac-key-file``) is reported on stderr and skipped; it must not block the stream
    (in production send it to your own dead-letter store). If ``handle`` raises, the
    consumer stops *without* committing that message, so it comes again on restart.

Signed commands
    ``SETPOINT`` actions change how machines run. The twin signs every action (HMAC-SHA256
    over topic, key and value, header ``twin-hmac-sha256``); with ``--hmac-key-file``
    unsigned or forged actions are rejected before ``handle`` sees them.

Stopping
    Ctrl-C (or SIGTERM) finishes the current message, commits, and leaves the group.

Against the embedded broker (``twin broker start``) a group takes about half its
``session.timeout.ms`` to form (23 s with the default 45 s): pass
``-X session.timeout.ms=6000`` to start in about 3 s.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import io
import json
import logging
import os
import signal
import struct
import sys
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastavro
from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

DEFAULT_SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas" / "avro" / "twin"
# topic -> (schema name, the record's deterministic id field)
TOPICS: dict[str, tuple[str, str]] = {
    "twin.actions": ("twin/action.v1", "action_id"),
    "twin.predictions": ("twin/prediction.v1", "prediction_id"),
}
SIGNATURE_HEADER = "twin-hmac-sha256"
HEADER = struct.Struct(">bI")  # magic byte 0, schema id
CONNECT_TIMEOUT_S = 10.0
# librdkafka's own log (it repeats "connection refused" many times a second while a broker
# is away); shown with -v, else only the errors this consumer reports itself.
KAFKA_LOG = logging.getLogger("example_consumer.kafka")


# -- handle: your code goes here -------------------------------------------------------------

def handle(topic: str, record: dict[str, Any]) -> None:
    """Do something with one new record. Called once per distinct ``action_id`` /
    ``prediction_id`` (per process; see the module docstring about restarts).

    Replace the print with your code: open a work order, page someone, forward a
    ``SETPOINT`` (unless ``record["dry_run"]``) to the asset's gateway, store it...
    Raising stops the consumer without committing this message.
    """
    if topic == "twin.actions":
        line = (f"ACTION {record['kind']} {record['severity']} {record['asset_id']}: "
                f"{record['reason']}")
        if record.get("setpoint_name"):
            line += (f" ({record['setpoint_name']} {record['setpoint_previous']} -> "
                     f"{record['setpoint_value']}{', dry run' if record['dry_run'] else ''})")
    else:
        line = (f"PREDICTION {record['asset_id']} score={record['anomaly_score']:.3f} "
                f"health={record['health_index']:.2f} anomaly={record['is_anomaly']}")
    print(f"{line}  [{_id_of(topic, record)}]", flush=True)


# -- decoding --------------------------------------------------------------------------------

def local_id(name: str) -> int:
    """twinstream's schema id for ``name`` (e.g. ``twin/action.v1``) without a registry."""
    return zlib.crc32(name.encode()) & 0x7FFFFFFF


class Undecodable(ValueError):
    """A message this consumer cannot read."""


class Decoder:
    """Confluent-framed Avro of the twin's schemas, read with fastavro."""

    def __init__(self, schema_dir: str | Path = DEFAULT_SCHEMA_DIR) -> None:
        self.by_id: dict[int, tuple[str, Any]] = {}
        for name, _ in TOPICS.values():
            path = Path(schema_dir) / f"{name.split('/', 1)[1]}.avsc"
            schema = fastavro.parse_schema(json.loads(path.read_text()))
            self.by_id[local_id(name)] = (name, schema)

    def decode(self, value: bytes | None) -> tuple[str, dict[str, Any]]:
        if not value or len(value) < HEADER.size:
            raise Undecodable(f"{len(value or b'')} bytes: too short for the wire format")
        magic, schema_id = HEADER.unpack_from(value)
        if magic != 0:
            raise Undecodable(f"magic byte {magic}, expected 0: not Confluent wire format")
        if schema_id not in self.by_id:
            raise Undecodable(f"schema id {schema_id} is not one of {sorted(self.by_id)}")
        name, schema = self.by_id[schema_id]
        buf = io.BytesIO(value)
        buf.seek(HEADER.size)
        try:
            record = fastavro.schemaless_reader(buf, schema, None)
        except Exception as exc:  # corrupt body
            raise Undecodable(f"{name}: {type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(value):
            raise Undecodable(f"{name}: {len(value) - buf.tell()} bytes after the record")
        return name, record


# -- signatures (the same computation as transforms/signing.py) ------------------------------

def signature_ok(secret: bytes, topic: str, key: bytes | None, value: bytes, headers) -> bool:
    sig = next((v for k, v in headers or () if k == SIGNATURE_HEADER), None)
    if not sig:
        return False
    key = key or b""
    message = b"%s\0%d\0%s%s" % (topic.encode(), len(key), key, value)
    expected = hmac.new(secret, message, hashlib.sha256).hexdigest().encode()
    return hmac.compare_digest(expected, sig if isinstance(sig, bytes) else sig.encode())


# -- deduplication ---------------------------------------------------------------------------

class RecentIds:
    """The last ``capacity`` ids seen (LRU): bounded memory, however long it runs."""

    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, record_id: str) -> bool:
        """True if ``record_id`` is new (and remember it), False for a duplicate."""
        if record_id in self._ids:
            self._ids.move_to_end(record_id)
            return False
        self._ids[record_id] = None
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)
        return True

    def __len__(self) -> int:
        return len(self._ids)


def _id_of(topic: str, record: dict[str, Any]) -> str:
    return record[TOPICS[topic][1]]


# -- the loop --------------------------------------------------------------------------------

class Stop:
    """Set by Ctrl-C / SIGTERM: the loop finishes the message in hand, commits and exits."""

    def __init__(self) -> None:
        self.requested = False
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Stop:
        if _in_main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._request)
        return self

    def _request(self, *_: Any) -> None:
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def consume(config: dict[str, Any], topics: list[str], *, decoder: Decoder,
            secret: bytes | None = None, max_records: int | None = None,
            timeout_s: float | None = None, dedup_capacity: int = 100_000,
            handler: Callable[[str, dict[str, Any]], None] = handle,
            log: Callable[[str], None] = lambda s: print(s, file=sys.stderr, flush=True),
            ) -> dict[str, int]:
    """Run until ``max_records`` handled, ``timeout_s`` idle (after joining), or a signal.

    Returns counts: ``handled``, ``duplicates``, ``undecodable``, ``rejected``.
    """
    counts = {"handled": 0, "duplicates": 0, "undecodable": 0, "rejected": 0}
    seen = RecentIds(dedup_capacity)
    consumer = Consumer({"enable.auto.commit": False, "auto.offset.reset": "earliest",
                         "logger": KAFKA_LOG, **config})
    try:
        present = consumer.list_topics(timeout=CONNECT_TIMEOUT_S).topics
    except KafkaException as exc:
        consumer.close()
        raise ConnectionError(f"cannot reach Kafka at {config.get('bootstrap.servers')}: "
                              f"{exc.args[0].str()}") from exc
    for t in topics:
        if t not in present:
            log(f"topic {t} does not exist yet; it is read once it is created")
    joined: list[float] = []

    def on_assign(_consumer, partitions) -> None:
        if not joined:
            log(f"joined group {config['group.id']}: {len(partitions)} partition(s)")
            joined.append(time.monotonic())

    consumer.subscribe(topics, on_assign=on_assign)
    last = None
    try:
        with Stop() as stop:
            while not stop.requested:
                if max_records is not None and counts["handled"] >= max_records:
                    break
                messages = consumer.consume(num_messages=100, timeout=0.5)
                if not messages:
                    last = last or (joined[0] if joined else None)
                    if timeout_s is not None and last and time.monotonic() - last >= timeout_s:
                        break
                    continue
                last = time.monotonic()
                done: dict[tuple[str, int], int] = {}  # handled: (topic, partition) -> next
                try:
                    for msg in messages:
                        if stop.requested or (max_records is not None
                                              and counts["handled"] >= max_records):
                            break  # the rest stays uncommitted: read again next time
                        if msg.error() is not None:
                            if msg.error().code() != KafkaError._PARTITION_EOF:
                                log(f"kafka: {msg.error().str()}")
                            continue
                        _process(msg, decoder, secret, seen, counts, handler, log)
                        done[(msg.topic(), msg.partition())] = msg.offset() + 1
                finally:  # commit what was handled, also when handler raised
                    if done:
                        consumer.commit(offsets=[TopicPartition(t, p, o)
                                                 for (t, p), o in done.items()],
                                        asynchronous=False)
    finally:
        consumer.close()  # leaves the group at once: its partitions move to the others
    return counts


def _process(msg, decoder: Decoder, secret: bytes | None, seen: RecentIds,
             counts: dict[str, int], handler, log) -> None:
    where = f"{msg.topic()}/{msg.partition()}@{msg.offset()}"
    try:
        name, record = decoder.decode(msg.value())
    except Undecodable as exc:
        counts["undecodable"] += 1
        log(f"skipped undecodable message {where}: {exc}")
        return
    if name != TOPICS[msg.topic()][0]:
        counts["undecodable"] += 1
        log(f"skipped {where}: a {name} record on {msg.topic()}")
        return
    if secret is not None and msg.topic() == "twin.actions" and not signature_ok(
            secret, msg.topic(), msg.key(), msg.value(), msg.headers()):
        counts["rejected"] += 1
        log(f"rejected action {where} ({record['action_id']}): missing or invalid signature")
        return
    if not seen.add(f"{msg.topic()}:{_id_of(msg.topic(), record)}"):
        counts["duplicates"] += 1
        return
    handler(msg.topic(), record)
    counts["handled"] += 1


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.example_consumer",
                                description=__doc__.split("\n", 1)[0])
    p.add_argument("--bootstrap-servers", default=os.environ.get("TWIN_BOOTSTRAP_SERVERS"),
                   help="Kafka bootstrap servers (default: $TWIN_BOOTSTRAP_SERVERS)")
    p.add_argument("--group", default="twin-example-consumer", help="consumer group id")
    p.add_argument("--predictions", action="store_true", help="also read twin.predictions")
    p.add_argument("-X", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a librdkafka setting, e.g. security.protocol=SASL_SSL (repeatable)")
    p.add_argument("--max", type=int, metavar="N", help="stop after handling N records")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="stop after S seconds without messages (default: until Ctrl-C)")
    p.add_argument("--hmac-key-file", metavar="FILE",
                   help="reject actions not signed with this key")
    p.add_argument("--schema-dir", default=str(DEFAULT_SCHEMA_DIR),
                   help="folder with action.v1.avsc and prediction.v1.avsc")
    p.add_argument("--dedup-capacity", type=int, default=100_000,
                   help="how many recent ids are remembered for deduplication")
    p.add_argument("-v", "--verbose", action="store_true", help="show librdkafka's log")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not KAFKA_LOG.handlers:
        KAFKA_LOG.addHandler(logging.StreamHandler(sys.stderr))
        KAFKA_LOG.propagate = False
    KAFKA_LOG.setLevel(logging.INFO if args.verbose else logging.CRITICAL)
    if not args.bootstrap_servers:
        print("example_consumer: pass --bootstrap-servers HOST:PORT", file=sys.stderr)
        return 2
    config: dict[str, Any] = {"bootstrap.servers": args.bootstrap_servers,
                              "group.id": args.group}
    for item in args.overrides:
        key, sep, value = item.partition("=")
        if not sep:
            print(f"example_consumer: -X expects key=value, got {item!r}", file=sys.stderr)
            return 2
        config[key.strip()] = value.strip()
    secret = None
    if args.hmac_key_file:
        secret = Path(args.hmac_key_file).read_bytes().strip()
    topics = ["twin.actions"] + (["twin.predictions"] if args.predictions else [])
    try:
        counts = consume(config, topics, decoder=Decoder(args.schema_dir), secret=secret,
                         max_records=args.max, timeout_s=args.timeout,
                         dedup_capacity=args.dedup_capacity)
    except ConnectionError as exc:
        print(f"example_consumer: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - from handle(): not committed, stop loudly
        print(f"example_consumer: stopped, the message in hand is not committed: "
              f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print("example_consumer: " + ", ".join(f"{k} {v}" for k, v in counts.items()),
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())

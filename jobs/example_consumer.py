"""Example: act on the twin's output in your own service. Copy this file and edit ``handle``.

Run it::

    python -m jobs.example_consumer --bootstrap-servers 127.0.0.1:9092 [--predictions]
        [--group my-service] [--max N] [--timeout S] [--hmac-key-file FILE]
        [--kafka-config FILE] [-X key=value]

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
    A message that cannot be decoded (or an action whose signature is wrong or a setpoint
    that has expired, with ``--hmac-key-file``) is reported on stderr and skipped; it must
    not block the stream (in production send it to your own dead-letter store). If
    ``handle`` raises, the consumer stops *without* committing that message, so it comes
    again on restart.

Signed commands
    ``SETPOINT`` actions change how machines run. The twin signs every action as a
    command in the manner of OPC UA and IEC 62351: headers ``twin-issued-at-ms``,
    ``twin-expires-at-ms`` and ``twin-seq`` (the decision's window end: it grows per
    asset, and a re-emitted decision keeps it), and ``twin-hmac-sha256-v2``, an
    HMAC-SHA256 over all of them, the topic, the key and the value, under a key derived
    from the shared one for this version (:func:`signature_ok`). With ``--hmac-key-file``
    unsigned, forged or re-stamped actions are rejected before ``handle`` sees them, and
    so are setpoints that have expired (or were issued more than ``--clock-skew`` seconds
    in the future). The gateway you forward setpoints to must also refuse a sequence
    that is not above the last one it applied to the asset, and remember that across
    restarts (as ``twin simulate`` does): that refuses replays within the validity and
    re-emissions after a rerun of the twin.

Settings and secrets
    librdkafka settings come from ``--kafka-config FILE`` (``key=value`` lines) and ``-X
    key=value``. Secrets (``sasl.password`` and the like) are refused on the command line,
    where any local user can read them in the process list: put them in the file, mode
    0600.

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
import re
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
SIGNATURE_HEADER = "twin-hmac-sha256-v2"
STAMP_HEADERS = ("twin-issued-at-ms", "twin-expires-at-ms", "twin-seq")
SIGNATURE_LABEL = b"twinstream command signature v2"
CLOCK_SKEW_S = 30.0
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


# -- signed commands (the same computation as transforms/signing.py) ------------------------

def _header(headers, name: str) -> bytes | None:
    """The one value of header ``name`` (None if absent or repeated: a repeat is suspect)."""
    values = [v for k, v in headers or () if k == name]
    if len(values) != 1 or values[0] is None:
        return None
    return values[0] if isinstance(values[0], bytes) else str(values[0]).encode()


def command_stamp(secret: bytes, topic: str, key: bytes | None, value: bytes,
                  headers) -> tuple[int, int, int] | None:
    """``(issued_at_ms, expires_at_ms, seq)`` of a message whose signature verifies, else
    None. The signed bytes: ``topic NUL len(key) NUL key NUL issued NUL expires NUL seq NUL
    value``, under ``HMAC-SHA256(secret, "twinstream command signature v2")``."""
    sig = _header(headers, SIGNATURE_HEADER)
    raw = [_header(headers, name) for name in STAMP_HEADERS]
    if sig is None or any(r is None or not re.fullmatch(rb"[0-9]{1,19}", r) for r in raw):
        return None
    issued, expires, seq = (int(r) for r in raw)
    key = key or b""
    message = b"%s\0%d\0%s\0%d\0%d\0%d\0%s" % (topic.encode(), len(key), key, issued,
                                                  expires, seq, value)
    derived = hmac.new(secret, SIGNATURE_LABEL, hashlib.sha256).digest()
    expected = hmac.new(derived, message, hashlib.sha256).hexdigest().encode()
    if not hmac.compare_digest(expected, sig):
        return None
    return issued, expires, seq


def signature_ok(secret: bytes, topic: str, key: bytes | None, value: bytes, headers) -> bool:
    """Whether the message carries a valid version-2 signature under ``secret``."""
    return command_stamp(secret, topic, key, value, headers) is not None


def stale_command(stamp: tuple[int, int, int], now_ms: int,
                  skew_ms: float = CLOCK_SKEW_S * 1000) -> str | None:
    """Why a signed command must not be acted on at ``now_ms`` (None: it is fresh)."""
    issued, expires, _ = stamp
    if now_ms > expires:
        return f"expired {(now_ms - expires) / 1000:.1f} s ago"
    if issued > now_ms + skew_ms:
        return f"issued {(issued - now_ms) / 1000:.1f} s in the future"
    return None


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
            secret: bytes | None = None, clock_skew_s: float = CLOCK_SKEW_S,
            max_records: int | None = None,
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
                        _process(msg, decoder, secret, seen, counts, handler, log,
                                 clock_skew_s)
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
             counts: dict[str, int], handler, log, clock_skew_s: float = CLOCK_SKEW_S
             ) -> None:
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
    if secret is not None and msg.topic() == "twin.actions":
        stamp = command_stamp(secret, msg.topic(), msg.key(), msg.value(), msg.headers())
        if stamp is None:
            counts["rejected"] += 1
            log(f"rejected action {where} ({record['action_id']}): missing or invalid "
                "signature")
            return
        why = stale_command(stamp, time.time_ns() // 1_000_000, clock_skew_s * 1000)
        if record["kind"] == "SETPOINT" and why is not None:  # alerts stay worth reading
            counts["rejected"] += 1
            log(f"rejected setpoint {where} ({record['action_id']}): {why}")
            return
    if not seen.add(f"{msg.topic()}:{_id_of(msg.topic(), record)}"):
        counts["duplicates"] += 1
        return
    handler(msg.topic(), record)
    counts["handled"] += 1


# -- settings ----------------------------------------------------------------------------

SECRET_WORDS = {"password", "secret", "token", "key", "credentials", "private", "jaas",
                "passphrase"}


def is_secret(name: str) -> bool:
    """A setting that holds a secret (``sasl.password``, ``ssl.key.pem``, ...; not where one
    is, like ``ssl.key.location``)."""
    words = re.split(r"[._-]", name.lower())
    return (words[-1] not in ("location", "url", "endpoint")
            and (bool(SECRET_WORDS.intersection(words)) or "user.info" in name.lower()
                 or name.lower() == "sasl.oauthbearer.config"))


def read_settings(path: str) -> dict[str, str]:
    """``key=value`` lines of a properties file (``#`` comments)."""
    out = {}
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        line = line.strip()
        if line and not line.startswith(("#", "!")):
            key, sep, value = line.partition("=")
            if not sep or not key.strip():
                raise ValueError(f"{path}:{n}: expected key=value")  # never echo: secrets
            out[key.strip()] = value.strip()
    return out


def command_line_settings(items: list[str]) -> dict[str, str]:
    """``-X key=value`` items; a secret is refused (the process list shows command lines)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError("-X expects key=value")
        if is_secret(key):
            raise ValueError(f"-X {key}=... would show the secret in the process list: put "
                             "it in a --kafka-config FILE (mode 0600) instead")
        out[key] = value.strip()
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m jobs.example_consumer",
                                description=__doc__.split("\n", 1)[0])
    p.add_argument("--bootstrap-servers", default=os.environ.get("TWIN_BOOTSTRAP_SERVERS"),
                   help="Kafka bootstrap servers (default: $TWIN_BOOTSTRAP_SERVERS)")
    p.add_argument("--group", default="twin-example-consumer", help="consumer group id")
    p.add_argument("--predictions", action="store_true", help="also read twin.predictions")
    p.add_argument("--kafka-config", metavar="FILE",
                   help="librdkafka settings as key=value lines (put secrets here, mode 0600)")
    p.add_argument("-X", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="a librdkafka setting, e.g. security.protocol=SASL_SSL (repeatable; "
                        "secrets are refused here: use --kafka-config)")
    p.add_argument("--max", type=int, metavar="N", help="stop after handling N records")
    p.add_argument("--timeout", type=float, metavar="S",
                   help="stop after S seconds without messages (default: until Ctrl-C)")
    p.add_argument("--hmac-key-file", metavar="FILE",
                   help="reject actions not signed with this key, and expired setpoints")
    p.add_argument("--clock-skew", type=float, default=CLOCK_SKEW_S, metavar="S",
                   help=f"clock difference tolerated with the twin (default {CLOCK_SKEW_S:g})")
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
    try:
        if args.kafka_config:
            config.update(read_settings(args.kafka_config))
        config.update(command_line_settings(args.overrides))
    except (OSError, ValueError) as exc:
        print(f"example_consumer: {exc}", file=sys.stderr)
        return 2
    secret = None
    if args.hmac_key_file:
        secret = Path(args.hmac_key_file).read_bytes().strip()
    topics = ["twin.actions"] + (["twin.predictions"] if args.predictions else [])
    try:
        counts = consume(config, topics, decoder=Decoder(args.schema_dir), secret=secret,
                         clock_skew_s=args.clock_skew, max_records=args.max,
                         timeout_s=args.timeout,
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

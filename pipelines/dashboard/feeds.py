"""What feeds the dashboard's :class:`~transforms.fleetview.FleetView`: the twin's Kafka
output topics, live, or the files of a run folder.

- :class:`KafkaFeed`: a consumer thread assigned to every partition of the output topics
  (``twin.state`` from its start, since the latest record per asset is the twin; the
  others from ``lookback`` ago, by Kafka timestamp, or from their start). It reads
  without a consumer group and commits nothing, so it never disturbs real consumers.
  Topics that do not exist yet (the dashboard started before the twin) are picked up
  when they appear. Every message is decoded with the project's serde; one that does
  not decode is counted under its reason (``unreadable`` on the data-quality page), never
  skipped silently. Actions' signatures are checked as the plant side checks them
  (:func:`transforms.signing.verify_headers`).
- :class:`FolderFeed`: the Avro container files ``twin run`` writes (``state.avro``,
  ``predictions.avro``, ``actions.avro``, ``features.avro``, ``late.avro``,
  ``dead_letters.avro``) or the JSON lines of ``twin flink run`` (``state/``,
  ``predictions/``, ...), folded in event-time order. The folder is watched: when a file
  changes (a run still writing, a rerun) the view is rebuilt from the files.

Both keep a small status (what they read, how far behind they are, the last error) for
``GET /api/status``.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

from pipelines.kafka.topics import OUTPUT_TOPICS
from transforms import fleetview, signing
from transforms.errors import InvalidReading

log = logging.getLogger("twin.dashboard")

# topic -> the schema its records have
TOPIC_SCHEMAS = {topic: schema for topic, schema in OUTPUT_TOPICS.values()}
STATE_TOPIC = OUTPUT_TOPICS["state"][0]
ACTION_TOPIC = OUTPUT_TOPICS["action"][0]
REFRESH_S = 2.0  # how often new partitions and the consumer's lag are looked at
BATCH = 2000  # messages taken per poll
MAX_MESSAGE_BYTES = 64 << 20  # a viewer: read big messages rather than refuse them


def signature_of(secret: bytes | None, topic: str, key: bytes | None, value: bytes,
                 headers) -> tuple[str, dict[str, Any] | None]:
    """An action's signature status (``valid``, ``invalid``, ``missing``, ``legacy``, or
    ``unverified`` when signed but no key is configured) and, when valid, its stamp with
    whether it has ``expired`` by now."""
    verdict = signing.verify_headers(secret or b"", topic, key, value, headers)
    if verdict.status in ("missing", "legacy"):
        return verdict.status, None
    if verdict.status == "malformed":
        return "invalid", None
    if not secret:
        return "unverified", None
    if verdict.status != "valid":
        return verdict.status, None
    st = verdict.stamp
    return "valid", {"issued_at_ms": st.issued_at_ms, "expires_at_ms": st.expires_at_ms,
                     "seq": st.seq, "expired": signing.wall_clock_ms() > st.expires_at_ms}


class _Feed:
    def __init__(self, view: fleetview.FleetView) -> None:
        self.view = view
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.started_ms = signing.wall_clock_ms()

    def start(self) -> _Feed:
        self._thread = threading.Thread(target=self._run_guarded, name=type(self).__name__,
                                        daemon=True)
        self._thread.start()
        return self

    def _run_guarded(self) -> None:
        try:
            self.run()
        except Exception as exc:  # noqa: BLE001 - shown on the status page, not lost
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("dashboard feed stopped: %s", self.error)

    def run(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)


class KafkaFeed(_Feed):
    """The twin's output topics, live (see the module docstring).

    Parameters
    ----------
    view
        Where the records go.
    config
        librdkafka client settings (``bootstrap.servers``, TLS, SASL, ...).
    serde
        :class:`~pipelines.kafka.serde.LocalSerde` or a registry serde.
    secret
        The command-signing key actions are checked with (None: shown as unverified).
    lookback_ms
        How far back to read the topics other than ``twin.state`` (None: from their
        start).
    topics
        Output topics to read (default: every one the twin writes).
    """

    def __init__(self, view: fleetview.FleetView, config: dict[str, Any], serde,
                 secret: bytes | None = None, lookback_ms: int | None = None,
                 topics: list[str] | None = None) -> None:
        super().__init__(view)
        self.config, self.serde, self.secret = config, serde, secret
        self.lookback_ms = lookback_ms
        self.topics = list(topics or TOPIC_SCHEMAS)
        self.assigned: set[tuple[str, int]] = set()
        self.messages = 0
        self.unreadable = 0
        self.behind = 0  # messages on the topics not read yet, at the last look
        self.last_message_ms: int | None = None
        self.caught_up_ms: int | None = None  # when the view first had all there was
        self.before_lookback = 0  # messages older than the lookback, passed over
        self._since_ms = (signing.wall_clock_ms() - lookback_ms
                          if lookback_ms is not None else None)
        self._consumer = None

    def _open(self):
        from confluent_kafka import Consumer

        from pipelines.kafka.config import with_logger

        return Consumer(with_logger({
            **self.config,
            "group.id": self.config.get("group.id", "twin-dashboard"),
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 100,
            "fetch.message.max.bytes": MAX_MESSAGE_BYTES,
            "receive.message.max.bytes": MAX_MESSAGE_BYTES + 1_000_000,
        }))

    def _assign_new(self, consumer) -> None:
        from confluent_kafka import OFFSET_BEGINNING, TopicPartition

        metadata = consumer.list_topics(timeout=5.0)
        new = []
        for topic in self.topics:
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                continue
            for p in sorted(meta.partitions):
                if (topic, p) not in self.assigned:
                    new.append(TopicPartition(topic, p, OFFSET_BEGINNING))
        if not new:
            return
        if self._since_ms is not None:
            since = self._since_ms
            timed = [TopicPartition(tp.topic, tp.partition, since) for tp in new
                     if tp.topic != STATE_TOPIC]
            if timed:
                found = {(tp.topic, tp.partition): tp.offset
                         for tp in consumer.offsets_for_times(timed, timeout=10.0)}
                for tp in new:
                    offset = found.get((tp.topic, tp.partition))
                    if offset is not None and offset >= 0:
                        tp.offset = offset
                    elif offset is not None and tp.topic != STATE_TOPIC:
                        # no message since then: start at the end
                        _, high = consumer.get_watermark_offsets(tp, timeout=5.0)
                        tp.offset = high
        consumer.incremental_assign(new)
        self.assigned.update((tp.topic, tp.partition) for tp in new)

    def _measure_behind(self, consumer) -> None:
        from confluent_kafka import TopicPartition

        tps = [TopicPartition(t, p) for t, p in sorted(self.assigned)]
        if not tps:
            return
        behind = 0
        for tp in consumer.position(tps):
            _, high = consumer.get_watermark_offsets(tp, timeout=5.0, cached=False)
            if tp.offset >= 0:
                behind += max(0, high - tp.offset)
            else:  # nothing read yet: all of the partition from where we start
                low, _ = consumer.get_watermark_offsets(tp, timeout=5.0, cached=True)
                behind += max(0, high - low)
        self.behind = behind
        if behind == 0 and self.caught_up_ms is None:
            self.caught_up_ms = signing.wall_clock_ms()

    def run(self) -> None:
        consumer = self._consumer = self._open()
        try:
            next_refresh = 0.0
            while not self._stop.is_set():
                now = time.monotonic()
                if now >= next_refresh:
                    try:
                        self._assign_new(consumer)
                        self._measure_behind(consumer)
                        self.error = None
                    except Exception as exc:  # noqa: BLE001 - a broker away for a while
                        self.error = f"{type(exc).__name__}: {exc}"
                    next_refresh = now + REFRESH_S
                if not self.assigned:
                    self._stop.wait(0.2)
                    continue
                msgs = consumer.consume(BATCH, timeout=0.1)
                if msgs:
                    self.handle(msgs)
        finally:
            consumer.close()

    def handle(self, msgs) -> None:
        """Decode and fold in a batch of messages (under the view's lock)."""
        decoded = []
        for m in msgs:
            if m.error() is not None:
                continue  # transport notices (e.g. a partition's end); librdkafka retries
            self.messages += 1
            ts_type, ts = m.timestamp()
            received = ts if ts_type else None
            topic, value = m.topic(), m.value()
            if (self._since_ms is not None and received is not None
                    and received < self._since_ms and topic != STATE_TOPIC):
                # offsets_for_times starts near the lookback; brokers that do not index
                # time (the embedded one) start at the beginning, so the cut is made here
                self.before_lookback += 1
                continue
            try:
                if value is None:
                    raise InvalidReading("empty_payload",
                                         "a message without a value (a tombstone)")
                name, record = self.serde.decode(value, MAX_MESSAGE_BYTES)
            except InvalidReading as exc:
                decoded.append((None, exc.reason, None, None, None))
                continue
            signature = command = None
            if name == fleetview.ACTION:
                signature, command = signature_of(self.secret, topic, m.key(), value,
                                                  m.headers())
            decoded.append((name, record, received, signature, command))
            if received is not None:
                self.last_message_ms = received
        with self.view.lock:
            for name, record, received, signature, command in decoded:
                if name is None:
                    self.unreadable += 1
                    self.view.quality.add_unreadable(record)
                    continue
                try:
                    self.view.ingest(name, record, received, signature, command)
                except (ValueError, KeyError, TypeError) as exc:
                    self.unreadable += 1
                    self.view.quality.add_unreadable(f"unexpected_record: {exc}"[:120])

    def optimize_source(self) -> list[str] | None:
        """How ``twin optimize`` reads these topics (the state topic from its start)."""
        servers = self.config.get("bootstrap.servers")
        if not servers or STATE_TOPIC not in self.topics:
            return None
        return ["--source", "kafka", "--bootstrap-servers", str(servers)]

    def status(self) -> dict[str, Any]:
        return {"source": "kafka", "bootstrap_servers": self.config.get("bootstrap.servers"),
                "topics": self.topics, "partitions": len(self.assigned),
                "messages": self.messages, "unreadable": self.unreadable,
                "before_lookback": self.before_lookback,
                "behind_messages": self.behind, "last_message_ms": self.last_message_ms,
                "caught_up_ms": self.caught_up_ms, "error": self.error}


# -- run folders ------------------------------------------------------------------------

# output name in a run folder -> schema; the order is the order records of one event time
# are folded in (features before state: their minima and maxima win the sensor charts)
FOLDER_OUTPUTS = (("features", fleetview.FEATURES), ("state", fleetview.STATE),
                  ("predictions", fleetview.PREDICTION), ("actions", fleetview.ACTION),
                  ("late", fleetview.LATE), ("dead_letters", fleetview.DEAD_LETTER))
_TIME_FIELD = {fleetview.FEATURES: "window_end_ms", fleetview.PREDICTION: "window_end_ms"}


class FolderError(ValueError):
    """A folder that is not a run's output folder; the message says why."""


def folder_files(out: Path) -> dict[str, list[Path]]:
    """The output files of each kind in run folder ``out`` (Avro, else JSON lines)."""
    found: dict[str, list[Path]] = {}
    for name, _ in FOLDER_OUTPUTS:
        avro = out / f"{name}.avro"
        if avro.is_file():
            found[name] = [avro]
        elif (out / name).is_dir():
            found[name] = sorted(p for p in (out / name).rglob(f"{name}*.jsonl")
                                 if not p.name.startswith("."))
    return found


def check_folder(out: Path) -> None:
    if not out.is_dir():
        raise FolderError(f"{out} is not a folder (want the --out of twin run or twin "
                          f"flink run)")
    found = folder_files(out)
    if not any(k in found for k in ("state", "predictions")):
        raise FolderError(f"{out} has no twin outputs (state.avro / predictions.avro, or "
                          f"state/ / predictions/ JSON lines): is it the --out of twin run "
                          f"or twin flink run?")


def _read(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".avro":
        import fastavro

        with path.open("rb") as f:
            return list(fastavro.reader(f))
    records = []
    with path.open() as f:
        for line in f:
            if line.strip():
                records.append(json.loads(line))
    return records


def read_folder(out: Path) -> list[tuple[int, int, str, dict[str, Any]]]:
    """Every output record of run folder ``out`` as ``(event ms, kind order, schema,
    record)``, sorted: the order a live view would have seen them in."""
    files = folder_files(out)
    rows = []
    for order, (name, schema) in enumerate(FOLDER_OUTPUTS):
        field = _TIME_FIELD.get(schema, "ts_ms")
        for path in files.get(name, ()):
            for r in _read(path):
                if schema == fleetview.DEAD_LETTER:
                    for k in ("payload", "key"):
                        if isinstance(r.get(k), str):  # JSON lines: base64
                            r[k] = base64.b64decode(r[k])
                rows.append((fleetview.epoch_ms(r.get(field)) or 0, order, schema, r))
    rows.sort(key=lambda x: (x[0], x[1]))
    return rows


def load_folder(out: Path, history: int = fleetview.DEFAULT_HISTORY,
                asset_info: dict[str, dict[str, Any]] | None = None) -> fleetview.FleetView:
    """A view of run folder ``out`` as it is now."""
    view = fleetview.FleetView(history, asset_info)
    files = folder_files(out)
    view.mark_sources(late="late" in files, duplicates="features" in files)
    for _, _, schema, record in read_folder(out):
        view.ingest(schema, record)
    return view


class FolderFeed(_Feed):
    """A run folder, reread when its files change (see the module docstring).

    The view is replaced as a whole; :attr:`epoch` counts replacements, so a push channel
    can tell its clients to start again.
    """

    def __init__(self, out: Path, history: int = fleetview.DEFAULT_HISTORY,
                 asset_info: dict[str, dict[str, Any]] | None = None,
                 watch_s: float = 2.0) -> None:
        check_folder(out)
        self.out, self.history, self.asset_info, self.watch_s = out, history, asset_info, \
            watch_s
        self.epoch = 0
        self.loads = 0
        self.loaded_ms: int | None = None
        self._signature = self._files_signature()
        super().__init__(load_folder(out, history, asset_info))
        self.loads, self.loaded_ms = 1, signing.wall_clock_ms()

    def _files_signature(self) -> tuple:
        sig = []
        for _name, paths in sorted(folder_files(self.out).items()):
            for p in paths:
                try:
                    st = p.stat()
                except OSError:
                    continue
                sig.append((str(p), st.st_size, st.st_mtime_ns))
        return tuple(sig)

    def run(self) -> None:
        while not self._stop.wait(self.watch_s):
            sig = self._files_signature()
            if sig == self._signature:
                continue
            try:
                view = load_folder(self.out, self.history, self.asset_info)
            except Exception as exc:  # noqa: BLE001 - a file half written: try again
                self.error = f"{type(exc).__name__}: {exc}"
                continue
            self._signature, self.error = sig, None
            self.view, self.epoch = view, self.epoch + 1
            self.loads, self.loaded_ms = self.loads + 1, signing.wall_clock_ms()

    def optimize_source(self) -> list[str] | None:
        """How ``twin optimize`` reads this folder (it reads state.parquet or state.avro,
        not the JSON lines of twin flink run)."""
        if any((self.out / n).is_file() for n in ("state.parquet", "state.avro")):
            return [str(self.out)]
        return None

    def status(self) -> dict[str, Any]:
        return {"source": "folder", "folder": str(self.out), "loads": self.loads,
                "loaded_ms": self.loaded_ms, "records": self.view.records,
                "behind_messages": 0, "error": self.error}

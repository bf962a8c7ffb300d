"""Closing the loop: setpoint commands from ``twin.actions`` back to the (simulated) assets.

The twin's action policy writes SETPOINT actions to ``twin.actions``; a real plant would
have a gateway that turns them into PLC writes. :class:`CommandListener` is that gateway
for the fleet simulator, so ``twin simulate`` can run the whole loop: raw vendor data out,
commands back in, later data shaped by them.

Commands change how machines run, so the gateway trusts nothing it reads. It follows the
command security of OPC UA and IEC 62351 (see :mod:`transforms.signing`): a command must be
authentic, fresh and new.

1. Authentic: the version-2 signature (``twin-hmac-sha256-v2``) must be present
   (``unsigned``; a version-1 signature alone counts as unsigned) and verify over the
   topic, key, stamp and value bytes (``bad_signature``, also for unreadable or repeated
   stamp headers): a forged, tampered or re-stamped command is refused before its bytes
   are even parsed.
2. Well formed: the value must decode as ``twin/action.v1`` (``undecodable``), be keyed
   by its own asset (``key_mismatch``) and carry a setpoint name and value
   (``incomplete``).
3. Fresh in wall-clock time: not past its expiry (``expired``: a captured command
   replayed later, or one that waited too long on the way) and not issued further in the
   future than the clock skew allowance (``not_yet_valid``).
4. ``dry_run`` commands are recorded, never applied (``dry_run``).
5. New: its sequence must be above the last one applied to the asset (``replayed``). The
   twin's sequence is the decision's window end, so a re-emission of a decision already
   applied (at-least-once delivery, a pipeline rerun, a replay within the validity) is
   refused while a new decision passes. The table of last sequences is persisted
   (:class:`~pipelines.kafka.sequences.LastApplied`), so a restarted gateway still refuses
   them.
6. Current in event time: a decision made for a window more than ``max_lag_ms`` of event
   time behind the asset's present is refused (``stale``): it answers a state the asset
   has long left.
7. The asset itself has the last word: unknown assets (``unknown_asset``) and its
   interlock's refusals (``interlock``, with the asset's own reason) are rejections too.

Other action kinds (alerts, clears, work orders) are for people, not machines: they are
*ignored*, which is not a rejection. An applied command seen again by the same listener
(at-least-once delivery) is ignored as a ``duplicate``.

Every rejection is logged on ``twinstream.simulator`` at warning level (asset, action id
when known, reason; never the signing key or a signature) and every outcome is kept as a
:class:`CommandResult`. Nothing a producer can write makes :meth:`CommandListener.poll`
raise.

Offsets are never committed: a simulator run is not resumable (its fleet restarts from the
seed), so each listener starts at the end of the topic (only commands written from now on)
or, asked to, at its beginning (every command still retained, e.g. to replay a scenario).
"""

from __future__ import annotations

import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from pipelines.kafka.broker import BrokerUnavailable
from pipelines.kafka.sequences import LastApplied, SequenceFileError
from pipelines.kafka.serde import LocalSerde
from transforms import signing
from transforms.validate import show

logger = logging.getLogger("twinstream.simulator")

ACTIONS_TOPIC = "twin.actions"
ACTION_SCHEMA = "twin/action.v1"
ACCEPTED, REJECTED, IGNORED = "accepted", "rejected", "ignored"
# Action ids remembered to apply each command once (the oldest are forgotten first).
SEEN_IDS = 100_000
POLL_BATCH = 500
UNVERIFIED = ("unsigned", "bad_signature")
# How far behind the asset's present (event time) a decision may be and still be applied.
DEFAULT_MAX_LAG_MS = 30 * 60_000


@dataclass(frozen=True)
class CommandResult:
    """What became of one message on the actions topic.

    ``status`` is ``accepted``, ``rejected`` or ``ignored``; ``reason`` a stable code
    (``applied``, ``unsigned``, ``bad_signature``, ``undecodable``, ``key_mismatch``,
    ``incomplete``, ``expired``, ``not_yet_valid``, ``dry_run``, ``replayed``, ``stale``,
    ``unknown_asset``, ``interlock``, ``not_a_setpoint``, ``duplicate``); ``detail`` says
    more in words (for ``interlock``, ``unknown_asset`` and ``applied`` it is the asset's
    own answer). Fields that could not be read are None; ``seq`` is the verified sequence.
    """

    status: str
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    asset_id: str | None = None
    action_id: str | None = None
    kind: str | None = None
    setpoint_name: str | None = None
    setpoint_value: float | None = None
    at_ms: int | None = None  # event time the setpoint took effect from (accepted only)
    seq: int | None = None


def epoch_ms(ts: Any) -> int:
    """Epoch milliseconds of an Avro ``timestamp-millis`` as fastavro returns it.

    >>> from datetime import timezone
    >>> epoch_ms(datetime(2026, 11, 27, 13, 20, tzinfo=timezone.utc))
    1795785600000
    >>> epoch_ms(1795785600000)
    1795785600000
    """
    if isinstance(ts, datetime):
        if ts.tzinfo is None:
            raise ValueError("naive datetime: no time zone to place it in")
        return round(ts.timestamp() * 1000)
    return int(ts)


class CommandListener:
    """Consume ``twin.actions`` and apply verified SETPOINT commands to a simulated fleet.

    Parameters
    ----------
    fleet
        The :class:`~transforms.simulator.Fleet` whose :meth:`apply_setpoint` the commands
        go to (its interlock decides; its ``setpoint_log`` records every attempt).
    kafka_config
        librdkafka settings (``bootstrap.servers``, TLS, SASL, ...), e.g. from
        :func:`pipelines.kafka.config.config_from_args`.
    secret
        The HMAC key the twin signs commands with (:func:`pipelines.kafka.secrets.hmac_key`).
    topic
        The actions topic; every partition of it is assigned (it must exist).
    group_id
        Consumer group id shown to the broker; offsets are never committed to it.
    from_beginning
        Read every retained command (default: only those written after construction).
    timeout_s
        How long to wait for the broker while starting (then :class:`BrokerUnavailable`).
    sequence_file
        Where the last applied sequence per asset is kept across restarts (None: only in
        memory, forgotten when the process ends).
    max_skew_ms
        Clock difference tolerated between the signer and this gateway: a command issued
        further in the future is refused (``not_yet_valid``).
    max_lag_ms
        The most event time a decision may lag the asset's present (``stale``).
    clock
        Wall-clock epoch ms (for tests).

    Notes
    -----
    Partitions are looked up once, at construction: partitions added to the topic later
    are not read by this listener.
    """

    def __init__(self, fleet, kafka_config: dict[str, Any], secret: bytes,
                 topic: str = ACTIONS_TOPIC, group_id: str | None = None, *,
                 from_beginning: bool = False, timeout_s: float = 15.0,
                 serde=None, sequence_file=None,
                 max_skew_ms: int = signing.DEFAULT_MAX_SKEW_MS,
                 max_lag_ms: int = DEFAULT_MAX_LAG_MS,
                 clock=signing.wall_clock_ms) -> None:
        from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

        from pipelines.beam.kafka import end_offsets

        if not secret:
            raise ValueError("CommandListener needs the HMAC key commands are signed with")
        self.fleet = fleet
        self.topic = topic
        self._secret = secret
        self._bootstrap = kafka_config.get("bootstrap.servers", "the configured Kafka")
        self._serde = serde or LocalSerde()  # a RegistrySerde when the twin uses one
        self._assets = {a.asset_id for a in fleet.assets}
        self._seen: OrderedDict[str, None] = OrderedDict()
        self.last_applied = LastApplied(sequence_file)
        self.max_skew_ms, self.max_lag_ms, self._clock = max_skew_ms, max_lag_ms, clock
        self.results: list[CommandResult] = []
        self.counts: Counter = Counter()  # (status, reason) -> messages
        self.consumer_errors = 0
        self._consumer = Consumer({
            **kafka_config,
            "group.id": group_id or "twinstream-simulator",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "enable.partition.eof": False,
            "auto.offset.reset": "earliest",
        })
        try:
            tps = self._partitions(timeout_s)
            # The end as it stands now, probed past the reported high watermark (some
            # brokers report the start of the last batch): "from the end" must not replay
            # old commands, "from the beginning" knows when it has caught up.
            self._backlog = end_offsets(self._consumer, tps, timeout_s)
            self._next: dict[tuple[str, int], int] = {}
            if from_beginning:
                for tp in tps:
                    low, _ = self._consumer.get_watermark_offsets(tp, timeout=timeout_s)
                    self._next[(tp.topic, tp.partition)] = low
                self._consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)
                                       for tp in tps])
            else:
                self._next = dict(self._backlog)
                self._consumer.assign([TopicPartition(t, p, off)
                                       for (t, p), off in self._backlog.items()])
        except BaseException:
            self._consumer.close()
            raise

    def _partitions(self, timeout_s: float) -> list:
        from confluent_kafka import KafkaException, TopicPartition

        where = self._bootstrap
        deadline = time.monotonic() + timeout_s
        while True:
            try:  # all topics: asking for one that does not exist waits out the timeout
                md = self._consumer.list_topics(timeout=timeout_s)
            except KafkaException as exc:
                raise BrokerUnavailable(f"cannot reach Kafka at {where}: {exc}") from exc
            found = md.topics.get(self.topic)
            if found is not None and found.error is None and found.partitions:
                return [TopicPartition(self.topic, p) for p in sorted(found.partitions)]
            if time.monotonic() >= deadline:  # one just created may take a moment to show
                raise BrokerUnavailable(
                    f"topic {self.topic} does not exist on {where} (twin simulate creates "
                    "it; or create it with your Kafka tools)")
            time.sleep(0.1)

    # -- reading ------------------------------------------------------------------------

    def poll(self, now_event_ms: int, timeout: float = 0.0,
             max_messages: int = POLL_BATCH) -> list[CommandResult]:
        """Handle the commands that have arrived (waiting up to ``timeout`` seconds).

        Parameters
        ----------
        now_event_ms
            The simulator's current event time: accepted setpoints take effect from
            ``max(action ts_ms, now_event_ms)`` (the past cannot be changed), and decisions
            more than ``max_lag_ms`` behind it are ``stale`` (0: not known yet).
        timeout
            Seconds to wait when nothing is there yet (0: do not wait).
        max_messages
            At most this many messages per call.

        Returns
        -------
        list of CommandResult
            One per message read in this call (also appended to :attr:`results`).
        """
        out = []
        for msg in self._consumer.consume(max_messages, timeout=timeout):
            if msg.error() is not None:
                self.consumer_errors += 1
                logger.debug("command consumer error: %s", msg.error())
                continue
            self._next[(msg.topic(), msg.partition())] = msg.offset() + 1
            try:
                result = self._handle(msg, now_event_ms)
            except SequenceFileError:  # our own memory failed, not the input: stop loudly
                raise
            except Exception as exc:  # noqa: BLE001 - bad input must never stop the run
                result = self._reject(msg, "undecodable", f"{type(exc).__name__}: {exc}")
            self.results.append(result)
            self.counts[(result.status, result.reason)] += 1
            out.append(result)
        return out

    def caught_up(self) -> bool:
        """Whether every command present at construction has been read."""
        return all(self._next.get(k, 0) >= end for k, end in self._backlog.items())

    def catch_up(self, now_event_ms: int, timeout_s: float = 10.0) -> list[CommandResult]:
        """Poll until the commands present at construction are read (``from_beginning``),
        or ``timeout_s`` has passed; returns their results."""
        out: list[CommandResult] = []
        deadline = time.monotonic() + timeout_s
        while not self.caught_up() and time.monotonic() < deadline:
            out.extend(self.poll(now_event_ms, timeout=0.2))
        return out

    # -- judging one message ------------------------------------------------------------

    def _handle(self, msg, now_event_ms: int) -> CommandResult:
        topic, key, value = msg.topic(), msg.key(), msg.value() or b""
        verdict = signing.verify_headers(self._secret, topic, key, value, msg.headers())
        if verdict.status in ("missing", "legacy"):
            return self._reject(msg, "unsigned", verdict.detail, **self._claimed(value))
        if verdict.status != "valid":
            return self._reject(msg, "bad_signature", verdict.detail, **self._claimed(value))
        stamp = verdict.stamp
        from transforms.errors import InvalidReading

        try:
            name, record = self._serde.decode(value)
        except InvalidReading as exc:
            return self._reject(msg, "undecodable", str(exc), seq=stamp.seq)
        if name != ACTION_SCHEMA:
            return self._reject(msg, "undecodable", f"schema {name}, not {ACTION_SCHEMA}",
                                seq=stamp.seq)
        asset_id, action_id = record["asset_id"], record["action_id"]
        info = {"asset_id": asset_id, "action_id": action_id, "kind": record["kind"],
                "setpoint_name": record.get("setpoint_name"),
                "setpoint_value": record.get("setpoint_value"), "seq": stamp.seq}
        if record["kind"] != "SETPOINT":
            return self._result(msg, IGNORED, "not_a_setpoint",
                                f"{record['kind']} actions are for people", **info)
        if action_id in self._seen:
            return self._result(msg, IGNORED, "duplicate", "action id already applied",
                                **info)
        if key != asset_id.encode():
            return self._reject(msg, "key_mismatch",
                                "message key does not name the action's asset", **info)
        if info["setpoint_name"] is None or info["setpoint_value"] is None:
            return self._reject(msg, "incomplete", "SETPOINT without a name or value", **info)
        stale = signing.freshness(stamp, int(self._clock()), self.max_skew_ms)
        if stale is not None:
            return self._reject(msg, *stale, **info)
        if record["dry_run"]:
            return self._reject(msg, "dry_run", "dry-run command: recorded, not applied",
                                **info)
        last = self.last_applied.get(asset_id)
        if last is not None and stamp.seq <= last:
            return self._reject(msg, "replayed", f"sequence {stamp.seq} is not above "
                                f"{last}, the last one applied to {asset_id}", **info)
        ts_ms = epoch_ms(record["ts_ms"])
        if now_event_ms and int(now_event_ms) - ts_ms > self.max_lag_ms:
            lag = (int(now_event_ms) - ts_ms) / 3_600_000
            return self._reject(msg, "stale", f"decided for event time {ts_ms}, {lag:.2f} h "
                                f"behind the asset's present {int(now_event_ms)} (at most "
                                f"{self.max_lag_ms / 60_000:g} min)", **info)
        at_ms = max(ts_ms, int(now_event_ms))
        ok, why = self.fleet.apply_setpoint(asset_id, info["setpoint_name"],
                                            float(info["setpoint_value"]), at_ms)
        if not ok:
            code = "unknown_asset" if asset_id not in self._assets else "interlock"
            return self._reject(msg, code, why, **info)
        self._remember(action_id)
        self.last_applied.record(asset_id, stamp.seq)
        logger.info("setpoint applied: asset %s action_id %s seq %d %s", asset_id, action_id,
                    stamp.seq, why)
        return self._result(msg, ACCEPTED, "applied", why, at_ms=at_ms, **info)

    def _claimed(self, value: bytes) -> dict[str, Any]:
        """Asset and action id an unverified command claims (for the log only), if any."""
        try:
            name, record = self._serde.decode(value)
        except Exception:  # noqa: BLE001 - unreadable: nothing to claim
            return {}
        if name != ACTION_SCHEMA:
            return {}
        return {"asset_id": record["asset_id"], "action_id": record["action_id"],
                "kind": record["kind"]}

    def _remember(self, action_id: str) -> None:
        self._seen[action_id] = None
        while len(self._seen) > SEEN_IDS:
            self._seen.popitem(last=False)

    @staticmethod
    def _result(msg, status: str, reason: str, detail: str, **fields) -> CommandResult:
        return CommandResult(status, reason, detail, msg.topic(), msg.partition(),
                             msg.offset(), **fields)

    def _reject(self, msg, reason: str, detail: str, **fields) -> CommandResult:
        result = self._result(msg, REJECTED, reason, detail, **fields)
        # untrusted text is shown through repr (no control characters reach the log)
        asset = show(result.asset_id) if result.asset_id is not None else "unknown"
        if reason in UNVERIFIED:
            asset += " (as claimed by the unverified message)"
        logger.warning(
            "setpoint command rejected: asset %s, action_id %s, reason %s (%s) at %s/%d@%d",
            asset, show(result.action_id) if result.action_id is not None else "unknown",
            reason, show(detail, limit=200), result.topic, result.partition, result.offset)
        return result

    # -- summary and lifetime ---------------------------------------------------------

    def tally(self) -> dict[str, int]:
        """Messages by status: ``{"accepted": n, "rejected": n, "ignored": n}``."""
        out = dict.fromkeys((ACCEPTED, REJECTED, IGNORED), 0)
        for (status, _), n in self.counts.items():
            out[status] += n
        return out

    def reasons(self, status: str = REJECTED) -> dict[str, int]:
        """Messages of ``status`` by reason code."""
        return dict(sorted((r, n) for (s, r), n in self.counts.items() if s == status))

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None

    def __enter__(self) -> CommandListener:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

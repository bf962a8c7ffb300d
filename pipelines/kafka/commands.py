"""Closing the loop: setpoint commands from ``twin.actions`` back to the (simulated) assets.

The twin's action policy writes SETPOINT actions to ``twin.actions``; a real plant would
have a gateway that turns them into PLC writes. :class:`CommandListener` is that gateway
for the fleet simulator, so ``twin simulate`` can run the whole loop: raw vendor data out,
commands back in, later data shaped by them.

Commands change how machines run, so the gateway trusts nothing it reads:

1. the ``twin-hmac-sha256`` header must be present (``unsigned``) and verify over the
   exact topic, key and value bytes (``bad_signature``): a forged or tampered command is
   refused before its bytes are even parsed;
2. the value must decode as ``twin/action.v1`` (``undecodable``), be keyed by its own
   asset (``key_mismatch``) and carry a setpoint name and value (``incomplete``);
3. ``dry_run`` commands are recorded, never applied (``dry_run``);
4. the asset itself has the last word: unknown assets (``unknown_asset``) and its
   interlock's refusals (``interlock``, with the asset's own reason) are rejections too.

Other action kinds (alerts, clears, work orders) are for people, not machines: they are
*ignored*, which is not a rejection. Action ids are deterministic, so a command seen twice
(at-least-once delivery, a re-run of the pipeline) is applied once (``duplicate``).

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


@dataclass(frozen=True)
class CommandResult:
    """What became of one message on the actions topic.

    ``status`` is ``accepted``, ``rejected`` or ``ignored``; ``reason`` a stable code
    (``applied``, ``unsigned``, ``bad_signature``, ``undecodable``, ``key_mismatch``,
    ``incomplete``, ``dry_run``, ``unknown_asset``, ``interlock``, ``not_a_setpoint``,
    ``duplicate``); ``detail`` says more in words (for ``interlock``, ``unknown_asset`` and
    ``applied`` it is the asset's own answer). Fields that could not be read are None.
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

    Notes
    -----
    Partitions are looked up once, at construction: partitions added to the topic later
    are not read by this listener.
    """

    def __init__(self, fleet, kafka_config: dict[str, Any], secret: bytes,
                 topic: str = ACTIONS_TOPIC, group_id: str | None = None, *,
                 from_beginning: bool = False, timeout_s: float = 15.0,
                 serde=None) -> None:
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
            ``max(action ts_ms, now_event_ms)`` (the past cannot be changed).
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
        signature = signing.header_value(msg.headers())
        if signature is None:
            return self._reject(msg, "unsigned", f"no {signing.HEADER} header",
                                **self._claimed(value))
        if not signing.verify(self._secret, topic, key, value, signature):
            return self._reject(msg, "bad_signature",
                                "signature does not verify over topic, key and value",
                                **self._claimed(value))
        from transforms.errors import InvalidReading

        try:
            name, record = self._serde.decode(value)
        except InvalidReading as exc:
            return self._reject(msg, "undecodable", str(exc))
        if name != ACTION_SCHEMA:
            return self._reject(msg, "undecodable", f"schema {name}, not {ACTION_SCHEMA}")
        asset_id, action_id = record["asset_id"], record["action_id"]
        info = {"asset_id": asset_id, "action_id": action_id, "kind": record["kind"],
                "setpoint_name": record.get("setpoint_name"),
                "setpoint_value": record.get("setpoint_value")}
        if record["kind"] != "SETPOINT":
            return self._result(msg, IGNORED, "not_a_setpoint",
                                f"{record['kind']} actions are for people", **info)
        if action_id in self._seen:
            return self._result(msg, IGNORED, "duplicate", "action id already handled", **info)
        self._remember(action_id)
        if key != asset_id.encode():
            return self._reject(msg, "key_mismatch",
                                "message key does not name the action's asset", **info)
        if info["setpoint_name"] is None or info["setpoint_value"] is None:
            return self._reject(msg, "incomplete", "SETPOINT without a name or value", **info)
        if record["dry_run"]:
            return self._reject(msg, "dry_run", "dry-run command: recorded, not applied",
                                **info)
        at_ms = max(epoch_ms(record["ts_ms"]), int(now_event_ms))
        ok, why = self.fleet.apply_setpoint(asset_id, info["setpoint_name"],
                                            float(info["setpoint_value"]), at_ms)
        if not ok:
            code = "unknown_asset" if asset_id not in self._assets else "interlock"
            return self._reject(msg, code, why, **info)
        logger.info("setpoint applied: asset %s action_id %s %s", asset_id, action_id, why)
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

"""``twin simulate``: the fleet simulator as a live source on Kafka, with the loop closed.

Runbook
-------
``twin simulate --bootstrap-servers HOST:PORT`` publishes every vendor message of a seeded
fleet (``--assets``, ``--duration`` of event time, the same flags and defaults of
history as ``twin run``) to ``twin.raw.<vendor>``, keyed by asset id, each with the
Kafka timestamp set to the message's simulated *arrival* time, so a consumer judges
event time against the broker's clock exactly as it would for a real gateway. Messages
go out in arrival order, so each asset's messages are on one partition in that order.

- As fast as possible by default (batched: ``linger.ms``, a large local queue), or paced
  to ``--rate`` messages per second of wall-clock time for a live-looking stream.
- Meanwhile it listens on ``twin.actions`` (unless ``--no-actions``): SETPOINT commands
  signed with the shared HMAC key (``--hmac-key-file``, ``twin.hmac.key`` or the per-user
  key, see :mod:`pipelines.kafka.secrets`) are applied to the simulated assets and shape
  the data generated afterwards; everything else is rejected or ignored, and every
  rejection is logged (:mod:`pipelines.kafka.commands`). Commands must also be fresh: not
  expired (wall clock, ``--clock-skew`` tolerated), not older in event time than
  ``--max-command-lag`` behind the asset's present, and above the last sequence applied
  to the asset, which is kept across restarts in ``--command-state`` (default: one file
  per fleet under the state folder), so replayed or re-emitted commands are refused.
  ``--linger S`` keeps listening for S seconds after the last message, for commands that
  answer the last data.
- Delivery reports are counted: a message the broker did not take stops the run and
  the command exits 1 saying how many and why. Nothing is lost silently.
- A broker that cannot be reached is one line on stderr and exit code 2 (no hang).

``--ground-truth PATH`` writes the simulator's ground truth (faults, regime changes,
message counts by defect, plus the setpoints the assets received) for
``twin evaluate``-style scoring of whatever consumed the topics.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from jobs import hints
from jobs.options import (
    add_fleet_args,
    fleet_config_from,
    parse_duration,
    positive_float,
    positive_int,
)
from pipelines.kafka.config import CLIENT_LOGGER, add_kafka_args

# librdkafka settings of the raw-data producer; anything in --kafka-config or -X wins.
PRODUCER_DEFAULTS: dict[str, Any] = {
    "acks": "all",
    "enable.idempotence": True,  # retries can neither duplicate nor reorder an asset's data
    "linger.ms": 50,
    "batch.num.messages": 10_000,
    "queue.buffering.max.messages": 1_000_000,
    "queue.buffering.max.kbytes": 1_048_576,
    "message.timeout.ms": 30_000,  # a broker gone for this long fails the run, not hangs it
    # The simulator's "oversize" defect is a firmware dump just over 1 MiB, which the twin
    # must dead-letter: let it leave the client (brokers whose limit is lower refuse it, and
    # the run then fails saying so).
    "message.max.bytes": 4_000_000,
}
PACED_LINGER_MS = 5  # --rate: messages should leave about when they are due
BATCH = 2_000  # as fast as possible: messages between delivery-report and command polls
PACE_SLICE_S = 0.05  # --rate: longest sleep between polls while waiting for a due time
REACH_TIMEOUT_S = 10.0  # how long to wait for the broker to answer at all
REFUSED_S = 3.0  # ... or to keep trying when every broker refuses the connection
CATCH_UP_S = 10.0  # --actions-from beginning: how long to read the existing commands

SHOWN_SETPOINTS = 10  # the summary lists at most this many (the latest) accepted setpoints


def _non_negative_float(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be zero or positive: {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``twin simulate`` (fleet, pacing, topics, command loop, Kafka)."""
    g = add_fleet_args(parser, assets=12, duration="6h")
    g.add_argument("--ground-truth", metavar="PATH",
                   help="write the simulator's ground truth JSON here")
    p = parser.add_argument_group("publishing")
    pace = p.add_mutually_exclusive_group()
    pace.add_argument("--rate", type=positive_float, default=None, metavar="R",
                      help="publish R messages per second of wall-clock time")
    pace.add_argument("--as-fast-as-possible", action="store_true",
                      help="publish as fast as the broker takes them (the default)")
    p.add_argument("--partitions", type=positive_int, default=3,
                   help="partitions of topics this creates (default 3; existing topics are "
                        "left as they are)")
    c = parser.add_argument_group("commands back to the assets")
    c.add_argument("--no-actions", action="store_true",
                   help="do not listen for setpoint commands on twin.actions")
    c.add_argument("--actions-from", choices=("end", "beginning"), default="end",
                   help="end (default): only commands written from now on; beginning: "
                        "every retained command too, read before the first message")
    c.add_argument("--hmac-key-file", help="key that verifies setpoint commands")
    c.add_argument("--command-state", metavar="FILE",
                   help="where the last command sequence applied to each asset is kept "
                        "across restarts, so replayed commands stay refused (default: "
                        "<state dir>/commands/simulator-<fleet>.json, one per fleet "
                        "configuration)")
    c.add_argument("--clock-skew", type=parse_duration, default="30s", metavar="DURATION",
                   help="clock difference tolerated between the twin and this plant: "
                        "commands issued further in the future are refused (default 30s)")
    c.add_argument("--max-command-lag", type=parse_duration, default="30m",
                   metavar="DURATION",
                   help="refuse commands decided for a window more than this much event "
                        "time behind the asset's present (default 30m)")
    c.add_argument("--linger", type=_non_negative_float, default=0.0, metavar="S",
                   help="keep listening for commands S seconds after the last message "
                        "(default 0)")
    add_kafka_args(parser)


class _ClientLog(logging.Handler):
    """librdkafka's log lines, kept (not printed) so errors can say what the client saw."""

    _THREAD = re.compile(r"^\[thrd:[^\]]*\]:\s*")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: deque[str] = deque(maxlen=20)
        self.logger = logging.getLogger(CLIENT_LOGGER)

    def emit(self, record: logging.LogRecord) -> None:
        args = record.args if isinstance(record.args, tuple) else ()
        text = str(args[-1]) if args else record.getMessage()
        self.lines.append(self._THREAD.sub("", text))

    @property
    def last(self) -> str | None:
        return self.lines[-1] if self.lines else None

    def __enter__(self) -> _ClientLog:
        self._propagate = self.logger.propagate
        self.logger.propagate = False
        self.logger.addHandler(self)
        return self

    def __exit__(self, *exc) -> None:
        self.logger.removeHandler(self)
        self.logger.propagate = self._propagate


class SimulateError(Exception):
    """Settings that cannot work or a broker that cannot be reached: one line, exit 2."""


def main(args: argparse.Namespace) -> int:
    """Run ``twin simulate``; returns the exit code (0 ok, 1 undelivered data, 2 setup)."""
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    with _ClientLog() as client_log:
        try:
            summary = simulate(args, client_log)
        except SimulateError as exc:
            err.print(f"[red]twin simulate: {hints.rewrite(str(exc))}[/red]")
            return 2
        except KeyboardInterrupt:  # before publishing began: nothing to report
            err.print("[yellow]twin simulate: interrupted[/yellow]")
            return 130
    _print_summary(summary, Console(highlight=False))
    if summary["undelivered"]:
        err.print(f"[red]twin simulate: {_undelivered_line(summary)}[/red]")
        return 1
    if summary["command_error"]:
        err.print(f"[red]twin simulate: stopped applying commands: "
                  f"{summary['command_error']}[/red]")
        return 1
    if summary["interrupted"]:
        err.print("[yellow]twin simulate: interrupted[/yellow]")
        return 130
    return 0


def _setup(args: argparse.Namespace, client_log: _ClientLog):
    """Client settings, signing key and a producer that has talked to the broker."""
    from confluent_kafka import KafkaError, KafkaException, Producer

    from pipelines.kafka.config import KafkaConfigError, config_from_args, twin_settings
    from pipelines.kafka.secrets import hmac_key
    from pipelines.kafka.serde import RegistryError, serde_from_args
    from transforms.normalize import VENDORS

    try:
        cfg = config_from_args(args)
        settings = twin_settings(args.kafka_config, args.kafka_overrides)
        serde = serde_from_args(args, settings)
    except (KafkaConfigError, OSError) as exc:
        raise SimulateError(str(exc)) from exc
    try:  # with a registry: register the raw schemas now, failing before any data moves
        for module in VENDORS.values():
            serde.schema_id(module.SCHEMA)
    except RegistryError as exc:
        raise SimulateError(str(exc)) from exc
    secret = None
    if not args.no_actions:
        try:
            secret = hmac_key(args.hmac_key_file, settings)
        except OSError as exc:
            raise SimulateError(f"cannot read the HMAC key ({exc.filename}: {exc.strerror}); "
                                "pass --hmac-key-file, or --no-actions") from exc
        except ValueError as exc:
            raise SimulateError(str(exc)) from exc
    where = cfg["bootstrap.servers"]
    cfg = {**cfg, "logger": client_log.logger}
    producer_cfg = {**PRODUCER_DEFAULTS, **cfg}
    if args.rate is not None and "linger.ms" not in cfg:
        producer_cfg["linger.ms"] = PACED_LINGER_MS
    all_down = threading.Event()

    def on_error(error) -> None:
        if error.code() == KafkaError._ALL_BROKERS_DOWN:
            all_down.set()

    try:
        producer = Producer({**producer_cfg, "error_cb": on_error})
    except KafkaException as exc:  # e.g. an unknown -X property
        raise SimulateError(f"bad Kafka settings: {exc.args[0].str()}") from exc
    t0 = time.monotonic()
    while True:
        try:
            producer.list_topics(timeout=1.0)
            return cfg, secret, producer, where, serde
        except KafkaException as exc:
            producer.poll(0)  # serves the error callback, hands log lines to client_log
            waited = time.monotonic() - t0
            # refused outright for a while: nobody is there. Silence: give it longer.
            if waited >= REACH_TIMEOUT_S or (all_down.is_set() and waited >= REFUSED_S):
                why = client_log.last or exc.args[0].str()
                raise SimulateError(
                    f"cannot reach Kafka at {where} (tried for {waited:.0f} s: {why}); is the "
                    "broker running? (`twin broker start` starts one)") from exc


def simulate(args: argparse.Namespace, client_log: _ClientLog | None = None) -> dict[str, Any]:
    """Publish the fleet and run the command loop; returns the summary.

    Raises
    ------
    SimulateError
        Settings that cannot work or a broker that cannot be reached (exit code 2).
    """
    from confluent_kafka import KafkaException

    from pipelines.kafka.broker import BrokerUnavailable
    from pipelines.kafka.commands import ACTIONS_TOPIC, CommandListener
    from pipelines.kafka.sequences import SequenceFileError
    from pipelines.kafka.serde import redact_url
    from pipelines.kafka.topics import ensure_topics, raw_topics
    from transforms.simulator import Fleet

    if client_log is None:
        client_log = _ClientLog()
    cfg, secret, producer, where, serde = _setup(args, client_log)
    topics = raw_topics() + ([] if args.no_actions else [ACTIONS_TOPIC])
    try:
        ensure_topics(cfg, topics, partitions=args.partitions, timeout_s=REACH_TIMEOUT_S)
    except (BrokerUnavailable, KafkaException) as exc:
        raise SimulateError(f"cannot create topics on {where}: {exc}") from exc

    config = fleet_config_from(args)
    start_ms = config.start_ms
    fleet = Fleet(config)
    truth = fleet.ground_truth()
    planned = sum(truth["messages"].values())
    if args.ground_truth:
        _write_truth(args.ground_truth, truth, fleet)

    listener = None
    if not args.no_actions:
        try:
            listener = CommandListener(
                fleet, cfg, secret, ACTIONS_TOPIC, serde=serde,
                from_beginning=args.actions_from == "beginning", timeout_s=REACH_TIMEOUT_S,
                sequence_file=args.command_state or command_state_path(config),
                max_skew_ms=int(args.clock_skew * 1000),
                max_lag_ms=int(args.max_command_lag * 1000))
        except (BrokerUnavailable, SequenceFileError) as exc:
            raise SimulateError(str(exc)) from exc
        if args.actions_from == "beginning":
            try:
                listener.catch_up(start_ms, CATCH_UP_S)
            except SequenceFileError as exc:
                listener.close()
                raise SimulateError(str(exc)) from exc

    pub = _Publisher(producer, listener, args.rate, generated_until(fleet), serde.reframe)
    t0 = time.perf_counter()
    try:
        pub.run(fleet.messages(), planned)
    except KeyboardInterrupt:
        pub.interrupted = True
    finally:
        pub.finish(_message_timeout_s(cfg) + 15)
    elapsed = time.perf_counter() - t0
    try:
        if listener is not None and args.linger > 0 and not pub.interrupted:
            pub.listen(args.linger)
    except KeyboardInterrupt:
        pub.interrupted = True
    finally:
        if listener is not None:
            listener.close()
    if args.ground_truth:
        _write_truth(args.ground_truth, truth, fleet)
    delivered = pub.delivered.total()
    return {
        "bootstrap_servers": where,
        "schema_registry": redact_url(serde.url) if hasattr(serde, "url") else None,
        "planned": planned,
        "published": pub.produced.total() + pub.refused,
        "delivered": dict(sorted(pub.delivered.items())),
        "defects": dict(sorted(pub.defects.items())),
        "failures": dict(pub.failures.most_common()),
        "undelivered": pub.produced.total() + pub.refused - delivered,
        "interrupted": pub.interrupted,
        "elapsed_s": round(elapsed, 2),
        "messages_per_s": round(delivered / elapsed, 1) if elapsed else None,
        "rate": args.rate,
        "actions": None if listener is None else {
            **listener.tally(), "rejected_reasons": listener.reasons(),
            "accepted_setpoints": [asdict(r) for r in listener.results
                                   if r.status == "accepted"]},
        "command_error": pub.command_error,
        "start_ms": start_ms,
        "last_arrival_ms": pub.arrival_ms,
        "ground_truth": args.ground_truth,
    }


def command_state_path(config) -> Path:
    """The default sequence file of a simulated plant: one per fleet configuration, so a
    restart of the same fleet remembers what it applied and another fleet starts afresh.

    >>> from transforms.simulator import FleetConfig
    >>> command_state_path(FleetConfig(seed=1)) == command_state_path(FleetConfig(seed=1))
    True
    >>> command_state_path(FleetConfig(seed=1)) == command_state_path(FleetConfig(seed=2))
    False
    """
    import hashlib

    from pipelines.kafka.broker import state_dir

    fleet = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()
    return state_dir() / "commands" / f"simulator-{fleet[:16]}.json"


def _message_timeout_s(cfg: dict[str, Any]) -> float:
    try:
        return float(cfg.get("message.timeout.ms", PRODUCER_DEFAULTS["message.timeout.ms"])) / 1e3
    except ValueError:
        return PRODUCER_DEFAULTS["message.timeout.ms"] / 1e3


def _write_truth(path: str, truth: dict[str, Any], fleet) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**truth, "setpoints": fleet.setpoint_log}, indent=1))


def generated_until(fleet) -> Callable[[int], int]:
    """``arrival_ms -> event time`` the fleet has generated samples up to by the time
    :meth:`~transforms.simulator.Fleet.messages` yields a message that arrived then.

    That is the simulator's present: what is generated is the past, and a setpoint can
    only shape what comes after it. The fleet generates whole chunks of
    ``fleet.per_chunk`` samples and yields, after generating chunk ``c``, the messages
    arriving before ``start + (c + 1) * chunk - 1 s``; so a message arriving at ``a``
    comes out while chunk ``(a - start + 1 s) // chunk`` is the newest one, and chunk
    ``c + 1`` (starting at the returned time) is the first a setpoint can still shape.

    >>> from transforms.simulator import Fleet, FleetConfig
    >>> now = generated_until(Fleet(FleetConfig(assets=1, duration_s=3600, start_ms=0)))
    >>> now(0), now(598_999), now(599_000), now(1_500_000)
    (600000, 600000, 1200000, 1800000)
    """
    start, chunk_ms = fleet.config.start_ms, fleet.per_chunk * fleet.interval_ms

    def until(arrival_ms: int) -> int:
        return int(start + ((arrival_ms - start + 1000) // chunk_ms + 1) * chunk_ms)

    return until


class _Publisher:
    """The publishing loop: pacing, delivery accounting and command polls."""

    def __init__(self, producer, listener, rate: float | None,
                 generated_until: Callable[[int], int],
                 reframe: Callable[[bytes], bytes] = lambda value: value) -> None:
        self.producer = producer
        self.reframe = reframe  # local schema ids -> the registry's, when there is one
        self.listener = listener
        self.rate = rate
        self.generated_until = generated_until
        self.produced: Counter = Counter()
        self.delivered: Counter = Counter()
        self.defects: Counter = Counter()
        self.failures: Counter = Counter()
        self.refused = 0  # messages the client refused before sending (never queued)
        self.arrival_ms: int | None = None  # of the last message handed to the client
        self.interrupted = False
        self.command_error: str | None = None  # the command loop had to stop: why

    @property
    def now_event_ms(self) -> int | None:
        """The simulator's present (None: nothing generated yet, any time goes)."""
        return None if self.arrival_ms is None else self.generated_until(self.arrival_ms)

    def _report(self, err, msg) -> None:
        if err is not None:
            self.failures[f"{err.name()}: {err.str()}"] += 1
        else:
            self.delivered[msg.topic()] += 1

    def _poll_commands(self, timeout: float = 0.0) -> None:
        from pipelines.kafka.sequences import SequenceFileError

        if self.listener is not None:
            now = self.now_event_ms
            try:
                self.listener.poll(now if now is not None else 0, timeout=timeout)
            except SequenceFileError as exc:  # cannot remember what it applied: stop applying
                self.command_error = str(exc)
                self.listener = None

    def _poll(self) -> None:
        self.producer.poll(0)
        self._poll_commands()

    def _wait_until(self, due: float) -> None:
        while (left := due - time.perf_counter()) > 0:
            time.sleep(min(left, PACE_SLICE_S))
            self._poll()

    def run(self, messages, planned: int) -> None:
        from rich.progress import Progress

        t0 = time.perf_counter()
        with Progress(transient=True, disable=not Console().is_terminal) as bar:
            task = bar.add_task("publishing", total=planned)
            for i, m in enumerate(messages):
                if self.failures:  # the broker refused data: stop, report, exit non-zero
                    break
                self.arrival_ms = m.arrival_ms  # its chunk is generated: the present moved
                if self.rate is not None:
                    self._wait_until(t0 + i / self.rate)
                if not self._produce(m):
                    break
                self.produced[m.topic] += 1
                self.defects[m.defect] += 1
                if self.rate is not None or i % BATCH == BATCH - 1:
                    self._poll()
                    bar.update(task, completed=i + 1)

    def _produce(self, m) -> bool:
        """Hand ``m`` to the client (waiting for room); False if the client refused it."""
        from confluent_kafka import KafkaException

        while True:
            try:
                self.producer.produce(m.topic, self.reframe(m.value), m.key,
                                      timestamp=m.arrival_ms,
                                      on_delivery=self._report)
                return True
            except BufferError:  # local queue full: let deliveries drain it
                self.producer.poll(0.05)
            except KafkaException as exc:  # refused locally, e.g. larger than allowed
                error = exc.args[0]
                self.refused += 1
                self.failures[f"{error.name()}: {error.str()} ({len(m.value)} bytes)"] += 1
                return False

    def finish(self, timeout_s: float) -> None:
        """Wait for every delivery report (or ``timeout_s``), still hearing commands."""
        deadline = time.perf_counter() + timeout_s
        while len(self.producer) and time.perf_counter() < deadline:
            self.producer.flush(min(1.0, max(deadline - time.perf_counter(), 0)))
            self._poll_commands()

    def listen(self, seconds: float) -> None:
        deadline = time.perf_counter() + seconds
        while (left := deadline - time.perf_counter()) > 0:
            self._poll_commands(timeout=min(left, 0.2))


def _undelivered_line(s: dict[str, Any]) -> str:
    reasons = "; ".join(f"{n} x {why}" for why, n in s["failures"].items()) or \
        "no delivery report before the timeout"
    hint = ""
    if "MSG_SIZE_TOO_LARGE" in reasons:
        hint = ("; the simulator's oversize defect needs max.message.bytes above 1 MiB on "
                "the raw topics (or -X message.max.bytes=...), or pass --malformed-rate 0")
    return (f"{s['undelivered']} of {s['published']} messages were not delivered to "
            f"{s['bootstrap_servers']} ({reasons}); stopped after {s['published']} of "
            f"{s['planned']} messages{hint}")


def _defects_line(defects: dict[str, int]) -> str:
    """``clean 47547, duplicate 324, ..., malformed 397 (41 kinds)``: one line, not 41."""
    malformed = {k: n for k, n in defects.items() if k.startswith("malformed:")}
    parts = [f"{k} {n}" for k, n in defects.items() if k not in malformed]
    if malformed:
        parts.append(f"malformed {sum(malformed.values())} ({len(malformed)} kinds)")
    return ", ".join(parts) or "-"


def _print_summary(s: dict[str, Any], console: Console) -> None:
    table = Table(title="twin simulate", show_header=False)
    table.add_row("messages", f"{sum(s['delivered'].values())} delivered of {s['planned']}")
    for topic, n in s["delivered"].items():
        table.add_row(f"  {topic}", str(n))
    table.add_row("defects", _defects_line(s["defects"]))
    pace = f"paced to {s['rate']:g} msg/s" if s["rate"] else "as fast as possible"
    table.add_row("elapsed", f"{s['elapsed_s']} s ({s['messages_per_s']} msg/s, {pace})")
    a = s["actions"]
    if a is None:
        table.add_row("setpoints", "not listening (--no-actions)")
    else:
        why = ", ".join(f"{k} {v}" for k, v in a["rejected_reasons"].items())
        table.add_row("setpoints", f"{a['accepted']} accepted, {a['rejected']} rejected"
                      + (f" ({why})" if why else "") + f", {a['ignored']} other actions ignored")
        shown = a["accepted_setpoints"][-SHOWN_SETPOINTS:]
        for r in shown:
            table.add_row(f"  {r['asset_id']}", f"{r['detail']} (action {r['action_id']})")
    if s["ground_truth"]:
        table.add_row("ground truth", s["ground_truth"])
    console.print(table)

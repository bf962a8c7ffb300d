"""``twin tail TOPIC...``: watch what the twin (or anyone) writes to Kafka, decoded.

Why a tool of our own instead of ``kcat``: our values are Confluent-framed Avro whose
schema ids are either the repo's local ids or a schema registry's, timestamps are
``timestamp-millis`` and dead letters carry raw bytes, so a generic consumer shows
gibberish. ``twin tail`` decodes every message with :mod:`schemas` (or the registry, with
``--schema-registry-url``), shows the fields that matter per schema, and checks the
signature of actions (``--hmac-key-file``, or the key ``twin run`` would sign with): the
version-2 signed command of :mod:`transforms.signing`, whose stamp (issue time, expiry,
sequence) it shows, and whether the command has expired by now.

- By default only messages that arrive after it starts are shown; ``--from-beginning``
  reads each partition from its start. It reads without a consumer group (it assigns the
  partitions itself), so it commits nothing and never disturbs real consumers.
- ``--json`` prints one JSON object per message (``topic``, ``partition``, ``offset``,
  ``timestamp``, ``key``, ``schema``, ``record``; bytes as base64, ``timestamp-millis`` as
  epoch ms), for ``jq`` and scripts. Messages that do not decode are printed with
  ``error`` (``reason``, ``detail``) instead of ``record``: tail never stops on bad data.
- It stops after ``--max N`` messages, after ``--timeout S`` seconds without any, or on
  Ctrl-C. An unreachable broker or registry is one clear line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import math
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from rich.console import Console
from rich.markup import escape

from jobs import hints
from pipelines.kafka.broker import BrokerUnavailable
from pipelines.kafka.config import (
    KafkaConfigError,
    add_kafka_args,
    config_from_args,
    twin_settings,
)
from pipelines.kafka.secrets import ENV as HMAC_ENV
from pipelines.kafka.secrets import hmac_key
from pipelines.kafka.serde import RegistryError, redact_url, serde_from_args
from transforms import signing
from transforms.errors import InvalidReading

ACTION_SCHEMA = "twin/action.v1"
CONNECT_TIMEOUT_S = 8.0  # how long an unreachable broker is given before exit code 2
POLL_S = 0.25
MAX_BYTES = 64 << 20  # a viewer: show big messages rather than refuse them
RAW_PREVIEW_BYTES = 1024  # of undecodable values, in --json (base64)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topics", nargs="+", metavar="TOPIC",
                        help="topic(s) to read, e.g. twin.actions twin.predictions")
    add_kafka_args(parser)
    parser.add_argument("--from-beginning", action="store_true",
                        help="read every partition from its start (default: only new messages)")
    parser.add_argument("--max", type=int, metavar="N", help="stop after N messages")
    parser.add_argument("--timeout", type=float, metavar="S",
                        help="stop after S seconds without a message (default: until Ctrl-C)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per message (bytes as base64, times as epoch ms)")
    parser.add_argument("--hmac-key-file", metavar="FILE",
                        help="check the signatures of action messages with this key (also: "
                             f"the twin.hmac.key setting, ${HMAC_ENV}, or this user's key "
                             "that twin run / simulate created)")


# -- decoding and presentation --------------------------------------------------------------

def jsonable(value: Any) -> Any:
    """A decoded Avro value as plain JSON: epoch ms for datetimes, base64 for bytes."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return (value - _EPOCH) // timedelta(milliseconds=1)
    if isinstance(value, bytes | bytearray):
        return base64.b64encode(value).decode("ascii")
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": JSON has no such numbers
    return value


def signature_status(secret: bytes | None, topic: str, key: bytes | None, value: bytes,
                     headers) -> str:
    """``valid``, ``invalid`` (also: unreadable stamp), ``missing``, ``legacy`` (only a
    version-1 signature, which receivers refuse), or ``unverified`` (signed, no key)."""
    verdict = signing.verify_headers(secret or b"", topic, key, value, headers)
    if verdict.status in ("missing", "legacy"):
        return verdict.status
    if verdict.status == "malformed":
        return "invalid"
    if secret is None:
        return "unverified"
    return verdict.status


def command_stamp(secret: bytes, topic: str, key: bytes | None, value: bytes, headers,
                  now_ms: int | None = None) -> dict[str, Any] | None:
    """The verified stamp of a signed command (None if it does not verify), with whether
    it has ``expired`` at ``now_ms`` (default: now)."""
    verdict = signing.verify_headers(secret, topic, key, value, headers)
    if verdict.status != "valid":
        return None
    now = signing.wall_clock_ms() if now_ms is None else now_ms
    st = verdict.stamp
    return {"issued_at_ms": st.issued_at_ms, "expires_at_ms": st.expires_at_ms,
            "seq": st.seq, "expired": now > st.expires_at_ms}


def describe(msg, serde, secret: bytes | None = None) -> dict[str, Any]:
    """Everything tail shows about one Kafka message, as a JSON-ready dict."""
    ts_type, ts = msg.timestamp()
    out: dict[str, Any] = {"topic": msg.topic(), "partition": msg.partition(),
                           "offset": msg.offset(), "timestamp": ts if ts_type else None}
    key = msg.key()
    try:
        out["key"] = key.decode("utf-8") if key is not None else None
    except UnicodeDecodeError:
        out["key"], out["key_b64"] = None, base64.b64encode(key).decode("ascii")
    value = msg.value()
    if value is None:
        out["tombstone"] = True
        return out
    try:
        name, record = serde.decode(value, MAX_BYTES)
    except InvalidReading as exc:
        out["error"] = {"reason": exc.reason, "detail": exc.detail}
        out["size"] = len(value)
        out["value_b64"] = base64.b64encode(value[:RAW_PREVIEW_BYTES]).decode("ascii")
        return out
    out["schema"] = name
    out["record"] = jsonable(record)
    if name == ACTION_SCHEMA:
        out["signature"] = signature_status(secret, msg.topic(), key, value, msg.headers())
        if out["signature"] == "valid":
            out["command"] = command_stamp(secret, msg.topic(), key, value, msg.headers())
    return out


def _when(ms: int | None) -> str:
    if ms is None:
        return "-"
    t = _EPOCH + timedelta(milliseconds=ms)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _num(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else format(x, fmt)


def _duration(s: float | None) -> str:
    if s is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.1f}{unit}"
    return f"{s:.0f}s"


def summary(name: str, r: dict[str, Any], signature: str | None = None,
            command: dict[str, Any] | None = None) -> str:
    """The most useful fields of a record of schema ``name`` (as :func:`jsonable` makes it),
    as one line of rich markup."""
    e = escape
    if name == "twin/prediction.v1":
        flags = "".join([" [bold red]ANOMALY[/]" if r["is_anomaly"] else "",
                         " [yellow]drift[/]" if r["drift"] else "",
                         " [dim]warming up[/]" if r["warming_up"] else ""])
        top = ", ".join((r.get("contributors") or [])[:3])
        return (f"[cyan]prediction[/] {e(r['asset_id'])} window→{_when(r['window_end_ms'])} "
                f"score={_num(r['anomaly_score'])} health={_num(r['health_index'], '.2f')} "
                f"forecast={_num(r['forecast_health'], '.2f')}"
                f"@{_duration(r['forecast_horizon_s'])} rul={_duration(r['rul_s'])}{flags}"
                + (f" [dim]contributors: {e(top)}[/]" if top else ""))
    if name == ACTION_SCHEMA:
        color = {"critical": "red", "warning": "yellow"}.get(r["severity"], "green")
        text = (f"[magenta]action[/] [bold]{e(r['kind'])}[/] [{color}]{e(r['severity'])}[/] "
                f"{e(r['asset_id'])}: {e(r['reason'])}")
        if r.get("setpoint_name"):
            text += (f" {e(r['setpoint_name'])} {_num(r.get('setpoint_previous'), 'g')}"
                     f"→{_num(r.get('setpoint_value'), 'g')}")
        if r.get("dry_run"):
            text += " [dim](dry run)[/]"
        if signature is not None:
            sig_color = {"valid": "green", "invalid": "bold red", "missing": "red",
                         "legacy": "red"}.get(signature, "dim")
            text += f" [{sig_color}]signature {signature}[/]"
            if command is not None:
                text += (f" [dim]seq {command['seq']}, "
                         f"{'[yellow]expired[/yellow]' if command['expired'] else 'valid'} "
                         f"until {_when(command['expires_at_ms'])}[/]")
        return text
    if name == "twin/state.v1":
        alert = "[bold red]OPEN[/]" if r["alert_open"] else "closed"
        sp = ", ".join(f"{e(k)}={v:g}" for k, v in (r.get("setpoints") or {}).items())
        return (f"[blue]state[/] {e(r['asset_id'])} ({e(r['asset_type'])}) "
                f"health={_num(r['health_index'], '.2f')} score={_num(r['anomaly_score'])} "
                f"alert={alert} windows={r['windows_seen']}" + (f" setpoints: {sp}" if sp else ""))
    if name == "twin/deadletter.v1":
        kept = len(base64.b64decode(r["payload"]))  # records here are JSON-ready (base64)
        return (f"[red]dead letter[/] [bold]{e(r['reason'])}[/] at {e(r['stage'])} from "
                f"{e(r['source'])}: {e(r['detail'][:160])} ({kept} bytes kept)")
    if name == "twin/reading.v1":
        return (f"reading {e(r['asset_id'])} ({e(r['vendor'])}) {len(r['values'])} values "
                f"at {_when(r['ts_ms'])}")
    if name == "twin/features.v1":
        return (f"features {e(r['asset_id'])} {_when(r['window_start_ms'])}"
                f"..{_when(r['window_end_ms'])} count={r['count']}")
    shown = dict(list(r.items())[:3])
    return f"{e(name)} " + e(json.dumps(shown, ensure_ascii=False)[:200])


def human_line(d: dict[str, Any]) -> str:
    """One terminal line (rich markup) for a :func:`describe` result."""
    where = f"[dim]{escape(d['topic'])}/{d['partition']}@{d['offset']}[/]"
    head = f"{where} {_when(d['timestamp'])}"
    if d.get("key") is not None:
        head += f" key={escape(d['key'])}"
    elif d.get("key_b64"):
        head += f" key=base64:{d['key_b64']}"
    if d.get("tombstone"):
        return f"{head} [dim]tombstone (no value)[/]"
    if "error" in d:
        err = d["error"]
        return (f"{head} [bold red]undecodable[/] [red]{escape(err['reason'])}[/]: "
                f"{escape(err['detail'])} ({d['size']} bytes)")
    return f"{head} {summary(d['schema'], d['record'], d.get('signature'), d.get('command'))}"


# -- Kafka ----------------------------------------------------------------------------------

def _quiet_logger() -> logging.Logger:
    """librdkafka logs (connection refused, retries...) go here, not onto the terminal."""
    log = logging.getLogger("twin.tail.librdkafka")
    if not log.handlers:
        log.addHandler(logging.NullHandler())
        log.propagate = False
    return log


def open_consumer(config: dict[str, Any], topics: list[str], from_beginning: bool):
    """A consumer assigned to every partition of ``topics``, at their start or their end."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

    where = config.get("bootstrap.servers")
    consumer = Consumer({
        **config,
        "group.id": config.get("group.id", f"twin-tail-{os.getpid()}"),
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "enable.partition.eof": False,
        "auto.offset.reset": "earliest",
        "logger": _quiet_logger(),
    })
    try:
        try:
            metadata = consumer.list_topics(timeout=CONNECT_TIMEOUT_S)
        except KafkaException as exc:
            raise BrokerUnavailable(
                f"cannot reach Kafka at {where} ({exc.args[0].str()})") from exc
        missing = [t for t in topics if t not in metadata.topics]
        if missing:
            known = sorted(t for t in metadata.topics if not t.startswith("__"))
            raise KafkaConfigError(
                f"no topic {', '.join(missing)} on {where} (topics there: "
                f"{', '.join(known) or 'none'})")
        assignment = []
        for topic in dict.fromkeys(topics):
            for p in sorted(metadata.topics[topic].partitions):
                if from_beginning:
                    offset = OFFSET_BEGINNING
                else:  # the end now: everything produced from here on is shown
                    _, offset = consumer.get_watermark_offsets(
                        TopicPartition(topic, p), timeout=CONNECT_TIMEOUT_S)
                assignment.append(TopicPartition(topic, p, offset))
        consumer.assign(assignment)
    except BaseException:
        consumer.close()
        raise
    return consumer


def _hmac_secret(args: argparse.Namespace, settings: dict[str, str]) -> bytes | None:
    """The signing key, when one is configured or this user has one (tail never creates
    one)."""
    return hmac_key(args.hmac_key_file, settings, create=False)


def main(args: argparse.Namespace) -> int:
    from confluent_kafka import KafkaError, KafkaException

    err = Console(stderr=True, highlight=False, soft_wrap=True)

    def fail(text: str) -> int:
        err.print(f"[red]twin tail: {escape(hints.rewrite(text))}[/red]")
        return 2

    if args.max is not None and args.max < 1:
        return fail("--max must be at least 1")
    try:
        config = config_from_args(args)
        settings = twin_settings(args.kafka_config, args.kafka_overrides)
        serde = serde_from_args(args, settings)
        registry_url = getattr(serde, "url", None)
        secret = _hmac_secret(args, settings)
    except (KafkaConfigError, OSError, ValueError) as exc:
        return fail(str(exc))
    try:
        consumer = open_consumer(config, args.topics, args.from_beginning)
    except (BrokerUnavailable, KafkaConfigError) as exc:
        return fail(str(exc))
    except KafkaException as exc:
        return fail(f"Kafka at {config.get('bootstrap.servers')}: {exc.args[0].str()}")

    out = Console(highlight=False, soft_wrap=True) if not args.json else None
    where = ", ".join(args.topics)
    err.print(f"[dim]twin tail: {escape(where)} from "
              f"{'the beginning' if args.from_beginning else 'now'}"
              + (f", schema registry {escape(redact_url(registry_url))}" if registry_url else "")
              + "[/dim]")
    seen, last, warned = 0, time.monotonic(), False
    try:
        while args.max is None or seen < args.max:
            msg = consumer.poll(POLL_S)
            if msg is None:
                if args.timeout is not None and time.monotonic() - last >= args.timeout:
                    break
                continue
            if msg.error() is not None:
                code = msg.error().code()
                if code == KafkaError._PARTITION_EOF:
                    continue
                if msg.error().fatal():
                    return fail(f"Kafka: {msg.error().str()}")
                if not warned:  # e.g. the broker went away: librdkafka keeps retrying
                    err.print(f"[yellow]twin tail: {escape(msg.error().str())} "
                              "(retrying)[/yellow]")
                    warned = True
                continue
            warned = False
            last = time.monotonic()
            seen += 1
            d = describe(msg, serde, secret)
            if out is None:
                sys.stdout.write(json.dumps(d, ensure_ascii=False) + "\n")
                sys.stdout.flush()
            else:
                out.print(human_line(d))
    except KeyboardInterrupt:
        pass
    except RegistryError as exc:
        return fail(str(exc))
    finally:
        consumer.close()
        close = getattr(serde, "close", None)
        if close is not None:
            close()
    err.print(f"[dim]twin tail: {seen} message{'s' if seen != 1 else ''}[/dim]")
    return 0

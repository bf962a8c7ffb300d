"""Kafka client settings: bootstrap servers, a properties file, ``-X key=value`` flags.

Any Kafka works the same way: TLS, SASL and the rest are librdkafka properties
(``security.protocol``, ``sasl.mechanism``, ``sasl.username``, ``sasl.password``,
``ssl.ca.location``, ...) given in a Java-style properties file (``--kafka-config``) or
as repeated ``-X key=value`` flags (later wins).

Secrets never go on a command line, where ``ps``, ``/proc`` and shell history show them to
others: ``-X`` refuses secret settings (:func:`is_secret`) with a message saying to put
them in the ``--kafka-config`` file (mode 0600), the way Kafka's own tools take
``--command-config FILE``. Secrets are never printed either: use :func:`redact` for
anything that shows a config; errors about a file's lines never quote the line.

>>> cfg = client_config("127.0.0.1:9092", overrides=["acks=all"])
>>> cfg["bootstrap.servers"], cfg["acks"]
('127.0.0.1:9092', 'all')
>>> redact({"sasl.password": "hunter2", "sasl.username": "twin"})
{'sasl.password': '***', 'sasl.username': 'twin'}
>>> try:
...     parse_overrides(["sasl.password=hunter2"])
... except KafkaConfigError as exc:
...     print(exc)
-X sasl.password=... would show the secret to anyone who can list processes: put \
sasl.password in the --kafka-config FILE (mode 0600) instead
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

# A setting is secret when a part of its name (split at . _ -) is one of these words...
SECRET_WORDS = frozenset({"password", "passwd", "pwd", "secret", "token", "credentials",
                          "credential", "private", "hmac", "key", "apikey", "passphrase",
                          "jaas", "userinfo"})
# ... or its name contains one of these (``basic.auth.user.info``: "user:password")...
SECRET_PHRASES = ("user.info", "oauthbearer.config")
# ... unless the last part says it names where a secret is, not the secret itself.
NOT_SECRET_LAST = frozenset({"location", "locations", "url", "source", "endpoint", "type",
                             "mechanism", "mechanisms", "name", "algorithm", "method",
                             "ms", "enable", "refresh"})
DEFAULT_BOOTSTRAP_ENV = "TWIN_BOOTSTRAP_SERVERS"
# Keys of ours (not librdkafka's) that may appear in the same file.
TWIN_KEYS = ("twin.hmac.key", "twin.schema.registry.url")


# librdkafka's own log lines go to this Python logger instead of stderr: silent unless
# logging is configured (Beam configures it in its workers), and with the storm of one
# "Connection refused" per retry and client while a broker is down cut to one line a
# minute per kind (StormFilter); our own errors say what failed in one line.
CLIENT_LOGGER = "twinstream.kafka.client"
REACH_TIMEOUT_S = 3.0  # how long config_from_args waits for a bootstrap server to answer


class StormFilter(logging.Filter):
    """Lets one log line of a kind through per ``every_s`` seconds; the next one that
    passes says how many were held back.

    A line's *kind* is its text without librdkafka's thread prefix, the broker it names
    and its numbers: every client's "Connect to ipv4#127.0.0.1:9092 failed: Connection
    refused (after 0ms in state CONNECT)" is one kind, which a dead broker otherwise
    repeats for every client about once a second while a broker is down.

    >>> f = StormFilter(every_s=60)
    >>> def line(port):
    ...     return logging.LogRecord("k", logging.ERROR, "", 0, "%s [%s] %s", (
    ...         "FAIL", "rdkafka#consumer-1", f"[thrd:b]: 127.0.0.1:{port}/bootstrap: Connect "
    ...         f"to ipv4#127.0.0.1:{port} failed: Connection refused (after 0ms)"), None)
    >>> [f.filter(line(p)) for p in (9092, 9092, 9093)]
    [True, False, False]
    """

    _THREAD = re.compile(r"\[thrd:[^\]]*\]:\s*")
    _WHO = re.compile(r"^(?:\S+: )+")  # "127.0.0.1:9092/1: ", "GroupCoordinator: ..."
    _REPEATS = re.compile(r", \d+ identical error\(s\) suppressed")
    _NUMBER = re.compile(r"\d+")

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._lock = threading.Lock()
        self._seen: dict[str, list[float | int]] = {}  # kind -> [last shown, held back]

    def kind(self, record: logging.LogRecord) -> str:
        args = record.args if isinstance(record.args, tuple) else ()
        text = str(args[-1]) if args else str(record.msg)
        facility = str(args[0]) if len(args) > 1 else ""
        text = self._REPEATS.sub("", self._WHO.sub("", self._THREAD.sub("", text)))
        return f"{record.levelno} {facility} {self._NUMBER.sub('#', text)}"

    def filter(self, record: logging.LogRecord) -> bool:
        kind = self.kind(record)
        now = time.monotonic()
        with self._lock:
            seen = self._seen.get(kind)
            if seen is not None and now - seen[0] < self.every_s:
                seen[1] += 1
                return False
            held = int(seen[1]) if seen is not None else 0
            if len(self._seen) > 1000:  # bounded: kinds are few, but never trust that
                self._seen.clear()
            self._seen[kind] = [now, 0]
        if held:
            record.msg = f"{record.msg} (%d more like it in the last %g s not shown)"
            record.args = (*(record.args if isinstance(record.args, tuple) else ()),
                           held, self.every_s)
        return True


_client_logger = logging.getLogger(CLIENT_LOGGER)
_client_logger.addHandler(logging.NullHandler())
if not any(isinstance(f, StormFilter) for f in _client_logger.filters):  # once, on reloads
    _client_logger.addFilter(StormFilter())


def with_logger(config: dict[str, Any]) -> dict[str, Any]:
    """``config`` with librdkafka's log routed to :data:`CLIENT_LOGGER` (call it where a
    client is created: a logger cannot travel inside a pickled config)."""
    return {"logger": logging.getLogger(CLIENT_LOGGER), **config}


class KafkaConfigError(ValueError):
    """A Kafka setting that cannot be used, with what to do about it."""


def read_properties(path: str | Path) -> dict[str, str]:
    """``key=value`` lines (``#``/``!`` comments, blank lines ignored) of a properties file."""
    p = Path(path)
    if not p.is_file():
        raise KafkaConfigError(f"Kafka config file {p} does not exist")
    out: dict[str, str] = {}
    for n, raw in enumerate(p.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line[0] in "#!":
            continue
        key, sep, value = line.partition("=")
        if not sep:
            key, sep, value = line.partition(":")
        if not sep or not key.strip():  # the line is not quoted: it may hold a secret
            raise KafkaConfigError(f"{p}:{n}: expected key=value")
        out[key.strip()] = value.strip()
    return out


def parse_overrides(items: Iterable[str]) -> dict[str, str]:
    """``-X key=value`` flags as a dict; secret settings are refused (they would be visible
    in the process list), and values are never quoted in errors."""
    out: dict[str, str] = {}
    for n, item in enumerate(items, 1):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():  # not quoted: it may be a secret typed wrong
            raise KafkaConfigError(f"-X expects key=value (-X number {n} has "
                                   + ("no '=')" if not sep else "no key)"))
        key = key.strip()
        if is_secret(key):
            raise KafkaConfigError(
                f"-X {key}=... would show the secret to anyone who can list processes: put "
                f"{key} in the --kafka-config FILE (mode 0600) instead"
                + (" (or use --hmac-key-file FILE or $TWIN_HMAC_KEY)"
                   if key == "twin.hmac.key" else ""))
        out[key] = value.strip()
    return out


def client_config(
    bootstrap_servers: str | None = None,
    config_file: str | Path | None = None,
    overrides: Iterable[str] = (),
) -> dict[str, Any]:
    """librdkafka settings from (in increasing precedence) env, file, flags, bootstrap.

    ``twin.*`` keys are kept out of the result (see :func:`twin_settings`).
    """
    cfg: dict[str, Any] = {}
    if os.environ.get(DEFAULT_BOOTSTRAP_ENV):
        cfg["bootstrap.servers"] = os.environ[DEFAULT_BOOTSTRAP_ENV]
    if config_file:
        cfg.update(read_properties(config_file))
    cfg.update(parse_overrides(overrides))
    if bootstrap_servers:
        cfg["bootstrap.servers"] = bootstrap_servers
    if not cfg.get("bootstrap.servers"):
        raise KafkaConfigError(
            "no Kafka bootstrap servers: pass --bootstrap-servers HOST:PORT (or start the "
            "embedded broker with `twin broker start` and use the address it prints)")
    return {k: v for k, v in cfg.items() if not k.startswith("twin.")}


def twin_settings(config_file: str | Path | None = None,
                  overrides: Iterable[str] = ()) -> dict[str, str]:
    """Our own ``twin.*`` settings from the same file and flags (e.g. ``twin.hmac.key``)."""
    cfg: dict[str, str] = {}
    if config_file:
        cfg.update(read_properties(config_file))
    cfg.update(parse_overrides(overrides))
    return {k: v for k, v in cfg.items() if k.startswith("twin.")}


def is_secret(key: str) -> bool:
    """Whether setting ``key`` holds a secret (password, key, token, credentials...).

    >>> secret = ("sasl.password", "ssl.key.password", "ssl.key.pem", "twin.hmac.key",
    ...     "sasl.oauthbearer.client.secret", "twin.schema.registry.basic.auth.user.info")
    >>> plain = ("sasl.username", "ssl.key.location", "ssl.ca.location",
    ...     "security.protocol", "sasl.oauthbearer.token.endpoint.url", "acks")
    >>> all(map(is_secret, secret)), any(map(is_secret, plain))
    (True, False)
    """
    k = key.strip().lower()
    words = [w for w in re.split(r"[._\-]", k) if w]
    if not words or words[-1] in NOT_SECRET_LAST:
        return False
    return bool(SECRET_WORDS.intersection(words)) or any(p in k for p in SECRET_PHRASES) \
        or k.endswith("key.pem")


def redact(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy safe to print or log: secret values replaced by ``***``."""
    return {k: ("***" if is_secret(k) and v not in (None, "") else v) for k, v in cfg.items()}


def add_kafka_args(parser, required: bool = False) -> None:
    """``--bootstrap-servers``, ``--kafka-config FILE`` and repeated ``-X key=value``."""
    g = parser.add_argument_group("kafka")
    g.add_argument("--bootstrap-servers", required=required,
                   help="Kafka bootstrap servers, e.g. 127.0.0.1:9092 "
                        f"(default: ${DEFAULT_BOOTSTRAP_ENV})")
    g.add_argument("--kafka-config", metavar="FILE",
                   help="properties file of librdkafka settings (TLS, SASL, ...) and "
                        "twin.* settings such as twin.hmac.key")
    g.add_argument("-X", dest="kafka_overrides", action="append", default=[],
                   metavar="KEY=VALUE", help="one librdkafka or twin.* setting (repeatable)")
    g.add_argument("--schema-registry-url", metavar="URL",
                   help="frame Avro with a Confluent schema registry's ids (default: the "
                        "twin.schema.registry.url setting, else the repo's local ids; "
                        "every command on the same topics must agree)")


def bootstrap_addresses(bootstrap_servers: str) -> list[tuple[str, int]]:
    """``(host, port)`` of each bootstrap server (``host:port``, ``[v6]:port``, with or
    without a ``PROTOCOL://`` prefix; port 9092 when absent).

    >>> bootstrap_addresses("SSL://k1.example:9093, k2.example,[::1]:19092")
    [('k1.example', 9093), ('k2.example', 9092), ('::1', 19092)]
    """
    out: list[tuple[str, int]] = []
    for item in bootstrap_servers.split(","):
        item = item.strip().rpartition("://")[2]
        if not item:
            continue
        if item.startswith("["):
            host, _, rest = item[1:].partition("]")
            port = rest.lstrip(":")
        else:
            host, sep, port = item.rpartition(":")
            if not sep:
                host, port = item, ""
        try:
            out.append((host, int(port) if port else 9092))
        except ValueError:
            raise KafkaConfigError(
                f"bad bootstrap server {item!r} (expected host:port)") from None
    return out


def check_reachable(config: Mapping[str, Any], timeout_s: float = REACH_TIMEOUT_S) -> None:
    """Return once one bootstrap server of ``config`` accepts a TCP connection, or raise
    :class:`~pipelines.kafka.broker.BrokerUnreachable` (an ``OSError``) naming each one's
    error, within about ``timeout_s``.

    Commands call this once, before they create Kafka clients: a client against a broker
    that is not there retries for its whole timeout and logs every attempt; this says so
    at once, in one line."""
    from pipelines.kafka.broker import BrokerUnreachable

    where = str(config.get("bootstrap.servers") or "")
    addresses = bootstrap_addresses(where)
    deadline = time.monotonic() + timeout_s
    errors: list[str] = []
    for host, port in addresses:
        left = max(deadline - time.monotonic(), 0.2)
        try:
            socket.create_connection((host, port), timeout=left).close()
            return
        except OSError as exc:
            why = exc.strerror or str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                why = f"no answer in {left:.1f} s"
            errors.append(f"{host}:{port}: {why}")
    raise BrokerUnreachable(f"cannot reach Kafka at {where} ({'; '.join(errors)}); is the "
                            "broker running? (`twin broker start` starts one)")


def config_from_args(args, reach_timeout_s: float | None = REACH_TIMEOUT_S) -> dict[str, Any]:
    """Client settings from a command's flags, once a bootstrap server answers
    (:func:`check_reachable`; ``reach_timeout_s`` ``None``: not checked)."""
    cfg = client_config(args.bootstrap_servers, args.kafka_config, args.kafka_overrides)
    if reach_timeout_s is not None:
        check_reachable(cfg, reach_timeout_s)
    return cfg

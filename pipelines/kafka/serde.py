"""Avro on the wire: Confluent framing (magic 0, 4-byte schema id, Avro body).

:class:`LocalSerde` uses the ids of :mod:`schemas` (a CRC of each schema's name, stable
across runs and machines), which is what runs without a schema registry use.

:class:`RegistrySerde` (``--schema-registry-url``) speaks to a Confluent-compatible schema
registry instead, so that other tools (Kafka Connect, ksqlDB, Flink SQL, any Confluent
deserializer) can read our topics without this repo: it registers the same ``.avsc``
files under RecordNameStrategy subjects (``<namespace>.<name>``, e.g.
``twin.prediction.Prediction``) and frames messages with the ids the registry hands out.
Reading looks each id up in the registry and maps the writer schema back to one of ours.

Two kinds of failure are kept apart on purpose:

- the *message* is bad (empty, oversize, no wire header, an id nobody registered, a body
  that does not parse): :class:`~transforms.errors.InvalidReading` with the same reason
  codes as :func:`schemas.wire.decode`, which pipelines route to dead letters;
- the *registry* is down, refuses us, or answers 5xx: :class:`RegistryUnavailable` /
  :class:`RegistryError`. Those are not the data's fault, so nothing may be dead-lettered
  because of them: callers stop (or let the runner retry) instead.

Registry client settings other than the URL (``basic.auth.user.info``,
``ssl.ca.location``, ``timeout``, ...) can be given as ``twin.schema.registry.<setting>``
in the Kafka config file or as ``-X`` flags; see :func:`registry_conf`.

>>> make_serde(None).__class__.__name__
'LocalSerde'
>>> registry_conf({"twin.schema.registry.url": "http://r:8081",
...                "twin.schema.registry.basic.auth.user.info": "u:p", "twin.hmac.key": "k"})
{'basic.auth.user.info': 'u:p'}
"""

from __future__ import annotations

import io
import json
import threading
from collections import OrderedDict
from functools import cache
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import fastavro
from fastavro.schema import to_parsing_canonical_form

import schemas
from schemas import wire
from transforms.errors import InvalidReading

REGISTRY_PREFIX = "twin.schema.registry."
# Ids the registry does not know are remembered (garbage messages carry random ids; asking
# the registry about each again would hammer it), but only this many.
NEGATIVE_CACHE_SIZE = 10_000
DEFAULT_TIMEOUT_S = 10.0  # the client's own default is no timeout at all


class RegistryError(RuntimeError):
    """The schema registry refused or failed a request (not the message's fault)."""


class RegistryUnavailable(RegistryError):
    """The schema registry cannot be reached or answers with server errors."""


class LocalSerde:
    """Encode/decode with the repo's own schema ids; no network."""

    def schema_id(self, name: str) -> int:
        return schemas.schema_id(name)

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        return wire.encode(name, record)

    def decode(self, data: bytes, max_bytes: int = wire.DEFAULT_MAX_BYTES
               ) -> tuple[str, dict[str, Any]]:
        return wire.decode(data, max_bytes=max_bytes)

    def reframe(self, data: bytes) -> bytes:
        """``data`` (framed with the repo's ids) as this serde frames it: unchanged."""
        return data


def full_name(schema: dict[str, Any]) -> str:
    """``<namespace>.<name>`` of a (raw or parsed) named Avro schema."""
    name = schema["name"]
    if "." in name or not schema.get("namespace"):
        return name
    return f"{schema['namespace']}.{name}"


def subject_for(name: str) -> str:
    """The RecordNameStrategy subject of our schema ``name``: its record's full name."""
    return full_name(schemas.raw(name))


@cache
def _ours() -> tuple[dict[str, str], dict[str, list[str]]]:
    """Our schemas by canonical form, and by full name (latest version last)."""
    by_canonical: dict[str, str] = {}
    by_full_name: dict[str, list[str]] = {}
    for n in schemas.names():
        by_canonical[to_parsing_canonical_form(schemas.raw(n))] = n
        by_full_name.setdefault(full_name(schemas.raw(n)), []).append(n)
    for candidates in by_full_name.values():
        candidates.sort(key=_version)
    return by_canonical, by_full_name


def _version(name: str) -> int:
    _, _, v = name.rpartition(".v")
    return int(v) if v.isdigit() else 0


def redact_url(url: str) -> str:
    """``url`` without the password of any ``user:password@`` part (safe to print)."""
    out = []
    for one in url.split(","):
        parts = urlsplit(one.strip())
        if parts.password:
            netloc = f"{parts.username}:***@{parts.hostname}"
            if parts.port:
                netloc += f":{parts.port}"
            parts = parts._replace(netloc=netloc)
        out.append(urlunsplit(parts))
    return ",".join(out)


def registry_conf(settings: dict[str, str] | None) -> dict[str, Any]:
    """Registry client settings from ``twin.schema.registry.<setting>`` keys (URL excluded)."""
    conf: dict[str, Any] = {}
    for key, value in (settings or {}).items():
        if key.startswith(REGISTRY_PREFIX) and key != REGISTRY_PREFIX + "url":
            prop = key[len(REGISTRY_PREFIX):]
            conf[prop] = _number(value) if prop in _NUMERIC else value
    return conf


_NUMERIC = {"timeout", "cache.capacity", "cache.latest.ttl.sec", "max.retries",
            "retries.wait.ms", "retries.max.wait.ms"}


def _number(value: str) -> int | float:
    try:
        return int(value)
    except ValueError:
        return float(value)


class _Decoder:
    """How to read bodies written with one registry id."""

    __slots__ = ("name", "writer", "reader")

    def __init__(self, name: str, writer: dict[str, Any], reader: dict[str, Any] | None):
        self.name, self.writer, self.reader = name, writer, reader


class RegistrySerde:
    """Encode/decode with ids from a Confluent-compatible schema registry.

    Parameters
    ----------
    url
        Registry URL(s), comma-separated, e.g. ``http://127.0.0.1:8081``.
    conf
        Further :class:`confluent_kafka.schema_registry.SchemaRegistryClient` settings
        (``basic.auth.user.info``, ``ssl.ca.location``, ``max.retries``, ...). A
        ``timeout`` of :data:`DEFAULT_TIMEOUT_S` is added unless given.

    Registration happens once per schema and process (the first :meth:`encode` of it);
    registry lookups are cached, so the registry is asked about each id once. Instances
    pickle (for Beam DoFns): the HTTP client is recreated on the other side.
    """

    def __init__(self, url: str, conf: dict[str, Any] | None = None) -> None:
        if not url:
            raise ValueError("RegistrySerde needs a schema registry URL")
        self.url = url
        self.conf = {"timeout": DEFAULT_TIMEOUT_S, **(conf or {})}
        self._ids: dict[str, int] = {}  # our schema name -> registry id
        self._decoders: dict[int, _Decoder] = {}
        self._unknown: OrderedDict[int, str] = OrderedDict()  # id -> why it is unusable
        self._lock = threading.Lock()
        self._client_obj = None

    # -- plumbing ---------------------------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_client_obj"] = None
        state["_lock"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"RegistrySerde({redact_url(self.url)!r})"

    @property
    def _client(self):
        if self._client_obj is None:
            try:
                from confluent_kafka.schema_registry import SchemaRegistryClient
            except ImportError as exc:  # pragma: no cover - dependency problem
                raise RegistryError(
                    "the schema registry client needs confluent-kafka's registry extras "
                    f"(authlib, cachetools, httpx2): {exc}") from exc
            try:
                self._client_obj = SchemaRegistryClient({**self.conf, "url": self.url})
            except (ValueError, TypeError) as exc:
                raise RegistryError(
                    f"bad schema registry settings for {redact_url(self.url)}: {exc}") from exc
        return self._client_obj

    def close(self) -> None:
        if self._client_obj is not None:
            self._client_obj.close()
            self._client_obj = None

    def _call(self, what: str, fn, *args):
        """Run one registry request; transport and server failures become our errors.

        Returns ``None`` for 404 (the caller decides what "not found" means).
        """
        from confluent_kafka.schema_registry.error import SchemaRegistryError

        where = redact_url(self.url)
        try:
            return fn(*args)
        except SchemaRegistryError as exc:
            if exc.http_status_code == 404:
                return None
            if exc.http_status_code >= 500 or exc.http_status_code in (408, 429):
                raise RegistryUnavailable(
                    f"schema registry at {where} failed to {what}: {exc}") from exc
            raise RegistryError(f"schema registry at {where} refused to {what}: {exc}") from exc
        except RegistryError:
            raise
        except Exception as exc:  # httpx transport errors: refused, DNS, timeout, TLS
            raise RegistryUnavailable(
                f"cannot reach the schema registry at {where} to {what}: "
                f"{type(exc).__name__}: {exc}") from exc

    # -- encode -----------------------------------------------------------------------

    def schema_id(self, name: str) -> int:
        """The registry's id of our schema ``name``, registering it the first time."""
        sid = self._ids.get(name)
        if sid is not None:
            return sid
        from confluent_kafka.schema_registry import Schema

        subject = subject_for(name)
        schema = Schema(json.dumps(schemas.raw(name)), "AVRO")
        sid = self._call(f"register {name} under subject {subject}",
                         self._client.register_schema, subject, schema)
        if sid is None:
            raise RegistryError(
                f"schema registry at {redact_url(self.url)} answered 404 to registering "
                f"{name} under {subject}: is the URL the registry's root?")
        with self._lock:
            self._ids[name] = sid
            self._decoders.setdefault(sid, _Decoder(name, schemas.load(name), None))
        return sid

    def encode(self, name: str, record: dict[str, Any]) -> bytes:
        """``record`` as Confluent-framed Avro under the registry id of schema ``name``."""
        buf = io.BytesIO()
        buf.write(wire.HEADER.pack(wire.MAGIC, self.schema_id(name)))
        fastavro.schemaless_writer(buf, schemas.load(name), record)
        return buf.getvalue()

    def reframe(self, data: bytes) -> bytes:
        """A message framed with the repo's local ids, re-framed with the registry's.

        The Avro body is the same (same schema), so only the 5-byte header changes.
        Anything that is not framed with a local id (a deliberately broken message of the
        simulator, say) is passed on untouched, so it stays exactly as broken.
        """
        if len(data) < wire.HEADER.size:
            return data
        magic, sid = wire.HEADER.unpack_from(data)
        name = schemas.by_id().get(sid) if magic == wire.MAGIC else None
        if name is None:
            return data
        return wire.HEADER.pack(wire.MAGIC, self.schema_id(name)) + data[wire.HEADER.size:]

    # -- decode -----------------------------------------------------------------------

    def _decoder(self, sid: int) -> _Decoder:
        found = self._decoders.get(sid)
        if found is not None:
            return found
        why = self._unknown.get(sid)
        if why is not None:
            raise InvalidReading("unknown_schema", why)
        registered = self._call(f"look up schema id {sid}", self._client.get_schema, sid)
        try:
            decoder = self._match(sid, registered)
        except InvalidReading as exc:
            with self._lock:
                self._unknown[sid] = exc.detail
                while len(self._unknown) > NEGATIVE_CACHE_SIZE:
                    self._unknown.popitem(last=False)
            raise
        with self._lock:
            self._decoders[sid] = decoder
        return decoder

    @staticmethod
    def _match(sid: int, registered) -> _Decoder:
        """Map the registry's schema ``sid`` to one of ours, or ``unknown_schema``."""
        if registered is None:
            raise InvalidReading("unknown_schema", f"schema id {sid} is not in the registry")
        if (registered.schema_type or "AVRO").upper() != "AVRO":
            raise InvalidReading(
                "unknown_schema", f"schema id {sid} is a {registered.schema_type} schema")
        try:
            raw = json.loads(registered.schema_str)
            writer = fastavro.parse_schema(raw)
            canonical = to_parsing_canonical_form(raw)
            writer_name = full_name(raw) if isinstance(raw, dict) else str(raw)
        except Exception as exc:  # noqa: BLE001 - whatever the registry returned
            raise InvalidReading(
                "unknown_schema", f"schema id {sid} is not a usable Avro schema: {exc}") from exc
        by_canonical, by_full_name = _ours()
        name = by_canonical.get(canonical)
        if name is not None:  # byte-for-byte the same encoding: read with ours directly
            return _Decoder(name, schemas.load(name), None)
        candidates = by_full_name.get(writer_name)
        if not candidates:
            raise InvalidReading(
                "unknown_schema", f"schema id {sid} is {writer_name}, not a twinstream schema")
        # Same record, another version of it: Avro schema resolution, writer -> ours.
        name = candidates[-1]
        return _Decoder(name, writer, schemas.load(name))

    def decode(self, data: bytes | None, max_bytes: int = wire.DEFAULT_MAX_BYTES
               ) -> tuple[str, dict[str, Any]]:
        """``(our schema name, record)`` of a Confluent-framed message.

        Raises :class:`~transforms.errors.InvalidReading` (``null_value``,
        ``empty_payload``, ``oversize_payload``, ``bad_magic``, ``unknown_schema``,
        ``malformed_avro``) for bad messages, :class:`RegistryUnavailable` /
        :class:`RegistryError` when the registry cannot answer.
        """
        if data is None:
            raise InvalidReading("null_value", wire.NULL_VALUE_DETAIL)
        if not data:
            raise InvalidReading("empty_payload", "zero-length message")
        if len(data) > max_bytes:
            raise InvalidReading("oversize_payload", f"{len(data)} bytes > limit {max_bytes}")
        if len(data) < wire.HEADER.size:
            raise InvalidReading("bad_magic", f"message of {len(data)} bytes has no wire header")
        magic, sid = wire.HEADER.unpack_from(data)
        if magic != wire.MAGIC:
            raise InvalidReading("bad_magic", f"magic byte {magic} != 0")
        decoder = self._decoder(sid)
        buf = io.BytesIO(data)
        buf.seek(wire.HEADER.size)
        try:
            record = fastavro.schemaless_reader(buf, decoder.writer, decoder.reader)
        except Exception as exc:  # fastavro raises many types on corrupt bodies
            raise InvalidReading(
                "malformed_avro", f"{decoder.name}: {wire.describe(exc)}") from exc
        if buf.tell() != len(data):
            raise InvalidReading(
                "malformed_avro",
                f"{decoder.name}: {len(data) - buf.tell()} trailing bytes after record")
        return decoder.name, record


def make_serde(registry_url: str | None = None, conf: dict[str, Any] | None = None
               ) -> LocalSerde | RegistrySerde:
    """:class:`RegistrySerde` for ``registry_url``, else :class:`LocalSerde`."""
    if registry_url:
        return RegistrySerde(registry_url, conf)
    return LocalSerde()


def serde_from_args(args, settings: dict[str, str]) -> LocalSerde | RegistrySerde:
    """The serde of a command: ``--schema-registry-url``, else the
    ``twin.schema.registry.url`` setting, else the repo's local ids."""
    url = getattr(args, "schema_registry_url", None) or settings.get(REGISTRY_PREFIX + "url")
    return make_serde(url, registry_conf(settings))

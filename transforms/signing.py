"""Signed, fresh commands: HMAC-SHA256 over the message and its issue stamp.

Setpoint commands change how machines run, so the assets (the simulator, or a real
gateway) accept only commands that are *authentic* (signed with the shared key),
*fresh* (issued recently) and *new* (not one they already applied). This follows the
command-security pattern of OPC UA and IEC 62351 (the GOOSE security of IEC 62351-6, the
sequence numbers of IEC 62351-5): every command carries who vouches for it (a MAC), when
it was issued and until when it may be acted on (a time allowed to live), and a sequence
number that only grows per asset; all of it is covered by the signature.

The stamp travels in Kafka headers beside the value, so the Avro record (the decision)
is unchanged and consumers that ignore headers still decode it:

- ``twin-issued-at-ms``: wall-clock epoch ms when the sink signed the message;
- ``twin-expires-at-ms``: after this the command must not be applied;
- ``twin-seq``: the per-asset sequence number. The twin uses the event-time end of the
  window the decision was made for: it only grows per asset, and it is deterministic, so
  a re-emission of the same decision (at-least-once delivery, a pipeline rerun) carries
  the same number and a receiver that applied it refuses it, while a new decision is
  always above it;
- ``twin-hmac-sha256-v2``: hex HMAC-SHA256 over a version label, the topic, the key, the
  three numbers and the value bytes.

The signed message format is versioned: version 2 signs with a key derived for it
(``HMAC(secret, "twinstream command signature v2")``) and goes in a header of its own, so
a version-1 signature (``twin-hmac-sha256``: topic, key and value only, no stamp) can
never verify as a version-2 one, nor the reverse. Receivers accept version 2 only.

>>> stamp = Stamp(issued_at_ms=1_000, expires_at_ms=301_000, seq=60_000)
>>> headers = sign_headers(b"k3y", "twin.actions", b"pump-1", b"payload", stamp)
>>> [name for name, _ in headers]
['twin-issued-at-ms', 'twin-expires-at-ms', 'twin-seq', 'twin-hmac-sha256-v2']
>>> verify_headers(b"k3y", "twin.actions", b"pump-1", b"payload", headers).status
'valid'
>>> verify_headers(b"k3y", "twin.actions", b"pump-1", b"payl0ad", headers).status
'invalid'
>>> freshness(stamp, now_ms=400_000)
('expired', 'expired 99.0 s ago (issued at 1000, valid until 301000)')
"""

from __future__ import annotations

import hashlib
import hmac
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

VERSION = 2
HEADER = "twin-hmac-sha256-v2"
ISSUED_AT_HEADER = "twin-issued-at-ms"
EXPIRES_AT_HEADER = "twin-expires-at-ms"
SEQ_HEADER = "twin-seq"
STAMP_HEADERS = (ISSUED_AT_HEADER, EXPIRES_AT_HEADER, SEQ_HEADER)
# Version 1 (topic, key and value, no stamp): recognized only to say why it is refused.
LEGACY_HEADER = "twin-hmac-sha256"
_V2_LABEL = b"twinstream command signature v2"

DEFAULT_VALIDITY_MS = 300_000  # how long after signing a command may be applied
DEFAULT_MAX_SKEW_MS = 30_000  # clock difference between signer and receiver tolerated

_NUMBER = re.compile(rb"[0-9]{1,19}")
_HEX = re.compile(rb"[0-9a-f]{64}")


@dataclass(frozen=True)
class Stamp:
    """When a command was issued, until when it may be applied, and its sequence."""

    issued_at_ms: int
    expires_at_ms: int
    seq: int


class Verdict(NamedTuple):
    """What :func:`verify_headers` found: ``status`` is ``valid`` (then ``stamp`` is the
    verified stamp), ``missing`` (no signature), ``legacy`` (only a version-1 signature),
    ``malformed`` (stamp or signature headers unreadable, repeated or inconsistent) or
    ``invalid`` (the signature does not verify); ``detail`` says why in words."""

    status: str
    stamp: Stamp | None
    detail: str


def _derived(secret: bytes) -> bytes:
    if not secret:
        raise ValueError("empty signing key")
    return hmac.new(secret, _V2_LABEL, hashlib.sha256).digest()


def _message(topic: str, key: bytes | None, value: bytes, stamp: Stamp) -> bytes:
    key = key or b""
    return b"%s\0%d\0%s\0%d\0%d\0%d\0%s" % (
        topic.encode(), len(key), key, stamp.issued_at_ms, stamp.expires_at_ms, stamp.seq,
        value)


def signature(secret: bytes, topic: str, key: bytes | None, value: bytes,
              stamp: Stamp) -> str:
    """Hex HMAC-SHA256 (version 2) of ``(topic, key, stamp, value)`` under ``secret``."""
    return hmac.new(_derived(secret), _message(topic, key, value, stamp),
                    hashlib.sha256).hexdigest()


def sign_headers(secret: bytes, topic: str, key: bytes | None, value: bytes,
                 stamp: Stamp) -> list[tuple[str, bytes]]:
    """The Kafka headers that make ``value`` a signed, stamped command."""
    if not stamp.issued_at_ms < stamp.expires_at_ms:
        raise ValueError("a command must expire after it is issued")
    if min(stamp.issued_at_ms, stamp.seq) < 0:
        raise ValueError("issue time and sequence must not be negative")
    return [(ISSUED_AT_HEADER, b"%d" % stamp.issued_at_ms),
            (EXPIRES_AT_HEADER, b"%d" % stamp.expires_at_ms),
            (SEQ_HEADER, b"%d" % stamp.seq),
            (HEADER, signature(secret, topic, key, value, stamp).encode())]


def _single(headers: Iterable[tuple[str, bytes | str | None]], name: str
            ) -> tuple[int, bytes | None]:
    values = [v for n, v in headers if n == name]
    if not values or values[0] is None:
        return len(values), None
    v = values[0]
    return len(values), (v.encode("utf-8", "replace") if isinstance(v, str) else bytes(v))


def verify_headers(secret: bytes, topic: str, key: bytes | None, value: bytes,
                   headers) -> Verdict:
    """Check the version-2 signature of a message (``headers`` as confluent-kafka gives
    them: ``[(name, value), ...]`` or None). Never raises on anything a producer wrote."""
    headers = list(headers or ())
    count, sig = _single(headers, HEADER)
    if count == 0:
        if _single(headers, LEGACY_HEADER)[0]:
            return Verdict("legacy", None,
                           f"only a version-1 signature ({LEGACY_HEADER}: no issue time, "
                           f"expiry or sequence); signers must use {HEADER}")
        return Verdict("missing", None, f"no {HEADER} header")
    if count > 1:
        return Verdict("malformed", None, f"{count} {HEADER} headers")
    numbers = []
    for name in STAMP_HEADERS:
        n, raw = _single(headers, name)
        if n != 1 or raw is None or not _NUMBER.fullmatch(raw):
            what = "missing" if n == 0 else f"{n} of them" if n > 1 else "not a number"
            return Verdict("malformed", None, f"header {name}: {what}")
        numbers.append(int(raw))
    stamp = Stamp(*numbers)
    if sig is None or not _HEX.fullmatch(sig):
        return Verdict("malformed", None, f"{HEADER} is not 64 lowercase hex digits")
    if not secret:
        return Verdict("invalid", stamp, "no key to verify with")
    expected = signature(secret, topic, key, value, stamp).encode()
    if not hmac.compare_digest(expected, sig):
        return Verdict("invalid", stamp,
                       "signature does not verify over topic, key, stamp and value")
    if not stamp.issued_at_ms < stamp.expires_at_ms:
        return Verdict("malformed", None, "expires before it is issued")
    return Verdict("valid", stamp, "")


def freshness(stamp: Stamp, now_ms: int, max_skew_ms: int = DEFAULT_MAX_SKEW_MS
              ) -> tuple[str, str] | None:
    """``None`` if a command of ``stamp`` may be applied at wall-clock ``now_ms``, else
    ``(reason, detail)``: ``expired`` (past its expiry) or ``not_yet_valid`` (issued more
    than ``max_skew_ms`` in the future: a wrong clock, or a forged stamp)."""
    if now_ms > stamp.expires_at_ms:
        return ("expired", f"expired {(now_ms - stamp.expires_at_ms) / 1000:.1f} s ago "
                           f"(issued at {stamp.issued_at_ms}, valid until "
                           f"{stamp.expires_at_ms})")
    if stamp.issued_at_ms > now_ms + max_skew_ms:
        return ("not_yet_valid", f"issued {(stamp.issued_at_ms - now_ms) / 1000:.1f} s in "
                                 f"the future (clock skew allowance {max_skew_ms / 1000:g} s)")
    return None


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class Signer:
    """Signs commands with ``secret``, each valid for ``validity_ms`` after signing.

    Picklable (it travels inside Beam DoFns and Flink functions); the key is never part
    of its ``repr``.

    >>> s = Signer(b"k3y", validity_ms=60_000, clock=lambda: 5_000)
    >>> dict(s.headers("twin.actions", b"p", b"v", seq=42))["twin-expires-at-ms"]
    b'65000'
    >>> "k3y" in repr(s)
    False
    """

    secret: bytes = field(repr=False)
    validity_ms: int = DEFAULT_VALIDITY_MS
    clock: Callable[[], int] = field(default=wall_clock_ms, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.secret:
            raise ValueError("empty signing key")
        if self.validity_ms <= 0:
            raise ValueError(f"command validity must be positive, got {self.validity_ms} ms")

    def headers(self, topic: str, key: bytes | None, value: bytes,
                seq: int) -> list[tuple[str, bytes]]:
        now = int(self.clock())
        return sign_headers(self.secret, topic, key, value,
                            Stamp(now, now + self.validity_ms, int(seq)))

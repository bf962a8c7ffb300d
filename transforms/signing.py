"""Signed commands: HMAC-SHA256 over the exact bytes an action travels as.

Setpoint commands change how machines run, so the assets (the simulator, or a real
gateway) accept only commands signed with the shared key. The signature covers the topic,
the message key and the value bytes, travels in the ``twin-hmac-sha256`` header, and is
checked in constant time.

>>> sig = sign(b"k3y", "twin.actions", b"pump-1", b"payload")
>>> verify(b"k3y", "twin.actions", b"pump-1", b"payload", sig)
True
>>> verify(b"k3y", "twin.actions", b"pump-1", b"payl0ad", sig)
False
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "twin-hmac-sha256"


def _message(topic: str, key: bytes | None, value: bytes) -> bytes:
    key = key or b""
    return b"%s\0%d\0%s%s" % (topic.encode(), len(key), key, value)


def sign(secret: bytes, topic: str, key: bytes | None, value: bytes) -> str:
    """Hex HMAC-SHA256 of ``(topic, key, value)`` under ``secret``."""
    if not secret:
        raise ValueError("empty signing key")
    return hmac.new(secret, _message(topic, key, value), hashlib.sha256).hexdigest()


def verify(secret: bytes, topic: str, key: bytes | None, value: bytes,
           signature: str | bytes | None) -> bool:
    """Whether ``signature`` is the valid signature (False for missing or malformed ones)."""
    if not signature or not secret:
        return False
    if isinstance(signature, bytes):
        try:
            signature = signature.decode("ascii")
        except UnicodeDecodeError:
            return False
    return hmac.compare_digest(sign(secret, topic, key, value), signature)


def header_value(headers) -> bytes | None:
    """The signature header's value from confluent-kafka style ``[(name, value), ...]``."""
    for name, value in headers or ():
        if name == HEADER:
            return value
    return None

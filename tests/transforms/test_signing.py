"""Signed commands (version 2): the signature binds topic, key, value and the whole stamp;
version 1 and version 2 signatures never stand in for each other; freshness in wall-clock
time."""

from __future__ import annotations

import hashlib
import hmac
import pickle

import pytest

from transforms import signing
from transforms.signing import Signer, Stamp, freshness, sign_headers, verify_headers

KEY = b"k"
STAMP = Stamp(issued_at_ms=1_000_000, expires_at_ms=1_300_000, seq=960_000)


def headers(stamp: Stamp = STAMP, key: bytes = KEY, topic: str = "twin.actions",
            msg_key: bytes = b"pump-1", value: bytes = b"v") -> list[tuple[str, bytes]]:
    return sign_headers(key, topic, msg_key, value, stamp)


def status(h, key: bytes = KEY, topic: str = "twin.actions", msg_key: bytes | None = b"pump-1",
           value: bytes = b"v") -> str:
    return verify_headers(key, topic, msg_key, value, h).status


def replaced(h, name: str, value: bytes) -> list[tuple[str, bytes]]:
    return [(n, value if n == name else v) for n, v in h]


def test_a_signature_binds_topic_key_value_and_key():
    h = headers()
    verdict = verify_headers(KEY, "twin.actions", b"pump-1", b"v", h)
    assert verdict == (signing.Verdict("valid", STAMP, ""))
    assert status(h, msg_key=b"pump-2") == "invalid"
    assert status(h, topic="other") == "invalid"
    assert status(h, value=b"w") == "invalid"
    assert status(h, key=b"other") == "invalid"
    assert status(h, msg_key=None) == "invalid"


@pytest.mark.parametrize("name", signing.STAMP_HEADERS)
def test_every_stamp_field_is_covered_by_the_signature(name):
    """Extending the expiry, moving the issue time or raising the sequence of a captured
    command breaks its signature."""
    h = headers()
    original = int(dict(h)[name])
    assert status(replaced(h, name, b"%d" % (original + 3_600_000))) == "invalid"
    assert status(replaced(h, name, b"%d" % (original - 1))) == "invalid"


def test_missing_unreadable_or_partial_stamps_never_verify():
    h = headers()
    assert status([]) == status(None) == "missing"
    assert status([(signing.HEADER, dict(h)[signing.HEADER])]) == "malformed"  # no stamp
    assert status([x for x in h if x[0] != signing.EXPIRES_AT_HEADER]) == "malformed"
    assert status(replaced(h, signing.ISSUED_AT_HEADER, b"-5")) == "malformed"
    assert status(replaced(h, signing.SEQ_HEADER, b"12x")) == "malformed"
    assert status(replaced(h, signing.SEQ_HEADER, None)) == "malformed"
    assert status(replaced(h, signing.HEADER, b"\xff" * 64)) == "malformed"
    assert status(replaced(h, signing.HEADER, None)) == "malformed"


@pytest.mark.parametrize("name", (*signing.STAMP_HEADERS, signing.HEADER))
def test_a_repeated_signed_header_is_refused(name):
    """Kafka allows repeated header names: a second ``twin-seq`` (or signature) after a
    valid one must not be read by some consumers and ignored by others."""
    h = headers()
    assert status(h + [(name, dict(h)[name])]) == "malformed"
    assert status([(name, b"1")] + h) == "malformed"


def test_version_1_and_version_2_signatures_never_stand_in_for_each_other():
    key, value, topic = b"pump-1", b"v", "twin.actions"
    v1 = hmac.new(KEY, b"%s\0%d\0%s%s" % (topic.encode(), len(key), key, value),
                  hashlib.sha256).hexdigest().encode()
    # a version-1 signature alone: recognized, refused, and said so
    verdict = verify_headers(KEY, topic, key, value, [(signing.LEGACY_HEADER, v1)])
    assert verdict.status == "legacy" and "version-1" in verdict.detail
    # a version-1 signature put in the version-2 header, with any stamp: invalid
    h = replaced(headers(), signing.HEADER, v1)
    assert status(h) == "invalid"
    # the version-2 MAC is under a key derived for version 2: not the bare-key HMAC of
    # the same bytes
    v2 = dict(headers())[signing.HEADER]
    same_bytes = signing._message(topic, key, value, STAMP)
    assert hmac.new(KEY, same_bytes, hashlib.sha256).hexdigest().encode() != v2
    # and a version-2 signature does not verify as version 1
    assert v2 != v1


def test_freshness_expired_and_not_yet_valid_with_a_skew_allowance():
    assert freshness(STAMP, now_ms=STAMP.issued_at_ms) is None
    assert freshness(STAMP, now_ms=STAMP.expires_at_ms) is None
    reason, detail = freshness(STAMP, now_ms=STAMP.expires_at_ms + 1)
    assert reason == "expired" and "0.0 s ago" in detail
    assert freshness(STAMP, now_ms=STAMP.issued_at_ms - 30_000, max_skew_ms=30_000) is None
    reason, detail = freshness(STAMP, now_ms=STAMP.issued_at_ms - 30_001, max_skew_ms=30_000)
    assert reason == "not_yet_valid" and "30.0 s in the future" in detail


def test_signer_stamps_its_clock_plus_validity_and_survives_pickling():
    s = Signer(KEY, validity_ms=120_000, clock=lambda: 5_000)
    h = dict(s.headers("twin.actions", b"p", b"v", seq=60_000))
    assert (h[signing.ISSUED_AT_HEADER], h[signing.EXPIRES_AT_HEADER],
            h[signing.SEQ_HEADER]) == (b"5000", b"125000", b"60000")
    plain = Signer(KEY, validity_ms=120_000)
    assert pickle.loads(pickle.dumps(plain)) == plain
    assert repr(plain) == "Signer(validity_ms=120000)"  # never the key
    with pytest.raises(ValueError, match="empty"):
        Signer(b"")
    with pytest.raises(ValueError, match="positive"):
        Signer(KEY, validity_ms=0)
    with pytest.raises(ValueError, match="expire after"):
        sign_headers(KEY, "t", b"k", b"v", Stamp(10, 10, 1))


def test_default_signer_uses_the_wall_clock():
    import time

    before = time.time_ns() // 1_000_000
    h = dict(Signer(KEY).headers("twin.actions", b"p", b"v", seq=1))
    issued = int(h[signing.ISSUED_AT_HEADER])
    assert before <= issued <= time.time_ns() // 1_000_000
    assert int(h[signing.EXPIRES_AT_HEADER]) - issued == signing.DEFAULT_VALIDITY_MS

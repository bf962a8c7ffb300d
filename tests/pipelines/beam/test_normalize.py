"""NormalizeReadings under Beam: readings out, every bad message a dead letter with its bytes."""

from __future__ import annotations

import apache_beam as beam
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to

import pipelines.beam.normalize as normalize_module
from pipelines.beam.normalize import NormalizeReadings
from schemas import wire
from tests.transforms.normalize.samples import NOW_MS, typical
from transforms.normalize import encode_message

GOOD = encode_message("helios", typical("pump"))
TRUNCATED = GOOD[:20]
BAD_MAGIC = b"\x07" + GOOD[1:]
NOT_A_VENDOR = wire.encode("twin/deadletter.v1", {
    "stage": "x", "reason": "x", "detail": "", "source": "x", "key": None, "payload": b"",
    "ts_ms": 0})


def messages():
    return [("twin.raw.helios", b"pump-001", v, 1) for v in
            (GOOD, TRUNCATED, BAD_MAGIC, NOT_A_VENDOR, b"")]


def test_readings_and_dead_letters_account_for_every_message():
    with TestPipeline() as p:
        out = p | beam.Create(messages()) | NormalizeReadings(now_ms=NOW_MS)
        ids = out["readings"] | "Ids" >> beam.Map(lambda r: r["reading_id"])
        dead = out["dead_letters"] | "Dead" >> beam.Map(
            lambda d: (d["reason"], d["payload"], d["source"], d["key"]))
        assert_that(ids, equal_to([f"helios:pump-001:{typical('pump').ts_ms}"]), label="ok")
        assert_that(dead, equal_to([
            ("malformed_avro", TRUNCATED, "twin.raw.helios", b"pump-001"),
            ("bad_magic", BAD_MAGIC, "twin.raw.helios", b"pump-001"),
            ("unknown_vendor", NOT_A_VENDOR, "twin.raw.helios", b"pump-001"),
            ("empty_payload", b"", "twin.raw.helios", b"pump-001"),
        ]), label="dead")


def _broken(*args, **kwargs):
    raise ZeroDivisionError("bug in an adapter")


def test_a_bug_dead_letters_instead_of_dropping(monkeypatch):
    monkeypatch.setattr(normalize_module, "normalize_message", _broken)
    with TestPipeline() as p:
        out = p | beam.Create(messages()[:1]) | NormalizeReadings(now_ms=NOW_MS)
        dead = out["dead_letters"] | beam.Map(lambda d: (d["reason"], d["payload"],
                                                         "ZeroDivisionError" in d["detail"]))
        assert_that(dead, equal_to([("internal_error", GOOD, True)]))

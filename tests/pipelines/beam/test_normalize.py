"""NormalizeReadings under Beam: readings out, every bad message a dead letter with its bytes."""

from __future__ import annotations

import apache_beam as beam
import pytest
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
            (GOOD, TRUNCATED, BAD_MAGIC, NOT_A_VENDOR, b"", None)]


def _ids(keyed):
    asset_id, block = keyed
    return [(asset_id, block.reading(i)["reading_id"]) for i in range(len(block))]


@pytest.mark.parametrize("batched", [False, True], ids=["per-message", "batch"])
def test_readings_and_dead_letters_account_for_every_message(batched):
    elements = [messages()] if batched else messages()
    with TestPipeline() as p:
        out = p | beam.Create(elements) | NormalizeReadings(now_ms=NOW_MS)
        ids = out["readings"] | "Ids" >> beam.FlatMap(_ids)
        dead = out["dead_letters"] | "Dead" >> beam.Map(
            lambda d: (d["reason"], d["payload"], d["source"], d["key"]))
        assert_that(ids, equal_to([
            ("pump-001", f"helios:pump-001:{typical('pump').ts_ms}")]), label="ok")
        assert_that(dead, equal_to([
            ("malformed_avro", TRUNCATED, "twin.raw.helios", b"pump-001"),
            ("bad_magic", BAD_MAGIC, "twin.raw.helios", b"pump-001"),
            ("unknown_vendor", NOT_A_VENDOR, "twin.raw.helios", b"pump-001"),
            ("empty_payload", b"", "twin.raw.helios", b"pump-001"),
            # a Kafka tombstone: its own reason, empty bytes (the schema's payload is bytes)
            ("null_value", b"", "twin.raw.helios", b"pump-001"),
        ]), label="dead")


def _broken(*args, **kwargs):
    raise ZeroDivisionError("bug in an adapter")


def test_a_bug_on_one_message_dead_letters_it_and_the_batch_goes_on(monkeypatch):
    from transforms.normalize import helios

    def broken(record):
        raise ZeroDivisionError("bug in an adapter")

    monkeypatch.setattr(helios, "envelope", broken)
    other = encode_message("kestrel", typical("motor"))
    batch = [("twin.raw.helios", b"pump-001", GOOD, 1), ("twin.raw.kestrel", b"m", other, 1)]
    with TestPipeline() as p:
        out = p | beam.Create([batch]) | NormalizeReadings(now_ms=NOW_MS)
        dead = out["dead_letters"] | beam.Map(lambda d: (d["reason"], d["payload"],
                                                         "ZeroDivisionError" in d["detail"]))
        ids = out["readings"] | "Ids" >> beam.FlatMap(_ids)
        assert_that(dead, equal_to([("internal_error", GOOD, True)]), label="dead")
        assert_that(ids | beam.Map(lambda kv: kv[1].split(":")[0]), equal_to(["kestrel"]),
                    label="ok")


def test_a_bug_outside_the_adapters_dead_letters_every_message_of_the_batch(monkeypatch):
    monkeypatch.setattr(normalize_module, "normalize_sources", _broken)
    with TestPipeline() as p:
        out = p | beam.Create([messages()[:2]]) | NormalizeReadings(now_ms=NOW_MS)
        dead = out["dead_letters"] | beam.Map(lambda d: (d["reason"], d["payload"],
                                                         "ZeroDivisionError" in d["detail"]))
        assert_that(dead, equal_to([("internal_error", GOOD, True),
                                    ("internal_error", TRUNCATED, True)]))

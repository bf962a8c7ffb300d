"""The Flink binding's raw messages, without a JVM: a Kafka row as the source hands it over,
then normalization, agree with the Beam binding on what a bad message is."""

from __future__ import annotations

from pipelines.flink.functions import DEAD_LETTERS, NormalizeFunction
from pipelines.flink.sources import _from_row


def test_a_tombstone_is_a_null_value_dead_letter_as_in_beam():
    row = {"topic": "twin.raw.helios", "partition": 1, "offset": 42, "k": b"pump-000",
           "v": None, "ts": 1_795_800_000_000}
    msg = _from_row(row)
    assert msg == ("twin.raw.helios/1@42", b"pump-000", None, 1_795_800_000_000)
    ((tag, dead),) = list(NormalizeFunction().process_element(msg, None))
    assert tag is DEAD_LETTERS
    assert (dead["reason"], dead["payload"], dead["source"], dead["key"]) == (
        "null_value", b"", "twin.raw.helios/1@42", b"pump-000")


def test_an_empty_value_stays_an_empty_payload():
    row = {"topic": "t", "partition": 0, "offset": 1, "k": None, "v": b"", "ts": None}
    ((_, dead),) = list(NormalizeFunction().process_element(_from_row(row), None))
    assert dead["reason"] == "empty_payload"

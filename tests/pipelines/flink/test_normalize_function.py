"""NormalizeFunction without a JVM: a batch of messages (a simulator chunk) and the same
messages one at a time (Kafka records) give the same readings, grouped by twin key, and the
same dead letters with their reasons."""

from __future__ import annotations

import pickle

import pytest

from pipelines.flink.functions import DEAD_LETTERS, NormalizeFunction
from pipelines.flink.sources import END_OF_INPUT
from transforms.simulator import Fleet, FleetConfig
from transforms.twin import shard_of


def _messages():
    fleet = Fleet(FleetConfig(assets=6, duration_s=600, interval_s=5, seed=3,
                              start_ms=1795800000000, malformed_rate=0.05))
    return [(f"{m.topic}/0@{i}", m.key, m.value, m.arrival_ms)
            for i, m in enumerate(fleet.messages())]


def _outputs(fn: NormalizeFunction, elements):
    readings: dict[str, list] = {}  # key -> [(asset_id, reading dict)] in order
    dead = []
    for element in elements:
        for out in fn.process_element(element, None):
            if out[0] is DEAD_LETTERS:
                dead.append(out[1])
                continue
            key, items = out
            if items == END_OF_INPUT:
                readings.setdefault(key, []).append(END_OF_INPUT)
                continue
            if isinstance(items, dict):  # one message's reading
                readings.setdefault(key, []).append((items["asset_id"], items))
                continue
            items = pickle.loads(items)
            for asset_id, block in items:
                assert block.asset_ids == [asset_id] * len(block)
                readings.setdefault(key, []).extend((asset_id, r) for r in block.readings())
    return readings, dead


def _per_asset(readings):
    return {(key, a): [r for b, r in items if b == a]
            for key, items in readings.items() for a, _ in items}


@pytest.mark.parametrize("shards", [0, 4])
def test_a_batch_gives_what_its_messages_give_one_at_a_time(shards):
    messages = _messages()
    fn = NormalizeFunction(shards=shards)
    one, one_dead = _outputs(fn, messages)
    batches = [messages[i:i + 97] for i in range(0, len(messages), 97)]
    batched, dead = _outputs(fn, [(b[-1][3], pickle.dumps(b)) for b in batches])
    assert one_dead and len(dead) == len(one_dead)  # some malformed messages
    assert [(d["reason"], d["source"]) for d in dead] == [
        (d["reason"], d["source"]) for d in one_dead]
    assert _per_asset(batched) == _per_asset(one)  # (assets of one key may interleave)
    assert sum(len(v) for v in one.values()) + len(dead) == len(messages)
    keys = {a for items in one.values() for a, _ in items}
    assert len(keys) == 6
    for key, items in one.items():  # each asset under its key
        assert {key} == {str(shard_of(a, shards)) if shards else a for a, _ in items}


def test_end_of_input_marker_goes_to_the_assets_key():
    fn = NormalizeFunction(shards=4)
    [(key, marker)] = fn.process_element((END_OF_INPUT, b"p7", b"", 0), None)
    assert (key, marker) == (str(shard_of("p7", 4)), END_OF_INPUT)


def test_a_tombstone_is_a_null_value_dead_letter_alone_and_in_a_batch():
    fn = NormalizeFunction()
    good = _messages()[0]
    tombstone = ("twin.raw.helios/0@99", b"p1", None, good[3])
    [(tag, dead)] = list(fn.process_element(tombstone, None))
    assert tag is DEAD_LETTERS and (dead["reason"], dead["payload"]) == ("null_value", b"")
    out = list(fn.process_element((good[3], pickle.dumps([good, tombstone])), None))
    assert [d["reason"] for t, d in out if t is DEAD_LETTERS] == ["null_value"]
    assert len([o for o in out if o[0] is not DEAD_LETTERS]) == 1

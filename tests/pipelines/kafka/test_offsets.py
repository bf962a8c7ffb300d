"""Stored offsets against what the broker holds, and a backlog cut into slices (no broker)."""

from __future__ import annotations

import random

import pytest

from pipelines.kafka.offsets import (
    NO_TOPIC_ID,
    OffsetMismatch,
    OffsetResetError,
    PartitionRange,
    check,
    recreated_topics,
    reset_start,
    split,
)


@pytest.mark.parametrize(("stored", "low", "high", "why"), [
    (50, 0, 120, None),
    (0, 0, 120, None),
    (120, 0, 120, None),  # exactly at the end: nothing new, fine
    (121, 0, 120, "past_end"),
    (80_443, 0, 17_233, "past_end"),
    (9, 10, 120, "before_start"),
    (9, None, None, "gone"),
])
def test_a_stored_offset_fits_between_the_watermarks(stored, low, high, why):
    found = check("t/0", stored, low, high)
    assert (found.why if found else None) == why


def test_a_recreated_topic_does_not_fit_even_where_the_watermarks_would():
    assert check("t/0", 50, 0, 120, recreated=True).why == "recreated"
    assert recreated_topics({"a": "id1", "b": "id2", "c": "id3", "d": NO_TOPIC_ID},
                            {"a": "id1", "b": "other", "d": "x"}) == {"b"}
    # a broker without topic ids tells nothing
    assert recreated_topics({"a": "id1"}, {"a": NO_TOPIC_ID}) == set()


def test_earliest_and_latest_say_where_to_start_and_gone_partitions_are_dropped():
    past = OffsetMismatch("t/0", 900, 10, 120, "past_end")
    assert reset_start(past, "earliest") == 10 and reset_start(past, "latest") == 120
    assert reset_start(OffsetMismatch("t/1", 9, None, None, "gone"), "earliest") is None
    with pytest.raises(ValueError):
        reset_start(past, "fail")


def test_the_error_names_each_partition_its_offsets_and_the_flag():
    err = OffsetResetError([OffsetMismatch("t/0", 900, 0, 120, "past_end"),
                            OffsetMismatch("t/1", 5, 10, 120, "before_start"),
                            OffsetMismatch("u/0", 7, None, None, "gone")], "the state file s")
    text = str(err)
    assert "the state file s" in text
    assert "t/0: stored 900, broker has 0..120 (beyond its end" in text
    assert "t/1: stored 5, broker has 10..120 (before its start: 5 unread messages" in text
    assert "u/0: stored 7, no such partition" in text
    assert "--on-offset-reset earliest" in text and "--on-offset-reset latest" in text


def sizes(slices):
    return [[(r.key, r.stop - r.start) for r in s] for s in slices]


def test_slices_hold_at_most_their_size_and_cover_the_ranges_exactly():
    rng = random.Random(3)
    ranges = [PartitionRange("t", p, rng.randrange(100), None) for p in range(7)]
    ranges = [r._replace(stop=r.start + rng.randrange(0, 5000)) for r in ranges]
    slices = split(ranges, 1000)
    assert all(sum(r.stop - r.start for r in s) <= 1000 for s in slices)
    assert all(sum(r.stop - r.start for r in s) == 1000 for s in slices[:-1])
    for r in ranges:  # each partition's pieces are contiguous and end at its stop
        pieces = [x for s in slices for x in s if x.partition == r.partition]
        pos = r.start
        for x in pieces:
            assert x.start == pos and x.stop > x.start
            pos = x.stop
        assert pos == r.stop


def test_partitions_advance_together_in_proportion_to_what_they_have_left():
    ranges = [PartitionRange("t", 0, 0, 100), PartitionRange("t", 1, 0, 300),
              PartitionRange("t", 2, 50, 50)]  # nothing to read there: left out
    assert sizes(split(ranges, 200)) == [[("t/0", 50), ("t/1", 150)],
                                         [("t/0", 50), ("t/1", 150)]]


def test_a_limit_caps_the_run_and_leaves_the_rest_in_proportion():
    ranges = [PartitionRange("t", 0, 0, 100), PartitionRange("t", 1, 0, 300)]
    slices = split(ranges, 60, limit=100)
    assert sum(r.stop - r.start for s in slices for r in s) == 100
    assert sizes(slices) == [[("t/0", 15), ("t/1", 45)], [("t/0", 10), ("t/1", 30)]]
    assert split(ranges, 60, limit=0) == [] and split([], 60) == []


def test_a_run_resumed_at_a_slice_boundary_cuts_the_rest_as_the_first_would_have():
    """What a killed run's rerun relies on for the same outputs."""
    ranges = [PartitionRange("t", p, 0, n) for p, n in enumerate((1234, 77, 3001, 500))]
    whole = split(ranges, 700)
    for k in range(1, len(whole)):
        done = {r.key: r.stop for s in whole[:k] for r in s}
        rest = [r._replace(start=done.get(r.key, r.start)) for r in ranges]
        assert split(rest, 700) == whole[k:]


def test_never_a_backwards_range():
    with pytest.raises(ValueError):
        split([PartitionRange("t", 0, 10, 5)], 100)
    with pytest.raises(ValueError):
        split([PartitionRange("t", 0, 0, 5)], 0)


def test_a_slice_is_cut_to_its_weight_with_partitions_advancing_together():
    from pipelines.kafka.offsets import trim

    rng = random.Random(5)
    part = [PartitionRange("t", p, 100 * p, 100 * p + 200) for p in range(3)]
    sizes = {r.key: [(o, rng.choice((500, 500, 500, 1_000_000))) for o in range(r.start, r.stop)]
             for r in part}
    for limit in (1, 600, 2_000_000, 5_000_000):
        cut = trim(part, sizes, limit)
        weights = {r.key: sum(b for o, b in sizes[r.key] if r.start <= o < r.stop) for r in cut}
        taken = sum(r.stop - r.start for r in cut)
        assert taken >= 1  # always moves on
        assert sum(weights.values()) <= limit or taken == 1
        assert all(r.start == part[r.partition].start for r in cut)  # a prefix of each
        counts = [r.stop - r.start for r in cut]
        assert max(counts) - min(counts) <= 1 or len(cut) == 1  # the same share of each
    assert trim(part, sizes, 10**12) == part  # everything fits: unchanged

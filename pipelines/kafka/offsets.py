"""Where a bounded Kafka read starts and stops: stored offsets checked against what the
broker holds, and a backlog cut into slices. Pure logic; the broker is asked in
:func:`pipelines.beam.kafka.plan_reads`.

Stored offsets (a state file's, else the consumer group's) are trusted only while they fit
the partition: ``low <= offset <= high`` (the broker's low and high watermarks), and the
topic is the one they were read from (its topic id, where the broker has ids: Kafka 2.8+
and Tansu do). Otherwise the broker was reset, the topic recreated, or retention deleted
messages nobody read, and carrying on would skip data silently (an offset past the end
reads nothing until new data passes it) or read a different topic from its middle. What
to do then is the user's choice, as Kafka's ``auto.offset.reset`` is, but the default is
to stop and ask (:data:`ON_OFFSET_RESET`):

- ``fail`` (default): stop before reading anything, naming each partition, its stored
  offset and the broker's (:class:`OffsetResetError`);
- ``earliest``: read what the broker has, from its start;
- ``latest``: skip to its end, reading nothing that is there now.

>>> check("t/0", 900, 0, 120).why, check("t/0", 5, 10, 120).why, check("t/0", 50, 0, 120)
('past_end', 'before_start', None)
>>> r = [PartitionRange("t", 0, 0, 100), PartitionRange("t", 1, 0, 300)]
>>> [[x.stop - x.start for x in s] for s in split(r, 200)]
[[50, 150], [50, 150]]
>>> [[x.stop - x.start for x in s] for s in split(r, 200, limit=100)]
[[25, 75]]
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

from pipelines.kafka.config import KafkaConfigError

ON_OFFSET_RESET = ("fail", "earliest", "latest")
NO_TOPIC_ID = "AAAAAAAAAAAAAAAAAAAAAA"  # the all-zero UUID: a broker without topic ids


class PartitionRange(NamedTuple):
    """One partition's offsets to read: ``[start, stop)``; ``stop`` None = unbounded."""

    topic: str
    partition: int
    start: int
    stop: int | None

    @property
    def key(self) -> str:
        return f"{self.topic}/{self.partition}"


class OffsetMismatch(NamedTuple):
    """A stored offset that does not fit its partition on the broker.

    ``why``: ``past_end`` (beyond the high watermark: the broker or topic was reset),
    ``before_start`` (below the low watermark: retention deleted unread messages),
    ``recreated`` (the topic's id changed), ``gone`` (the partition no longer exists).
    """

    partition: str  # "topic/partition"
    stored: int
    low: int | None
    high: int | None
    why: str

    def describe(self) -> str:
        held = ("no such partition" if self.low is None
                else f"broker has {self.low}..{self.high}")
        why = {
            "past_end": "beyond its end: the broker or topic was reset",
            "before_start": f"before its start: {self.low - self.stored} unread messages "
                            "were deleted (retention)" if self.low is not None else "",
            "recreated": "the topic was deleted and recreated (its id changed)",
            "gone": "the partition does not exist any more",
        }[self.why]
        return f"{self.partition}: stored {self.stored}, {held} ({why})"

    def as_record(self, policy: str, start: int | None) -> dict:
        """For the run's summary: what was found and where reading starts now."""
        return {"partition": self.partition, "why": self.why, "stored": self.stored,
                "low": self.low, "high": self.high, "policy": policy, "start": start}


class OffsetResetError(KafkaConfigError):
    """Stored offsets that do not fit the broker, with ``--on-offset-reset`` left at fail."""

    def __init__(self, mismatches: Sequence[OffsetMismatch], source: str) -> None:
        self.mismatches = list(mismatches)
        lines = "\n  ".join(m.describe() for m in self.mismatches)
        super().__init__(
            f"the offsets stored in {source} do not fit what the broker holds, so reading "
            f"on would skip or repeat data:\n  {lines}\n"
            "Nothing was read or changed. Choose what to do and run again with "
            "--on-offset-reset earliest (read what the broker has from its start) or "
            "--on-offset-reset latest (skip to its end, reading none of what is there now).")


def check(partition: str, stored: int, low: int | None, high: int | None,
          recreated: bool = False) -> OffsetMismatch | None:
    """``None`` if reading ``partition`` from ``stored`` is safe, else what is wrong.

    ``low``/``high`` None: the partition does not exist on the broker.
    """
    if low is None or high is None:
        return OffsetMismatch(partition, stored, None, None, "gone")
    if recreated:
        return OffsetMismatch(partition, stored, low, high, "recreated")
    if stored > high:
        return OffsetMismatch(partition, stored, low, high, "past_end")
    if stored < low:
        return OffsetMismatch(partition, stored, low, high, "before_start")
    return None


def reset_start(mismatch: OffsetMismatch, policy: str) -> int | None:
    """Where to read from under ``policy`` (``earliest``/``latest``); ``None`` for a
    partition that is gone (its stored offset is dropped)."""
    if policy not in ("earliest", "latest"):
        raise ValueError(f"no start offset under policy {policy!r}")
    if mismatch.low is None:
        return None
    return mismatch.low if policy == "earliest" else mismatch.high


def recreated_topics(stored_ids: dict[str, str], current_ids: dict[str, str]) -> set[str]:
    """Topics whose id differs from the one stored with their offsets."""
    return {t for t, old in stored_ids.items()
            if old and old != NO_TOPIC_ID and current_ids.get(t) not in (None, NO_TOPIC_ID)
            and current_ids[t] != old}


def _apportion(amount: int, weights: Sequence[int]) -> list[int]:
    """``amount`` split over ``weights`` proportionally, whole numbers that sum to it
    (largest remainder; ties to the earlier weight), never more than a weight."""
    total = sum(weights)
    if amount >= total:
        return list(weights)
    exact = [amount * w / total for w in weights]
    shares = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - shares[i]), i))
    for i in order[:amount - sum(shares)]:
        shares[i] += 1
    return shares


def split(ranges: Iterable[PartitionRange], per_slice: int, limit: int | None = None
          ) -> list[list[PartitionRange]]:
    """Bounded ``ranges`` cut into slices of at most ``per_slice`` offsets, each partition's
    share of a slice proportional to what it has left, so partitions advance together;
    ``limit``: at most that many offsets in all (the rest is left for the next run).

    Deterministic: a run that resumes at a slice boundary cuts the rest as the run before
    it would have. Empty ranges are left out; no slices when there is nothing to read.
    """
    if per_slice < 1:
        raise ValueError(f"per_slice must be at least 1, got {per_slice}")
    todo = [r for r in ranges if r.stop is not None and r.stop > r.start]
    if any(r.stop is None or r.stop < r.start for r in ranges):
        raise ValueError("split takes bounded ranges with stop >= start")
    left = [r.stop - r.start for r in todo]
    budget = sum(left) if limit is None else min(limit, sum(left))
    pos = [r.start for r in todo]
    slices = []
    while budget > 0:
        take = _apportion(min(per_slice, budget), left)
        part = []
        for i, n in enumerate(take):
            if n:
                part.append(todo[i]._replace(start=pos[i], stop=pos[i] + n))
                pos[i] += n
                left[i] -= n
        budget -= sum(take)
        slices.append(part)
    return slices


def trim(part: Sequence[PartitionRange], sizes: dict[str, list[tuple[int, int]]],
         max_bytes: int) -> list[PartitionRange]:
    """The slice ``part`` cut so its messages weigh at most ``max_bytes``.

    ``sizes``: for each range (by ``key``), ``(offset, bytes)`` of its messages in offset
    order. Every partition keeps the same fraction of its messages (the largest that
    fits), so partitions still advance together; a slice keeps at least one message, so
    a run always moves on, even past a message larger than the limit.

    >>> part = [PartitionRange("t", 0, 10, 14), PartitionRange("t", 1, 0, 2)]
    >>> sizes = {"t/0": [(10, 5), (11, 5), (12, 5), (13, 5)], "t/1": [(0, 10), (1, 900)]}
    >>> [(r.key, r.start, r.stop) for r in trim(part, sizes, 100)]  # t/1's 900 bytes wait
    [('t/0', 10, 13), ('t/1', 0, 1)]
    >>> [(r.key, r.stop) for r in trim(part, sizes, 1000)]
    [('t/0', 14), ('t/1', 2)]
    >>> big = {"t/0": [(10, 5000), (11, 5000)]}
    >>> [(r.key, r.stop) for r in trim([part[0]._replace(stop=12)], big, 100)]  # one, anyway
    [('t/0', 11)]
    """
    if max_bytes < 1:
        raise ValueError(f"max_bytes must be at least 1, got {max_bytes}")
    ranges = [r for r in part if sizes.get(r.key)]
    if sum(b for r in ranges for _, b in sizes[r.key]) <= max_bytes:
        return list(part)
    cumulative = {}
    for r in ranges:
        total, acc = 0, []
        for _, b in sizes[r.key]:
            total += b
            acc.append(total)
        cumulative[r.key] = acc

    def taken(k: int) -> dict[str, int]:
        """Messages of each range at step ``k`` of ``steps``: the same fraction of each."""
        return {r.key: len(sizes[r.key]) * k // steps for r in ranges}

    def weight(counts: dict[str, int]) -> int:
        return sum(cumulative[key][n - 1] for key, n in counts.items() if n)

    steps = max(len(sizes[r.key]) for r in ranges)
    low, high = 0, steps  # the largest k whose messages fit
    while low < high:
        mid = (low + high + 1) // 2
        if weight(taken(mid)) <= max_bytes:
            low = mid
        else:
            high = mid - 1
    counts = taken(low)
    if not any(counts.values()):  # not even one step fits: one message, to move on
        counts = {ranges[0].key: 1}
    out = []
    for r in ranges:
        n = counts.get(r.key, 0)
        if n == 0:
            continue
        listed = sizes[r.key]
        stop = r.stop if n == len(listed) else listed[n][0]
        out.append(r._replace(stop=stop))
    return out

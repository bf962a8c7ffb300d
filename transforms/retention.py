"""Which twins a long-lived deployment lets go: assets not seen for a time to live.

Bounded Kafka runs keep every asset's twin between runs (:mod:`pipelines.statefile`).
Assets come and go (replaced, renamed, decommissioned, a mistyped id seen once), so
without a limit the state only grows. An asset whose newest reading is older than the
*stream time* minus the time to live is evicted: its open windows are closed and scored
(:meth:`~transforms.twin.AssetTwin.flush`), so its last state is on the state output, and
it leaves the state file. If it comes back, it starts a new twin.

Event time, not the wall clock, as Kafka Streams measures retention in *stream time* (the
newest event time seen): a backlog or a replay of last year's data keeps the twins it is
about, and the same input evicts the same assets whenever it is run, so a rerun after a
crash gives the same outputs. The stream time is bounded by the wall clock (plus the
accepted clock skew), so one reading stamped far in the future cannot make every other
asset look stale.

>>> seen = {"a": 1_000, "b": 90_000, "c": 100_000}
>>> stream_time_ms(seen, wall_ms=10**12, max_future_ms=0)
100000
>>> expired(seen, ttl_ms=50_000, stream_ms=100_000)
['a']
>>> expired(seen, ttl_ms=0, stream_ms=100_000)  # 0: never
[]
"""

from __future__ import annotations

from collections.abc import Mapping

from transforms.validate import DEFAULT_MAX_FUTURE_MS


def stream_time_ms(seen: Mapping[str, int], wall_ms: int,
                   max_future_ms: int = DEFAULT_MAX_FUTURE_MS) -> int | None:
    """The newest event time in ``seen`` (asset -> its newest reading), at most
    ``wall_ms + max_future_ms``; ``None`` when nothing was seen."""
    if not seen:
        return None
    return min(max(seen.values()), wall_ms + max_future_ms)


def expired(seen: Mapping[str, int], ttl_ms: int, stream_ms: int | None) -> list[str]:
    """Assets whose newest reading is more than ``ttl_ms`` older than ``stream_ms``, in
    order; none when ``ttl_ms`` is 0 (keep every twin) or there is no stream time."""
    if ttl_ms < 0:
        raise ValueError(f"ttl_ms must be 0 (never) or more, got {ttl_ms}")
    if ttl_ms == 0 or stream_ms is None:
        return []
    return sorted(a for a, last in seen.items() if last < stream_ms - ttl_ms)

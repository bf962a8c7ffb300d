"""Which twins leave the state: assets not seen for the time to live, in event time."""

from __future__ import annotations

import pytest

from transforms.retention import expired, stream_time_ms

DAY = 86_400_000


def test_stream_time_is_the_newest_event_but_never_past_the_wall_clock():
    seen = {"a": 10 * DAY, "b": 8 * DAY}
    assert stream_time_ms(seen, wall_ms=20 * DAY) == 10 * DAY
    # one asset stamped years ahead does not make the others look stale
    poisoned = {**seen, "liar": 10_000 * DAY}
    now = 11 * DAY
    assert stream_time_ms(poisoned, wall_ms=now, max_future_ms=60_000) == now + 60_000
    assert expired(poisoned, 7 * DAY, stream_time_ms(poisoned, now, 60_000)) == []
    assert stream_time_ms({}, wall_ms=now) is None


def test_assets_older_than_the_ttl_expire_in_order():
    seen = {"z": 0, "a": DAY, "b": 8 * DAY, "c": 9 * DAY}
    assert expired(seen, 7 * DAY, 9 * DAY) == ["a", "z"]
    assert expired(seen, 7 * DAY, 8 * DAY) == ["z"]  # exactly the ttl: kept
    assert expired(seen, 0, 9 * DAY) == []  # 0: never
    assert expired(seen, 7 * DAY, None) == []
    with pytest.raises(ValueError):
        expired(seen, -1, 9 * DAY)

"""EventTimeGuard: one forged event time is held back, a real gap is confirmed and taken."""

from __future__ import annotations

import copy
import pickle

import numpy as np
import pytest

from transforms.eventtime import NO_TIME, EventTimeGuard

HOUR = 3_600_000
YEAR_2100 = 4_102_444_800_000


def admitted(guard: EventTimeGuard, times, latest: int) -> list[bool]:
    """Each reading in arrival order, the asset's latest moving with what is admitted."""
    out = []
    for ts in times:
        ok = guard.admit(ts, latest) is None
        if ok:
            latest = max(latest, ts)
        out.append(ok)
    return out


def stream(start: int, n: int, step: int = 5_000) -> list[int]:
    return [start + i * step for i in range(n)]


def test_one_forged_reading_is_held_back_and_the_asset_goes_on():
    guard = EventTimeGuard(max_jump_ms=HOUR, confirmations=3)
    times = stream(0, 10) + [YEAR_2100] + stream(50_000, 100)
    ok = admitted(guard, times, NO_TIME)
    assert ok == [True] * 10 + [False] + [True] * 100
    assert guard.held == 0  # the next genuine reading cleared the held one


def test_the_held_back_reason_says_how_far_and_how_to_confirm():
    guard = EventTimeGuard(max_jump_ms=HOUR, confirmations=3)
    why = guard.admit(1_000 + 26 * HOUR, latest_ms=1_000)
    assert why == (f"ts_ms {1_000 + 26 * HOUR} is 1 d 2 h ahead of the asset's latest event "
                   "time 1000; held back until 3 readings in a row confirm the jump (1 so far)")


def test_a_real_gap_is_taken_once_confirmed():
    """An asset offline for a day: its first two readings after the gap are held back
    (dead letters), the third confirms the jump and everything after is normal."""
    guard = EventTimeGuard(max_jump_ms=HOUR, confirmations=3)
    before, after = stream(0, 50), stream(24 * HOUR, 50)
    assert admitted(guard, before + after, NO_TIME) == [True] * 50 + [False, False] + [True] * 48


def test_a_gap_within_the_bound_costs_nothing():
    guard = EventTimeGuard(max_jump_ms=HOUR, confirmations=3)
    times = stream(0, 20) + stream(95_000 + 40 * 60_000, 20)  # a 40-minute repair
    assert all(admitted(guard, times, NO_TIME))


def test_jumps_that_do_not_agree_are_never_confirmed():
    """A clock gone mad: every reading far ahead, each far from the one before."""
    guard = EventTimeGuard(max_jump_ms=HOUR, confirmations=3)
    wild = [10 * HOUR, 200 * HOUR, 30 * HOUR, 5_000 * HOUR, 70 * HOUR, 900 * HOUR]
    assert admitted(guard, wild, latest=0) == [False] * 6
    # disorder within the bound does not break a confirmation: the same new timeline
    guard = EventTimeGuard(max_jump_ms=HOUR, confirmations=3)
    assert admitted(guard, [10 * HOUR, 10 * HOUR - 20_000, 10 * HOUR + 5_000], 0) == [
        False, False, True]


def test_a_reading_behind_or_on_time_is_always_admitted_and_first_readings_too():
    guard = EventTimeGuard(max_jump_ms=HOUR, confirmations=3)
    assert guard.admit(YEAR_2100, NO_TIME) is None  # no history: nothing to judge against
    assert guard.admit(0, latest_ms=YEAR_2100) is None  # behind: the buffer says late
    assert guard.admit(HOUR, latest_ms=0) is None  # exactly the bound


def test_off_and_single_confirmation():
    assert EventTimeGuard(max_jump_ms=None).admit(YEAR_2100, 0) is None
    assert EventTimeGuard(max_jump_ms=None).admits_all(np.array([0, YEAR_2100]), 0)
    assert EventTimeGuard(max_jump_ms=HOUR, confirmations=1).admit(YEAR_2100, 0) is None
    with pytest.raises(ValueError, match="confirmations"):
        EventTimeGuard(confirmations=0)
    with pytest.raises(ValueError, match="max_jump_ms"):
        EventTimeGuard(max_jump_ms=-1)


def test_held_readings_survive_a_pickle_round_trip():
    """The guard lives in the twin's engine state: what it held back must survive it."""
    guard = EventTimeGuard(max_jump_ms=HOUR, confirmations=3)
    assert guard.admit(24 * HOUR, latest_ms=0) is not None
    clone = pickle.loads(pickle.dumps(guard))
    assert clone.held == 1 and clone.admit(24 * HOUR + 5_000, 0) is not None
    assert clone.admit(24 * HOUR + 10_000, 0) is None  # the third in a row


@pytest.mark.parametrize("seed", range(40))
def test_admits_all_agrees_with_admit_row_by_row(seed):
    """The hot path's vectorized check says yes exactly when no row would be held back."""
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 30))
    ts = np.cumsum(rng.integers(0, 10_000, n)) + int(rng.integers(0, 10**9))
    if seed % 3 == 0:  # a jump somewhere
        ts[int(rng.integers(0, n))] += int(rng.choice([2 * HOUR, 50 * 24 * HOUR]))
    if seed % 5 == 0:  # disorder
        rng.shuffle(ts)
    latest = NO_TIME if seed % 4 == 0 else int(ts[0]) - int(rng.choice([1_000, 2 * HOUR]))
    guard = EventTimeGuard(max_jump_ms=HOUR, confirmations=3)
    want = all(admitted(copy.deepcopy(guard), ts.tolist(), latest))
    assert guard.admits_all(ts, latest) == want
    # with a reading held back, the check never says yes: each row must be judged
    assert guard.admit(5 * HOUR, latest_ms=0) is not None
    assert not guard.admits_all(ts, latest)

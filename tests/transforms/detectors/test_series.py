"""The series detector: what ``twin replay`` and the NAB benchmark run (the contract every
detector keeps is in test_contract.py)."""

from __future__ import annotations

import math
import pickle
import random

from transforms.detectors.series import SERIES_CONFIG, SHIFT_SCORE, SeriesDetector


def noise(n: int, seed: int = 0, level: float = 10.0, sd: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    return [level + rng.gauss(0, sd) for _ in range(n)]


def feed(det: SeriesDetector, values, col: str = "value"):
    out = []
    for v in values:
        x = {col: v}
        a = det.assess(x)
        out.append((a, det.learn_one(x, a)))
    return out


def test_warmup_scores_zero_then_scores_in_unit_interval():
    det = SeriesDetector(**SERIES_CONFIG)
    steps = feed(det, noise(400))
    assert all(a.warming_up and a.score == 0.0 for a, _ in steps[:150])
    assert not any(a.warming_up for a, _ in steps[150:])
    assert all(0.0 <= a.score < 1.0 for a, _ in steps)


def test_pickle_round_trip_scores_identically():
    det = SeriesDetector(**SERIES_CONFIG)
    feed(det, noise(300, seed=1))
    clone = pickle.loads(pickle.dumps(det))
    for v in noise(100, seed=2) + [25.0, 10.0]:
        x = {"value": v}
        assert clone.assess(x).score == det.assess(x).score
        assert clone.learn_one(x) == det.learn_one(x)


def test_score_does_not_learn():
    det = SeriesDetector(**SERIES_CONFIG)
    feed(det, noise(300, seed=3))
    before = pickle.dumps(det)
    s1 = det.score_one({"value": 40.0})
    assert det.score_one({"value": 40.0}) == s1
    assert pickle.dumps(det) == before


def test_spike_alarms_once_then_refractory():
    det = SeriesDetector(**SERIES_CONFIG)
    quiet = feed(det, noise(1000, seed=4))
    late_alarms = sum(a.is_anomaly for a, _ in quiet[500:])
    assert late_alarms <= 7  # i.i.d. records: ~5 ln(1000/500) = 3.5 expected
    spike = det.assess({"value": 30.0})  # 20 sd
    assert spike.is_anomaly and spike.score > 0.8
    assert spike.contributors[0].startswith("value.")
    det.learn_one({"value": 30.0}, spike)
    after = feed(det, [30.0] + noise(48, seed=5))  # the same spike again, within 50 steps
    assert all(a.score == 0.0 and not a.is_anomaly for a, _ in after)


def test_seeded_step_change_is_reported_as_drift_and_not_paged_on():
    det = SeriesDetector(**SERIES_CONFIG)
    feed(det, noise(600, seed=6))
    steps = feed(det, noise(600, seed=7, level=16.0))  # +6 sd, lasting
    drifts = [i for i, (_, d) in enumerate(steps) if d]
    assert drifts and drifts[0] < 100 and det.drift_events >= 1  # change point, promptly
    alarms = [i for i, (a, _) in enumerate(steps) if a.is_anomaly]
    assert len(alarms) <= 3  # the new level is learned, not paged on


def test_step_alarms_at_its_first_row_unless_in_a_refractory_period():
    det = SeriesDetector(**SERIES_CONFIG)
    feed(det, noise(600, seed=11))
    assert not det._quiet()  # precondition: no alarm in the last 50 steps of this seed
    (a, _), *_ = feed(det, noise(5, seed=7, level=16.0))
    # a new level: far from the slow level, and in a bin never visited (with the record
    # margins of the z views the bin's rarity may be the larger ratio)
    assert a.is_anomaly and a.score > 0.9 and a.contributors[0] in ("value.level", "value.rarity")
    # seed 6 has a noise alarm 6 steps before the step: a step less than
    # quiet_override (2x) beyond the records is then held back by the refractory period
    det = SeriesDetector(**SERIES_CONFIG)
    feed(det, noise(600, seed=6))
    assert det._quiet()
    (a, _), *_ = feed(det, noise(5, seed=7, level=16.0))
    assert not a.is_anomaly and 1.0 < a.max_z < det.quiet_override


def test_columns_are_judged_separately_and_missing_cells_are_skipped():
    det = SeriesDetector(**SERIES_CONFIG)
    rng = random.Random(8)
    for _ in range(600):
        det.learn_one({"a": rng.gauss(0, 1), "b": 1000 + rng.gauss(0, 50), "c": math.nan})
    a = det.assess({"a": rng.gauss(0, 1), "b": 1000 + 50 * 12, "c": None})
    assert a.is_anomaly and a.contributors[0].startswith("b.")
    assert "c" not in det._series  # never seen a number: nothing learned


# -- the pattern-change channel (_ShiftConfirm) -----------------------------------------
def cycle_then_quiet(n: int = 2000, change: int = 1500, seed: int = 0) -> list[float]:
    """A daily-like cycle (48 rows) that turns, at ``change``, into a flat and quieter
    signal inside the old range: no value is a record, the pattern is new."""
    rng = random.Random(seed)
    return [10 + 3 * math.sin(2 * math.pi * i / 48) + rng.gauss(0, 0.5) if i < change
            else 10 + rng.gauss(0, 0.1) for i in range(n)]


def shift_alarms(steps) -> list[int]:
    return [i for i, (a, _) in enumerate(steps)
            if any(c.endswith(".shift") for c in a.contributors)]


def test_new_shape_that_turns_quieter_is_a_pattern_change_alarm():
    det = SeriesDetector(**SERIES_CONFIG)
    steps = feed(det, cycle_then_quiet())
    fired = shift_alarms(steps)
    assert fired and 1500 <= fired[0] < 1560  # within ~1 cycle of the change, not before
    a = steps[fired[0]][0]
    assert a.is_anomaly and a.score == SHIFT_SCORE and a.contributors == ["value.shift"]
    # the record views' refractory is theirs: a channel alarm does not start it
    det = SeriesDetector(**SERIES_CONFIG)
    feed(det, cycle_then_quiet()[:fired[0] + 1])
    assert det._last_alarm is None or det._last_alarm < fired[0]


def test_pattern_change_channel_is_per_column():
    det = SeriesDetector(**SERIES_CONFIG)
    rows = [{"steady": s, "load": v}
            for s, v in zip(cycle_then_quiet(change=10**9, seed=7), cycle_then_quiet())]
    steps = []
    for x in rows:
        a = det.assess(x)
        steps.append((a, det.learn_one(x, a)))
    fired = shift_alarms(steps)
    assert fired and 1500 <= fired[0] < 1560
    assert all(steps[i][0].contributors == ["load.shift"] for i in fired)


def test_pattern_change_channel_is_silent_on_stationary_noise():
    det = SeriesDetector(**SERIES_CONFIG)
    assert not shift_alarms(feed(det, noise(2000, seed=0)))
    # a young |V| history can be fooled (8 of 20 seeds fire once, at rows 326-391, just
    # past the 100 values it needs); later, stationary noise never confirms a new shape
    for seed in range(1, 6):
        det = SeriesDetector(**SERIES_CONFIG)
        assert all(i < 400 for i in shift_alarms(feed(det, noise(2000, seed=seed))))


def test_pattern_change_channel_pickles_mid_stream_and_scores_before_learning():
    values = cycle_then_quiet(seed=3)
    det = SeriesDetector(**SERIES_CONFIG)
    feed(det, values[:1200])
    clone = pickle.loads(pickle.dumps(det))
    fired = 0
    for v in values[1200:]:
        x = {"value": v}
        before = pickle.dumps(det)
        a = det.assess(x)
        assert det.assess(x) == a and pickle.dumps(det) == before  # scoring learns nothing
        c = clone.assess(x)
        assert (c.score, c.is_anomaly, c.contributors) == (a.score, a.is_anomaly,
                                                          a.contributors)
        assert clone.learn_one(x, c) == det.learn_one(x, a)
        fired += "value.shift" in a.contributors
    assert fired  # the round trip carried the channel through an alarm


def test_records_must_be_beaten_by_the_views_margin():
    """A z view alarms only past its record times its margin (25 % for one value, 25 %/√39
    for the ~39-value smoothed level); the rarity of a bin never visited needs no margin,
    of a bin already visited the full 25 %."""
    det = SeriesDetector(**SERIES_CONFIG)
    feed(det, noise(400, seed=11))
    nov = det._series["value"]
    nov.records = [4.0, 4.0, 6.0, 2.0]
    seen = 10.0  # the mean's bin: visited many times
    assert nov._count(seen) >= 1.0
    level = nov.ratios([4.0 * 1.2, 0.0, 0.0, 0.0], seen)  # beats the record by 20 %
    assert abs(level[0] - 1.2 / 1.25) < 1e-12 and level[2] == 0
    assert nov.ratios([4.0 * 1.3, 0.0, 0.0, 0.0], seen)[0] > 1.0
    smooth = nov.ratios([0.0, 0.0, 0.0, 2.0 * 1.05], seen)  # 5 % > 25 % / sqrt(39) = 4 %
    assert smooth[0] > 1.0 and smooth[2] == 3
    assert nov.ratios([0.0, 0.0, 6.0 * 1.1, 0.0], seen)[0] < 1.0  # visited: needs 25 %
    never = 1e6  # far outside anything seen: a bin never visited
    assert nov._count(never) == 0.0
    assert nov.ratios([0.0, 0.0, 6.0 * 1.01, 0.0], never)[0] > 1.0  # no margin

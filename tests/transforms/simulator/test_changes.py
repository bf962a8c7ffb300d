"""The simulator as a what-if's ground truth: load changes, replaying an asset under other
commands, and the opt-in wear law."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.simulator import Fleet, FleetConfig
from transforms.simulator.physics import WEAR_LAW_FAULTS, load_reading, wear_rate

HOUR = 3_600_000


def _config(**kw) -> FleetConfig:
    base = dict(assets=4, duration_s=4 * 3600, seed=3, regime_fraction=0.0,
                malformed_rate=0.0, dropout_rate=0.0, duplicate_rate=0.0,
                out_of_order_rate=0.0, late_rate=0.0)
    return FleetConfig(**{**base, **kw})


def test_rerun_gives_the_fleets_own_values():
    fleet = Fleet(_config())
    truth = fleet.rerun("motor-001")
    sums: dict[int, list[float]] = {}
    for s in fleet.samples():
        if s.asset_id == "motor-001":
            sums.setdefault(s.ts_ms - s.ts_ms % 60_000, []).append(s.values["torque"])
    starts = list(truth["window_start_ms"])
    for w in (starts[5], starts[60], starts[-2]):
        assert truth["values"]["torque"][starts.index(w)] == pytest.approx(np.mean(sums[w]))


def test_a_load_change_moves_the_load_sensor_and_nothing_before_it():
    fleet = Fleet(_config(fault_fraction=0.0))
    spec = fleet.assets[0]
    at = fleet.config.start_ms + 2 * HOUR
    base = fleet.rerun(spec.asset_id)
    more = fleet.rerun(spec.asset_id, loads=[(at, 0.2)])
    w = base["window_start_ms"]
    before, after = w < at, w >= at + 600_000
    assert np.array_equal(base["values"]["flow"][before], more["values"]["flow"][before])
    gained = np.mean(more["values"]["flow"][after] - base["values"]["flow"][after])
    assert gained == pytest.approx(load_reading("pump", 0.2), rel=0.05)
    # the fleet's own method does the same for generated messages
    fleet.change_load(spec.asset_id, 0.2, at)
    with pytest.raises(KeyError):
        fleet.change_load("pump-999", 0.1, at)


def test_without_the_wear_law_a_fault_fails_on_its_clock():
    fleet = Fleet(_config(fault_fraction=1.0))
    f = next(f for f in fleet.scenario.faults.values() if f.fault in WEAR_LAW_FAULTS)
    slow = fleet.rerun(f.asset_id, setpoints=[(f.start_ms, 0.8)])
    assert slow["failed_ms"] is None
    w = slow["window_start_ms"]
    assert not np.any((w >= f.failure_ms) & (w < f.repaired_ms - 60_000))


def test_with_the_wear_law_a_derating_delays_the_failure_by_the_law():
    fleet = Fleet(_config(fault_fraction=1.0, wear_law=True))
    f = next(f for f in fleet.scenario.faults.values() if f.fault in WEAR_LAW_FAULTS)
    spec = next(a for a in fleet.assets if a.asset_id == f.asset_id)
    as_planned = fleet.rerun(f.asset_id, until_ms=fleet.config.end_ms + 24 * HOUR)
    assert abs(as_planned["failed_ms"] - f.failure_ms) <= 5_000  # at the base operating point
    half = f.start_ms + (f.failure_ms - f.start_ms) // 2
    derated = fleet.rerun(f.asset_id, setpoints=[(half, 0.85)],
                          until_ms=fleet.config.end_ms + 24 * HOUR)
    rate = float(wear_rate(f.fault, 0.85, spec.load, spec.load))
    assert rate < 1
    expected = half + (f.failure_ms - half) / rate
    assert derated["failed_ms"] == pytest.approx(expected, abs=10_000)
    w = derated["window_start_ms"]  # offline for its repair after the later failure
    assert not np.any((w >= derated["failed_ms"] + 60_000)
                      & (w < derated["failed_ms"] + (f.repaired_ms - f.failure_ms) - 60_000))


def test_the_laws_at_the_base_point_and_below():
    assert wear_rate("bearing_wear", 1.0, 0.6, 0.6) == pytest.approx(1.0)
    assert wear_rate("winding_insulation", 1.0, 0.6, 0.6) == pytest.approx(1.0)
    assert float(wear_rate("cavitation", 0.8, 0.6, 0.6)) == 1.0
    # ISO 281 with vibration as the load: 0.85 * ((0.6 + 0.4 * 0.85^2) / 1)^3
    assert wear_rate("bearing_wear", 0.85, 0.6, 0.6) == pytest.approx(
        0.85 * (0.6 + 0.4 * 0.85 ** 2) ** 3)


def test_the_default_fleet_is_unchanged_by_the_new_knobs():
    a = [(s.ts_ms, s.values) for s in Fleet(_config(fault_fraction=0.7)).samples()]
    b = [(s.ts_ms, s.values) for s in Fleet(_config(fault_fraction=0.7,
                                                    wear_law=False)).samples()]
    assert a == b

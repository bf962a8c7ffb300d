"""The simulated physics: coupling, lags, and what each fault does to the sensors."""

from __future__ import annotations

import numpy as np
import pytest

from transforms.simulator.physics import AssetModel
from transforms.simulator.scenario import AssetSpec, FaultEpisode, RegimeChange

START = 1_795_800_000_000
MIN = 60_000
DT = 5.0


def spec(asset_type: str) -> AssetSpec:
    return AssetSpec(0, f"{asset_type}-000", asset_type, "helios", load=0.6, ambient_k=293.0,
                     nominal_speed=155.0, phase_ms=0)


def simulate(asset_type, minutes, fault=None, regime=None, speed=1.0, seed=0):
    model = AssetModel(spec(asset_type), DT, START, fault, regime)
    rng = np.random.default_rng(seed)
    t = START + np.arange(int(minutes * 60 / DT)) * int(DT * 1000)
    out = {k: [] for k in ("t",)}
    for chunk in np.array_split(t, max(1, len(t) // 120)):
        v = model.step(chunk, np.full(len(chunk), speed), rng)
        out["t"].append(chunk)
        for k, x in v.items():
            out.setdefault(k, []).append(x)
    return {k: np.concatenate(x) for k, x in out.items()}


def between(v, lo_min, hi_min):
    m = (v["t"] - START) / MIN
    return (m >= lo_min) & (m < hi_min)


@pytest.mark.parametrize("asset_type", ["pump", "motor"])
def test_load_step_raises_current_at_once_and_temperature_with_a_lag(asset_type):
    step = RegimeChange(f"{asset_type}-000", "load_step", START + 60 * MIN, 0.3)
    v = simulate(asset_type, 120, regime=step)
    current = "motor_current" if asset_type == "pump" else "current"
    before, just_after, later = between(v, 50, 60), between(v, 60, 61), between(v, 100, 120)
    assert v[current][just_after].mean() > 1.2 * v[current][before].mean()
    rise = v["bearing_temp"] - v["ambient_temp"]
    jump = rise[later].mean() - rise[before].mean()
    assert jump > 3.0  # kelvin of extra friction heat at the higher load
    assert rise[just_after].mean() - rise[before].mean() < 0.5 * jump  # thermal lag


def test_ambient_shift_moves_temperatures_not_their_rise():
    shift = RegimeChange("motor-000", "ambient_shift", START + 30 * MIN, 8.0, ramp_s=3600)
    v, calm = simulate("motor", 180, regime=shift), simulate("motor", 180)
    before, after = between(v, 10, 30), between(v, 150, 180)
    assert np.allclose(v["ambient_temp"][before], calm["ambient_temp"][before])
    assert (v["ambient_temp"] - calm["ambient_temp"])[after].mean() == pytest.approx(8.0, abs=0.1)
    rise = v["winding_temp"] - v["ambient_temp"]
    assert abs(rise[after].mean() - rise[before].mean()) < 1.0


def test_bearing_wear_grows_vibration_towards_failure():
    f = FaultEpisode("pump-000", "bearing_wear", "gradual", "vibration", START + 30 * MIN,
                     START + 150 * MIN, START + 180 * MIN, 3.0)
    v = simulate("pump", 150, fault=f)
    base = v["vibration"][between(v, 0, 30)].mean()
    assert v["vibration"][between(v, 35, 40)].mean() < 1.2 * base  # starts slowly
    assert v["vibration"][between(v, 140, 150)].mean() > 2.2 * base


def test_cavitation_collapses_suction_and_makes_vibration_noisy_at_once():
    f = FaultEpisode("pump-000", "cavitation", "abrupt", "suction_pressure", START + 30 * MIN,
                     START + 90 * MIN, START + 120 * MIN, 0.8)
    v = simulate("pump", 60, fault=f)
    before, after = between(v, 20, 30), between(v, 30, 35)
    assert v["suction_pressure"][after].mean() < 0.8 * v["suction_pressure"][before].mean()
    assert v["vibration"][after].std() > 2 * v["vibration"][before].std()


def test_insulation_breakdown_heats_the_winding():
    f = FaultEpisode("motor-000", "winding_insulation", "gradual", "winding_temp",
                     START + 30 * MIN, START + 120 * MIN, START + 150 * MIN, 40.0)
    v = simulate("motor", 120, fault=f)
    rise = v["winding_temp"] - v["ambient_temp"]
    assert rise[between(v, 110, 120)].mean() - rise[between(v, 20, 30)].mean() > 20


def test_stuck_sensor_repeats_one_value_exactly_until_failure():
    f = FaultEpisode("motor-000", "stuck_sensor", "sensor", "bearing_temp", START + 30 * MIN,
                     START + 60 * MIN, START + 90 * MIN, 0.0)
    v = simulate("motor", 90, fault=f)
    stuck = v["bearing_temp"][between(v, 30, 60)]
    assert len(set(stuck.tolist())) == 1
    assert len(set(v["bearing_temp"][between(v, 60, 90)].tolist())) > 100


def test_sensor_drift_biases_the_reading_not_the_machine():
    f = FaultEpisode("pump-000", "sensor_drift", "sensor", "bearing_temp", START + 30 * MIN,
                     START + 90 * MIN, START + 120 * MIN, 0.12)
    v = simulate("pump", 90, fault=f)
    healthy = simulate("pump", 90)
    last = between(v, 85, 90)
    celsius = healthy["bearing_temp"][last] - 273.15
    bias = v["bearing_temp"][last] - healthy["bearing_temp"][last]
    assert bias.mean() == pytest.approx(0.12 * celsius.mean() * 0.97, rel=0.08)
    assert np.allclose(v["vibration"], healthy["vibration"])  # the machine is fine


def test_speed_setpoint_scales_flow_linearly_and_current_cubically():
    full, slow = simulate("pump", 30), simulate("pump", 30, speed=0.8)
    ratio = slow["flow"].mean() / full["flow"].mean()
    assert ratio == pytest.approx(0.8, abs=0.02)
    assert slow["motor_current"].mean() < full["motor_current"].mean()

"""The roll-forward against a case worked out by hand.

A motor whose vibration model is ``z_vib = 0.1 + 0.8 z_speed + 0.5 z_torque`` (scaled units,
no lagged inputs, no weather), torque following speed by 0.6 N*m per rad/s in its history,
a torque deviation of +30 N*m that halves every window; the scenario sets the speed to
140 rad/s. Every number below is written out from the formulas of
transforms/whatif/rollforward.py's docstring, not taken from the code.
"""

from __future__ import annotations

import copy
import math

import pytest

from transforms.whatif import ScenarioError, whatif
from transforms.whatif.fidelity import Z90
from transforms.whatif.model import ModelError

RLS_P = 0.01  # the RLS covariance, 0.01 I
R2 = 0.04


def document(**over) -> dict:
    doc = {
        "version": 1, "asset_id": "motor-h", "asset_type": "motor", "ts_ms": 1_000_000,
        "window_s": 60.0, "windows_seen": 500, "anomaly_score": 0.2,
        "values": {"speed": 150.0, "torque": 330.0, "vibration": 0.003},
        "noise_z": {},
        "detector": {
            "asset_type": "motor", "regressors": ["speed", "torque"], "targets": ["vibration"],
            "rises": [], "ambient": None, "lag_alphas": [], "forgetting": 0.999,
            "ambient_alpha": 0.25,
            "scale": {"speed": [150.0, 10.0], "torque": [300.0, 30.0],
                      "vibration": [0.003, 0.0003]},
            "avg": {}, "ambient_avg": None,
            "weights": {"vibration": [0.1, 0.8, 0.5]},
            "covariances": [[RLS_P, 0.0, 0.0, RLS_P, 0.0, RLS_P]],  # upper triangle
            "covariance_of": {"vibration": 0},
            "r2": {"vibration": R2}, "noise_mean": {}, "noise_var": {},
            "n_seen": 500, "warmup": 60, "adapt_left": 0, "alarm_above": 0.999, "n_terms": 4,
        },
        "operating": {
            "driven": ["speed", "torque"], "exogenous": [],
            "level": {"speed": 150.0, "torque": 300.0},
            "cov": [[100.0, 60.0], [60.0, 900.0]], "phi": 0.5, "exo": {}, "n": 1000,
            "level_alpha": 1 / 60, "fading": 0.001, "weather_alpha": 0.2,
        },
        "health": {"health": 0.6, "excess": 3.0, "level": 0.6, "trend": -0.01, "n": 10,
                   "alpha": 0.3, "beta": 0.1, "failure_level": 0.1, "max_rul_s": 30 * 86400.0,
                   "healthy_z": 3.0, "scale_z": 6.0, "smoothing": 0.3},
        "fidelity": {"error": 0.01, "coverage": 0.9, "windows": 400,
                     "resid_level": {"vibration": 0.0006}, "resid_trend": {"vibration": 0.0},
                     "health_err_var": 0.0, "kappa": 1.0, "max_leverage": 0.05,
                     "level_alpha": 0.2, "trend_beta": 0.05},
        "policy": {"setpoint_name": "speed", "setpoint": 1.0, "nominal": 150.0,
                   "setpoint_min": 0.8, "setpoint_max": 1.05, "derate_step": 0.05,
                   "setpoint_interval_s": 600.0, "setpoint_changed_ms": None,
                   "alert_open": False, "dry_run": False},
    }
    for key, value in over.items():
        part, _, name = key.partition("__")
        if name:
            doc[part][name] = value
        else:
            doc[part] = value
    return doc


SPEED_140 = {"steps": [{"set": {"speed": 140}}], "horizon": "2h"}


def _at(result, path, sensor, window):
    s = result[path]["sensors"][sensor]
    return s["mean"][window - 1], s["lo"][window - 1], s["hi"][window - 1]


def test_the_first_window_by_hand():
    r = whatif(document(), SPEED_140, resolution_s=60)
    # the setpoint is set: its shift from the level is -10 rad/s; torque follows by the
    # history's regression (60/100 per rad/s) and keeps half its +30 deviation
    b = 60.0 / (100.0 + 100.0 * 1e-6)  # the conditioning's ridge: a millionth of a variance
    torque = 300.0 + 0.5 * 30.0 + b * -10.0
    z_speed, z_torque = (140.0 - 150.0) / 10.0, (torque - 300.0) / 30.0
    vib = 0.003 + 0.0003 * (0.1 + 0.8 * z_speed + 0.5 * z_torque)
    mean, lo, hi = _at(r, "scenario_path", "vibration", 1)
    assert mean == pytest.approx(vib, rel=1e-6)
    assert r["scenario_path"]["sensors"]["torque"]["mean"][0] == pytest.approx(torque, rel=1e-6)
    # variance: the torque wander given the held speed, (1 - phi^2) of its conditional
    # variance, through the model; the residual noise at the inputs' leverage; the
    # regression's uncertainty at this shift
    cond = 900.0 - 60.0 * b
    wander = (1 - 0.5 ** 2) * cond
    h_torque = 0.0003 * 0.5 / 30.0
    var_state = h_torque ** 2 * wander
    lev = RLS_P * (1 + z_speed ** 2 + z_torque ** 2) + RLS_P * wander / 30.0 ** 2
    var_noise = 0.0003 ** 2 * R2 * (1 + lev)
    lev_op = 10.0 ** 2 / (1000 * (100.0 + 1e-4))
    var_b = lev_op * h_torque ** 2 * cond
    sd = math.sqrt(var_state + var_noise + var_b)
    assert (hi - lo) / 2 == pytest.approx(Z90 * sd, rel=1e-5)
    assert not r["scenario_path"]["extrapolating"]


def test_the_deviation_fades_and_the_answer_settles():
    r = whatif(document(), SPEED_140, resolution_s=60)
    torque = r["baseline"]["sensors"]["torque"]["mean"]
    assert torque[0] == pytest.approx(315.0)  # 300 + 30 * 0.5
    assert torque[2] == pytest.approx(303.75)  # 300 + 30 * 0.5**3
    assert torque[-1] == pytest.approx(300.0)
    speed = r["baseline"]["sensors"]["speed"]["mean"]
    assert set(speed) == {150.0}  # the setpoint is held
    b = 60.0 / (100.0 + 1e-4)
    settled = 0.003 + 0.0003 * (0.1 - 0.8 + 0.5 * (b * -10.0) / 30.0)
    assert r["scenario_path"]["sensors"]["vibration"]["mean"][-1] == pytest.approx(settled,
                                                                                   rel=1e-6)
    assert r["baseline"]["sensors"]["vibration"]["mean"][-1] == pytest.approx(
        0.003 + 0.0003 * 0.1, rel=1e-6)
    assert len(r["times_s"]) == 120 and r["times_s"][0] == 60.0


def test_health_and_remaining_life_follow_the_holt_trend():
    r = whatif(document(), SPEED_140, resolution_s=60)
    # health 0.6 falling 0.01 a window: the failure level 0.1 after 50 windows
    assert r["baseline"]["rul_s"] == 3000.0
    assert r["baseline"]["health"]["mean"][9] == pytest.approx(0.5)
    # no alert open: no fault is being carried, the scenario changes nothing of it
    assert r["scenario_path"]["rul_s"] == 3000.0
    assert r["fault"] is None


def test_a_developing_fault_is_carried_and_a_derating_slows_its_clock():
    doc = document(policy__alert_open=True)
    r = whatif(doc, SPEED_140, resolution_s=60)
    assert r["fault"]["sensor"] == "vibration" and r["fault"]["component"] == "bearing"
    healthy = whatif(document(), SPEED_140, resolution_s=60)
    mean = r["scenario_path"]["sensors"]["vibration"]["mean"][0]
    assert mean == pytest.approx(healthy["scenario_path"]["sensors"]["vibration"]["mean"][0]
                                 + 0.0006, rel=1e-6)
    # ISO 281 on the healthy levels once settled: (140/150) * (v_if / v_now)^3
    b = 60.0 / (100.0 + 1e-4)
    v_if = 0.003 + 0.0003 * (0.1 - 0.8 + 0.5 * (b * -10.0) / 30.0)
    v_now = 0.003 + 0.0003 * 0.1
    ratio = (140 / 150) * (v_if / v_now) ** 3
    assert r["fault"]["rate_ratio_end"] == pytest.approx(ratio, rel=1e-5)
    # the 50 windows of life left at the baseline's rate last about 50 / ratio windows
    assert r["scenario_path"]["rul_s"] == pytest.approx(3000.0 / ratio, abs=2 * 60)
    assert r["baseline"]["rul_s"] == 3000.0


def test_a_shift_beyond_the_history_is_flagged_and_widened():
    inside = whatif(document(), SPEED_140, resolution_s=60)
    far = whatif(document(), {"steps": [{"set": {"speed": 100}}], "horizon": "2h"},
                 resolution_s=60)
    e = far["scenario_path"]["extrapolation"]
    assert far["scenario_path"]["extrapolating"]
    assert "operating point" in e["reasons"]
    assert e["max_operating_distance"] == pytest.approx(50.0 ** 2 / (100.0 + 1e-4), rel=1e-4)
    # beyond the 99 % region the torque's response counts as uncertain as it is large
    width_far = far["scenario_path"]["sensors"]["torque"]["sd"][-1]
    b = 60.0 / (100.0 + 1e-4)
    beyond = b * -50.0 * (1 - math.sqrt(6.635 / (2500 / (100.0 + 1e-4))))
    cond = 900.0 - 60.0 * b
    lev_op = 50.0 ** 2 / (1000 * (100.0 + 1e-4))
    assert width_far ** 2 == pytest.approx(cond + lev_op * cond + beyond ** 2, rel=1e-5)
    assert width_far > 1.1 * inside["scenario_path"]["sensors"]["torque"]["sd"][-1]


def test_leverage_beyond_the_largest_seen_is_flagged():
    r = whatif(document(fidelity__max_leverage=0.02), SPEED_140, resolution_s=60)
    assert "models" in r["scenario_path"]["extrapolation"]["reasons"]
    base = r["baseline"]
    assert not base["extrapolating"]  # u' P u at the baseline: 0.01 * (1 + 0.01) < 0.02


def test_the_result_is_json():
    import json

    r = whatif(document(policy__alert_open=True), SPEED_140)
    assert json.loads(json.dumps(r, allow_nan=False))["asset_id"] == "motor-h"


def test_refusals():
    with pytest.raises(ModelError, match="warming up"):
        whatif(document(detector__n_seen=10), SPEED_140)
    with pytest.raises(ScenarioError, match="not a sensor a scenario can set for a motor"):
        whatif(document(), {"steps": [{"set": {"flow": 1}}]})
    doc = document()
    doc["operating"] = {**doc["operating"], "cov": None}
    with pytest.raises(ModelError, match="no operating-point history"):
        whatif(doc, SPEED_140)
    with pytest.raises(ModelError, match="version"):
        whatif({**copy.deepcopy(document()), "version": 99}, SPEED_140)


def test_a_carried_fault_that_leaves_the_plausible_range_is_flagged_and_kept_in_it():
    doc = document(policy__alert_open=True)
    doc["fidelity"]["resid_trend"] = {"vibration": -0.0001}  # 0.003 falls to zero in ~30
    r = whatif(doc, None, resolution_s=60)
    vib = r["baseline"]["sensors"]["vibration"]
    assert min(vib["mean"]) == 0.0 and min(vib["lo"]) == 0.0  # the catalog's low end
    assert "implausible" in r["baseline"]["extrapolation"]["reasons"]
    first = r["baseline"]["extrapolating_at"].index(True)
    assert vib["mean"][first - 1] > 0.0


def test_no_life_law_on_levels_the_models_cannot_tell_apart():
    doc = document(policy__alert_open=True, detector__r2={"vibration": 4.0})  # +-2 sd wide
    r = whatif(doc, SPEED_140, resolution_s=60)
    assert r["fault"]["law_applied_share"] == 0.0
    assert r["fault"]["rate_ratio_end"] == 1.0
    assert r["scenario_path"]["rul_s"] == r["baseline"]["rul_s"] == 3000.0

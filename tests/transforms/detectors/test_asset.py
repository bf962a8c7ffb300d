"""The asset detector: residuals given the operating point, adaptation after a jump,
shared covariances, gradual drift, stuck sensors, old pickles."""

from __future__ import annotations

import inspect
import pickle
import random

import numpy as np
import pytest

import transforms.detectors.asset as detector_module
from tests.transforms.synthetic import pump_features
from transforms.detectors.asset import AssetDetector

DETECTORS = [AssetDetector]


def trained(cls, n: int = 80, seed: int = 0):
    rng = random.Random(seed)
    det = cls("pump", warmup=30)
    for _ in range(n):
        det.learn_one(pump_features(rng))
    return det, rng


@pytest.mark.parametrize("cls", DETECTORS)
def test_init_stores_settings_under_their_names(cls):
    sig = inspect.signature(cls)
    det = cls("pump")
    for name, param in sig.parameters.items():
        assert getattr(det, name) == (param.default if param.default is not param.empty
                                      else "pump")


@pytest.mark.parametrize("cls", DETECTORS)
def test_pickle_round_trip_scores_identically(cls):
    det, rng = trained(cls)
    clone = pickle.loads(pickle.dumps(det))
    for _ in range(20):
        x = pump_features(rng)
        assert clone.score_one(x) == det.score_one(x)
        det.learn_one(x)
        clone.learn_one(x)


@pytest.mark.parametrize("cls", DETECTORS)
def test_learning_from_an_assessment_equals_learning_from_a_stale_one(cls):
    """learn_one reuses the assessment's intermediates (residuals, spreads, scaled and
    averaged inputs) when they belong to the same step and state, and recomputes them
    otherwise: both must reach the same state and report the same drift, through
    warm-up, adaptation after a step and steady running."""
    import dataclasses

    rng = random.Random(5)
    a, b = cls("pump", warmup=30), cls("pump", warmup=30)
    adapted = False
    for i in range(120):
        x = pump_features(rng, load=0.6 if i < 70 else 0.9, vib=0.004 if i < 100 else 0.02)
        fresh, stale = a.assess(x), dataclasses.replace(b.assess(x), terms=None)
        assert fresh == stale  # the terms are not compared
        assert a.learn_one(x, fresh) == b.learn_one(x, stale)
        adapted = adapted or a.adapt_left > 0
    assert pickle.dumps(a) == pickle.dumps(b)
    assert adapted and a._models and a._r2 and a._noise_mean  # every path was taken


def test_regression_models_pickle_and_old_pickles_still_load():
    det, _ = trained(AssetDetector)
    model = next(iter(det._models.values()))
    clone = pickle.loads(pickle.dumps(model))
    assert (clone.w == model.w).all() and (clone.P == model.P).all()
    assert clone.P.shape == model.P.shape and clone.P.flags.writeable
    old = detector_module._RLS.__new__(detector_module._RLS)  # as a pickle with a __dict__
    old.__setstate__({"w": model.w.copy(), "P": model.P.copy()})
    assert (old.w == model.w).all() and (old.P == model.P).all()
    # as pickled before covariances were shared: one packed array
    packed = detector_module._rls_from(np.concatenate((model.w, model.P.ravel())))
    assert (packed.w == model.w).all() and (packed.P == model.P).all()


def _unshared(monkeypatch) -> None:
    """Every residual model on its own covariance, updated on its own (the reference)."""
    monkeypatch.setattr(detector_module._RLS, "sibling",
                        lambda self: detector_module._RLS(len(self.w)))


@pytest.mark.parametrize("asset_type", ["pump", "motor"])
def test_models_sharing_a_covariance_learn_exactly_as_separate_models(asset_type,
                                                                      monkeypatch):
    """The targets' models start on one covariance and update it once per window; a
    window missing a target splits that model off. Scores, drift reports, weights and
    covariances are bit for bit those of one model per target, and a pickle keeps
    the sharing (old pickles, with a copy each, share again on load)."""
    from tests.transforms.synthetic import motor_features

    def stream():
        rng = random.Random(3)
        make = pump_features if asset_type == "pump" else motor_features
        for i in range(150):
            x = make(rng, load=0.6 if i < 90 else 0.85)
            if i == 120:  # one target's sensor missing in one window
                x = {k: v for k, v in x.items() if not k.startswith("vibration.")}
            yield i, x

    shared = AssetDetector(asset_type, warmup=30)
    sharing_before_split = []
    seen = []
    for i, x in stream():
        a = shared.assess(x)
        seen.append((a.score, a.is_anomaly, tuple(shared.learn_one(x, a))))
        if i == 119:
            ps = [m.P for m in shared._models.values()]
            sharing_before_split = [p is ps[0] for p in ps]
    models = shared._models
    assert len(models) >= 2 and all(sharing_before_split)
    assert models["vibration"].P is not models["bearing_temp"].P  # split at window 120

    with monkeypatch.context() as m:
        _unshared(m)
        alone = AssetDetector(asset_type, warmup=30)
        expected = []
        for _, x in stream():
            a = alone.assess(x)
            expected.append((a.score, a.is_anomaly, tuple(alone.learn_one(x, a))))
    assert seen == expected
    assert len({id(m.P) for m in alone._models.values()}) == len(alone._models)
    for name, model in alone._models.items():
        assert (models[name].w == model.w).all() and (models[name].P == model.P).all()

    # a pickle keeps one covariance for the models sharing it
    fresh = AssetDetector(asset_type, warmup=30)
    for _, x in list(stream())[:60]:
        fresh.learn_one(x)
    clone = pickle.loads(pickle.dumps(fresh))
    assert len({id(m.P) for m in clone._models.values()}) == 1
    assert all((clone._models[k].w == v.w).all() for k, v in fresh._models.items())
    # ... and a detector pickled with a covariance per model shares it again on load
    with monkeypatch.context() as m:
        m.setattr(detector_module._RLS, "__reduce__", lambda self: (
            detector_module._rls_from, (np.concatenate((self.w, self.P.ravel())),)))
        old = pickle.dumps(fresh)
    loaded = pickle.loads(old)
    assert len({id(m.P) for m in loaded._models.values()}) == 1
    assert all((loaded._models[k].P == v.P).all() for k, v in fresh._models.items())


@pytest.mark.parametrize("cls", DETECTORS)
def test_score_does_not_learn(cls):
    det, rng = trained(cls)
    before = pickle.dumps(det)
    x = pump_features(rng, vib=0.01)
    s1 = det.score_one(x)
    assert det.score_one(x) == s1
    assert pickle.dumps(det) == before


@pytest.mark.parametrize("cls", DETECTORS)
def test_warmup_scores_zero(cls):
    det = cls("pump", warmup=10)
    rng = random.Random(3)
    for _ in range(10):
        x = pump_features(rng)
        a = det.assess(x)
        assert a.warming_up and a.score == 0.0 and not a.is_anomaly
        det.learn_one(x, a)
    assert not det.assess(pump_features(rng)).warming_up


@pytest.mark.parametrize("cls", DETECTORS)
def test_normal_windows_rarely_alarm_and_fault_alarms(cls):
    det, rng = trained(cls, n=120)
    normal = [det.score_one(pump_features(rng)) for _ in range(200)]
    assert sum(s >= det.alarm_above for s in normal) <= 2
    assert all(0.0 <= s <= 1.0 for s in normal)
    # bearing wear: vibration doubles while the operating point is unchanged
    a = det.assess(pump_features(rng, vib=0.008))
    assert a.is_anomaly and a.contributors[0].startswith("vibration")


@pytest.mark.parametrize("cls", DETECTORS)
def test_step_change_in_load_is_drift_not_alarm(cls):
    det, rng = trained(cls, n=120, seed=5)
    drifts, alarms = [], []
    for i in range(40):
        x = pump_features(rng, load=0.6 if i < 5 else 0.9)
        a = det.assess(x)
        drifts.append(bool(det.learn_one(x, a)))
        alarms.append(a.is_anomaly)
    assert any(drifts[5:8]), "the step at window 5 must be reported as drift promptly"
    assert not any(alarms), "a load step is a regime change, not a fault"
    assert det.drift_events >= 1
    # after adapting, a real fault at the new operating point still alarms
    assert det.assess(pump_features(rng, load=0.9, vib=0.009)).is_anomaly


@pytest.mark.parametrize("cls", DETECTORS)
def test_stuck_sensor_alarms(cls):
    det, rng = trained(cls, n=120, seed=9)
    x = pump_features(rng)
    x["discharge_pressure.std"] = 0.0
    a = det.assess(x)
    assert a.is_anomaly and a.contributors[0] == "discharge_pressure.std"


@pytest.mark.parametrize("cls", DETECTORS)
def test_gradual_drift_is_reported_at_the_adwin_cadence(cls):
    """A slow ramp of the load (far below a jump) is reported by ADWIN per process mean,
    which checks for a change every ``adwin_clock`` windows: the same drift, reported at
    most a cadence later and in fewer windows than checking every window."""
    process = {"flow", "discharge_pressure", "suction_pressure", "motor_current", "speed"}

    def gradual_reports(clock: int) -> list[tuple[int, list[str]]]:
        rng = random.Random(11)
        det = cls("pump", warmup=30, adwin_clock=clock)
        out = []
        for i in range(400):
            load = 0.6 if i < 100 else min(0.9, 0.6 + 0.002 * (i - 100))
            x = pump_features(rng, load=load)
            a = det.assess(x)
            drifted = det.learn_one(x, a)
            if drifted and not a.drift_sensors:  # ADWIN's report, not a jump
                out.append((i, drifted))
        return out

    every, cadenced = gradual_reports(1), gradual_reports(32)
    assert every and cadenced
    assert every[0][0] >= 100, "nothing drifts before the ramp"
    # ADWIN learns from the first warm window (30) on and checks at every 32nd update
    assert all((i - 30 + 1) % 32 == 0 for i, _ in cadenced)
    assert every[0][0] <= cadenced[0][0] < every[0][0] + 32
    assert len(cadenced) < len(every)
    assert all(set(sensors) <= process for _, sensors in every + cadenced)


def test_a_detector_pickled_before_adwin_clock_keeps_checking_every_window():
    det, rng = trained(AssetDetector, n=40)
    state = dict(det.__dict__)
    del state["adwin_clock"]  # what a pickle from before the setting holds
    old = AssetDetector.__new__(AssetDetector)
    old.__setstate__(state)
    assert old.adwin_clock == 1
    assert AssetDetector("pump").adwin_clock == 32

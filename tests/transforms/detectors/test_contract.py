"""The contract every detector keeps (River's estimator checks, for ours): discovered from
the package, so a new detector is checked without being listed here.

Settings stored under their names, clone, pickle round trip mid-stream, score before
learn, warm-up, defaults, and a seeded step change that is judged abnormal.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import pkgutil
import random

import pytest

import transforms.detectors as package
from tests.transforms.synthetic import pump_features
from transforms.detectors import DETECTORS, Detector, make


def _rows(rng: random.Random, shift: float = 0.0) -> dict[str, float]:
    base = rng.gauss(0, 1)
    return {"a": 10 + base + rng.gauss(0, 0.3) + shift, "b": 5 + 0.5 * base + rng.gauss(0, 0.3),
            "c": rng.gauss(0, 1)}


# per kind: the settings a test run needs, a normal step, and an abnormal one
CASES = {
    "asset": ({"asset_type": "pump", "warmup": 30},
              lambda rng: pump_features(rng), lambda rng: pump_features(rng, vib=0.02)),
    "series": ({"warmup": 30}, _rows, lambda rng: _rows(rng, shift=40.0)),
    "joint": ({"warmup": 30}, _rows, lambda rng: _rows(rng, shift=40.0)),
    "table": ({"warmup": 30}, _rows, lambda rng: _rows(rng, shift=40.0)),
}


def test_every_detector_in_the_package_is_registered_and_has_a_case():
    found = set()
    for info in pkgutil.iter_modules(package.__path__):
        module = importlib.import_module(f"{package.__name__}.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, Detector) and cls is not Detector:
                found.add(cls)
    assert found == set(DETECTORS.values())
    assert set(CASES) == set(DETECTORS)


def _trained(kind: str, n: int = 80, seed: int = 0):
    settings, normal, _ = CASES[kind]
    rng = random.Random(seed)
    det = make(kind, **settings)
    for _ in range(n):
        det.learn_one(normal(rng))
    return det, rng


@pytest.mark.parametrize("kind", DETECTORS)
def test_init_stores_settings_under_their_names_and_has_defaults(kind):
    settings = CASES[kind][0]
    det = make(kind, **settings)
    for name, param in inspect.signature(type(det)).parameters.items():
        expected = settings.get(name, param.default)
        assert expected is not param.empty, f"{kind}.{name} has no default and no case value"
        assert getattr(det, name) == expected


@pytest.mark.parametrize("kind", DETECTORS)
def test_clone_has_the_settings_and_nothing_learned(kind):
    det, _ = _trained(kind)
    clone = det.clone()
    assert clone._get_params() == det._get_params()
    assert pickle.dumps(clone) == pickle.dumps(make(kind, **det._get_params()))


@pytest.mark.parametrize("kind", DETECTORS)
def test_pickle_round_trip_mid_stream_goes_on_identically(kind):
    det, rng = _trained(kind)
    clone = pickle.loads(pickle.dumps(det))
    _, normal, abnormal = CASES[kind]
    for i in range(30):
        x = abnormal(rng) if i == 20 else normal(rng)
        a, b = det.assess(x), clone.assess(x)
        assert (a.score, a.is_anomaly, a.contributors) == \
            (b.score, b.is_anomaly, b.contributors)
        assert det.learn_one(x, a) == clone.learn_one(x, b)


@pytest.mark.parametrize("kind", DETECTORS)
def test_assessing_changes_nothing(kind):
    det, rng = _trained(kind)
    before = pickle.dumps(det)
    x = CASES[kind][2](rng)
    first = det.assess(x).score
    assert det.assess(x).score == first == det.score_one(x)
    assert pickle.dumps(det) == before


@pytest.mark.parametrize("kind", DETECTORS)
def test_warm_up_gives_no_verdict(kind):
    settings, normal, abnormal = CASES[kind]
    det = make(kind, **settings)
    rng = random.Random(1)
    for i in range(settings["warmup"]):
        a = det.assess(abnormal(rng) if i % 7 == 6 else normal(rng))
        assert a.warming_up and a.score == 0.0 and not a.is_anomaly and not a.alarm
        det.learn_one(normal(rng))
    assert not det.assess(normal(rng)).warming_up


@pytest.mark.parametrize("kind", DETECTORS)
def test_a_seeded_step_change_is_judged_abnormal(kind):
    det, rng = _trained(kind, n=150, seed=3)
    _, normal, abnormal = CASES[kind]
    calm = [det.assess(normal(rng)) for _ in range(50)]
    assert sum(a.is_anomaly for a in calm) <= 2
    a = det.assess(abnormal(rng))
    assert a.is_anomaly and a.score > max(c.score for c in calm)
    assert 0.0 <= a.score <= 1.0 and a.contributors


def test_make_names_the_known_kinds_and_refuses_unknown_settings():
    with pytest.raises(ValueError, match="unknown detector 'magic'; known: asset, series, "
                                         "joint, table"):
        make("magic")
    with pytest.raises(ValueError, match="detector 'series': .*unexpected keyword.*'warm'"):
        make("series", warm=3)


def test_detectors_pickled_before_the_split_load_as_todays_and_go_on_identically():
    """State files and checkpoints hold detectors pickled as
    ``transforms.detector.DriftAwareDetector``; the fixture was written by that code,
    with what it then did on the next seeded steps."""
    from pathlib import Path

    from transforms.detectors import AssetDetector, SeriesDetector

    fixture = Path(__file__).parents[2] / "fixtures" / "detectors-before-the-split.pkl"
    data = pickle.loads(fixture.read_bytes())
    for kind, cls in (("asset", AssetDetector), ("series", SeriesDetector)):
        det = pickle.loads(data["pickles"][kind])
        assert type(det) is cls
        for x, score, flag, drifted in data[f"{kind}_next"]:
            a = det.assess(x)
            assert (a.score, a.is_anomaly) == (score, flag)
            assert det.learn_one(x, a) == drifted
        again = pickle.loads(pickle.dumps(det))  # and pickles under today's name
        assert type(again) is cls and b"DriftAwareDetector" not in pickle.dumps(det)

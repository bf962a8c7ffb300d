from __future__ import annotations

import pickle

from transforms.health import HealthForecaster


def test_healthy_asset_stays_healthy_without_rul():
    h = HealthForecaster()
    for _ in range(50):
        hi, fc, rul = h.update(2.0)
    assert hi == 1.0 and fc == 1.0 and rul is None


def test_degradation_gives_falling_health_and_shrinking_rul():
    h = HealthForecaster(window_s=60)
    ruls = []
    for i in range(40):
        hi, fc, rul = h.update(3.0 + 0.3 * i)
        if rul is not None:
            ruls.append(rul)
    assert hi < 0.4 and fc <= hi
    assert len(ruls) > 10 and ruls[-1] < ruls[5]
    clone = pickle.loads(pickle.dumps(h))
    assert clone.update(20.0) == h.update(20.0)


def test_failed_asset_has_zero_rul_and_reset():
    h = HealthForecaster(failure_level=0.1)
    for _ in range(30):
        hi, _, rul = h.update(60.0)
    assert hi < 0.1 and rul == 0.0
    h.reset()
    assert h.update(1.0)[0] == 1.0

"""Small seeded feature streams for detector and twin tests (no simulator needed)."""

from __future__ import annotations

import random


def pump_features(rng: random.Random, load: float = 0.6, vib: float = 0.004,
                  noise: float = 0.02, ambient: float = 293.0) -> dict[str, float]:
    """One window of pump features whose means follow the load (coupled sensors)."""
    load = load + rng.gauss(0, 0.02)
    means = {
        "flow": 0.05 * load, "discharge_pressure": 4e5 - 1e5 * load,
        "suction_pressure": 1.5e5 - 2e4 * load, "motor_current": 40 + 30 * load,
        "bearing_temp": ambient + 27 + 10 * load, "vibration": vib, "speed": 155.0,
        "ambient_temp": ambient,
    }
    f = {}
    for k, v in means.items():
        f[k + ".mean"] = v * (1 + rng.gauss(0, noise / 10))
        f[k + ".std"] = abs(v) * noise * (1 + rng.gauss(0, 0.2))
    return f


def motor_features(rng: random.Random, load: float = 0.6, vib: float = 0.003,
                   noise: float = 0.02, ambient: float = 293.0) -> dict[str, float]:
    """One window of induction-motor features whose means follow the load."""
    load = load + rng.gauss(0, 0.02)
    means = {
        "speed": 157.0 - 3.0 * load, "current": 20 + 60 * load, "voltage": 400.0,
        "winding_temp": ambient + 30 + 40 * load, "bearing_temp": ambient + 20 + 15 * load,
        "vibration": vib, "torque": 200 * load, "ambient_temp": ambient,
    }
    f = {}
    for k, v in means.items():
        f[k + ".mean"] = v * (1 + rng.gauss(0, noise / 10))
        f[k + ".std"] = abs(v) * noise * (1 + rng.gauss(0, 0.2))
    return f

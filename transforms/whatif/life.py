"""Life laws: how much faster or slower a component wears at another operating point.

The twin learns how its condition sensors follow the operating point; it cannot learn how
fast a fault grows at an operating point it has never had a fault at. For that the
what-if takes the laws maintenance engineering uses, each as a *rate ratio* (damage per
hour at the scenario's operating point over damage per hour at the baseline's) applied to
the health trend the twin measured (Palmgren-Miner: damage adds up linearly in time):

- **bearing**, rolling-contact fatigue (ISO 281 basic rating life, ``L10 = (C/P)^p``
  million revolutions, ``p = 3`` for ball bearings): damage per hour ``~ n P^3``. The
  bearing's dynamic load ``P`` is not measured; its vibration level (the component's
  condition sensor in m/s, as the twin predicts it) stands in for it, and ``n`` is the
  shaft speed;
- **winding**, thermal ageing of insulation (Arrhenius, in its engineering form, the
  10-kelvin rule of IEC 60216 / IEEE 1): ageing doubles for every 10 K of winding
  temperature.

The component comes from the condition sensor the developing fault shows on most
(:func:`transforms.catalog.component`); a fault on a sensor of no component (noise of
process sensors, a stuck or drifting transmitter) has no law, and its ratio is 1: no
operating point slows it.

>>> round(rate_ratio("bearing", {"vibration": 2.0e-3, "speed": 130.0},
...                  {"vibration": 2.5e-3, "speed": 150.0}, "pump"), 3)
0.444
>>> rate_ratio("winding", {"winding_temp": 340.0}, {"winding_temp": 350.0}, "motor")
0.5
"""

from __future__ import annotations

from transforms.catalog import component_sensors, sensors_of

FATIGUE_EXPONENT = 3.0  # ISO 281, ball bearings
THERMAL_DOUBLING_K = 10.0  # the 10-kelvin rule

LAWS = {
    "bearing": "ISO 281 rolling-contact fatigue: damage/h ~ speed x load^3 (load ~ vibration)",
    "winding": "thermal ageing, 10-K rule: ageing doubles per 10 K of winding temperature",
}


def _speed(asset_type: str) -> str | None:
    return next((s.name for s in sensors_of(asset_type) if s.unit == "radian / second"), None)


def rate_ratio(part: str | None, scenario: dict[str, float], baseline: dict[str, float],
               asset_type: str) -> float:
    """Damage rate at the ``scenario`` levels over the rate at the ``baseline`` levels
    (both: the healthy expected sensor means, SI) for component ``part``; 1 where no law
    applies or a level is missing."""
    if part == "bearing":
        vib = next((s.name for s in component_sensors(asset_type, part)
                    if s.unit == "meter / second"), None)
        speed = _speed(asset_type)
        try:
            levels = (scenario[speed], baseline[speed], scenario[vib], baseline[vib])
        except KeyError:
            return 1.0
        if min(levels) <= 0:  # no physical level (an extrapolation gone wild): no law
            return 1.0
        return (levels[0] / levels[1]) * (levels[2] / levels[3]) ** FATIGUE_EXPONENT
    if part == "winding":
        temp = next((s.name for s in component_sensors(asset_type, part)
                     if s.unit == "kelvin"), None)
        if temp is None or temp not in scenario or temp not in baseline:
            return 1.0
        return 2.0 ** ((scenario[temp] - baseline[temp]) / THERMAL_DOUBLING_K)
    return 1.0

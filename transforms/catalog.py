"""The canonical sensor catalog: asset types, their sensors, SI units and plausible ranges.

Every vendor adapter maps its own tags and units onto these names; everything downstream
of normalization (windows, features, models, policy) only ever sees canonical names and
SI values. Ranges are physical plausibility bounds, not alarm limits: a value outside them
is a broken reading (dead letter ``out_of_range``), not an anomaly.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sensor:
    """One canonical sensor: its name, SI unit (pint spelling) and plausible range."""

    name: str
    unit: str
    low: float
    high: float


PUMP_SENSORS: tuple[Sensor, ...] = (
    Sensor("flow", "meter ** 3 / second", 0.0, 2.0),
    Sensor("discharge_pressure", "pascal", 0.0, 5.0e6),
    Sensor("suction_pressure", "pascal", -1.0e5, 2.0e6),
    Sensor("motor_current", "ampere", 0.0, 2000.0),
    Sensor("bearing_temp", "kelvin", 200.0, 500.0),
    Sensor("vibration", "meter / second", 0.0, 0.2),
    Sensor("speed", "radian / second", 0.0, 500.0),
    Sensor("ambient_temp", "kelvin", 200.0, 350.0),
)

MOTOR_SENSORS: tuple[Sensor, ...] = (
    Sensor("speed", "radian / second", 0.0, 500.0),
    Sensor("current", "ampere", 0.0, 2000.0),
    Sensor("voltage", "volt", 0.0, 15000.0),
    Sensor("winding_temp", "kelvin", 200.0, 550.0),
    Sensor("bearing_temp", "kelvin", 200.0, 500.0),
    Sensor("vibration", "meter / second", 0.0, 0.2),
    Sensor("torque", "newton * meter", -5000.0, 20000.0),
    Sensor("ambient_temp", "kelvin", 200.0, 350.0),
)

ASSET_TYPES: dict[str, tuple[Sensor, ...]] = {
    "pump": PUMP_SENSORS,
    "motor": MOTOR_SENSORS,
}


def sensors_of(asset_type: str) -> tuple[Sensor, ...]:
    """The canonical sensors of ``asset_type``; ``KeyError`` if the type is unknown."""
    return ASSET_TYPES[asset_type]


def sensor(asset_type: str, name: str) -> Sensor:
    """Look up one canonical sensor by asset type and name; ``KeyError`` if unknown."""
    for s in ASSET_TYPES[asset_type]:
        if s.name == name:
            return s
    raise KeyError(f"{asset_type}.{name}")


# Sensors that describe the operating point (what the asset is asked to do and the
# conditions it runs in), as opposed to condition sensors (vibration, bearing and winding
# temperature) that describe its health. Detectors explain the latter by the former.
PROCESS_SENSORS: frozenset[str] = frozenset(
    {
        "speed", "flow", "discharge_pressure", "suction_pressure", "motor_current",
        "current", "voltage", "torque", "ambient_temp",
    }
)

# Process sensors nothing on the asset can explain (the weather): detectors use them as
# inputs but never as targets, and their drift is reported, never a reason to re-learn.
EXOGENOUS_SENSORS: frozenset[str] = frozenset({"ambient_temp"})


# The component whose wear each condition sensor shows: what a what-if's life law works
# on when a fault is developing (transforms.whatif.life: a bearing's rolling-contact
# fatigue, a winding's thermal ageing).
COMPONENTS: dict[str, str] = {
    "vibration": "bearing",
    "bearing_temp": "bearing",
    "winding_temp": "winding",
}


def component(asset_type: str, name: str) -> str | None:
    """The component the condition sensor ``name`` of ``asset_type`` watches, or None."""
    sensor(asset_type, name)  # KeyError for an unknown sensor
    return COMPONENTS.get(name)


def component_sensors(asset_type: str, part: str) -> tuple[Sensor, ...]:
    """The condition sensors of ``asset_type`` that watch component ``part``."""
    return tuple(s for s in sensors_of(asset_type) if COMPONENTS.get(s.name) == part)

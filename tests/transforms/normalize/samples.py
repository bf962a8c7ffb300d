"""Shared fixtures of the vendor tests: typical samples and the processing clock."""

from __future__ import annotations

from transforms.sample import Sample

# 2026-11-28T08:00:00Z: the processing clock of every vendor test.
NOW_MS = 1_795_852_800_000
TS_MS = NOW_MS - 5_250

TYPICAL: dict[str, dict[str, float]] = {
    "pump": {
        "flow": 0.05,
        "discharge_pressure": 6.0e5,
        "suction_pressure": 1.5e5,
        "motor_current": 45.0,
        "bearing_temp": 330.15,
        "vibration": 0.0031,
        "speed": 155.0,
        "ambient_temp": 295.0,
    },
    "motor": {
        "speed": 150.8,
        "current": 80.5,
        "voltage": 400.0,
        "winding_temp": 360.0,
        "bearing_temp": 331.0,
        "vibration": 0.0022,
        "torque": 250.0,
        "ambient_temp": 293.15,
    },
}


def typical(asset_type: str, asset_id: str | None = None, **quality: str) -> Sample:
    """A plausible sample of ``asset_type`` with every catalog sensor, at :data:`TS_MS`."""
    return Sample(
        asset_id or f"{asset_type}-001",
        asset_type,
        TS_MS,
        dict(TYPICAL[asset_type]),
        dict(quality),
    )

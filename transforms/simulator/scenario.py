"""What happens to the fleet: its assets, their faults and their regime changes.

Everything here is decided up front from the seed, before a single sample is made, so the
ground truth is known (and written) before the run, and is the same on every machine.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field
from typing import Any

from transforms.catalog import ASSET_TYPES
from transforms.normalize import VENDORS

HOUR_MS = 3_600_000
MINUTE_MS = 60_000

# Fault kind -> (how it develops, asset types it hits, start-to-failure range in minutes).
FAULTS: dict[str, tuple[str, tuple[str, ...], tuple[float, float]]] = {
    "bearing_wear": ("gradual", ("pump", "motor"), (90, 180)),
    "cavitation": ("abrupt", ("pump",), (30, 75)),
    "winding_insulation": ("gradual", ("motor",), (60, 150)),
    "stuck_sensor": ("sensor", ("pump", "motor"), (40, 90)),
    "sensor_drift": ("sensor", ("pump", "motor"), (60, 120)),
}
# Sensors each sensor fault can hit, per asset type: condition sensors, the ones that
# matter. Drift is a temperature transmitter's failure (RTD ageing, a loose junction);
# any transmitter can freeze.
FAULTY_SENSORS: dict[str, dict[str, tuple[str, ...]]] = {
    "stuck_sensor": {"pump": ("bearing_temp", "vibration"),
                     "motor": ("bearing_temp", "winding_temp", "vibration")},
    "sensor_drift": {"pump": ("bearing_temp",), "motor": ("bearing_temp", "winding_temp")},
}
# The sensor where each fault shows first (for the ground truth's ``sensor`` field).
SYMPTOM: dict[str, dict[str, str]] = {
    "bearing_wear": {"pump": "vibration", "motor": "vibration"},
    "cavitation": {"pump": "suction_pressure"},
    "winding_insulation": {"motor": "winding_temp"},
}
REGIMES: tuple[str, ...] = ("load_step", "ambient_shift")
MAX_SENSORS = min(len(sensors) for sensors in ASSET_TYPES.values())
MIN_FAULT_MINUTES = 30  # shorter episodes are not worth simulating: no time to act


@dataclass(frozen=True)
class FleetConfig:
    """The simulated fleet and how its data goes wrong.

    Parameters
    ----------
    assets
        Fleet size; assets alternate pump, motor, pump, ... and vendors helios, kestrel,
        orca, helios, ...
    duration_s, interval_s
        Simulated event time and the sampling period of each asset.
    seed
        Everything (physics noise, faults, defects) follows from it.
    start_ms
        Event time of the first sample, UTC epoch ms.
    fault_fraction, regime_fraction
        Share of assets that get one labelled fault / one unlabelled regime change.
    malformed_rate, dropout_rate, duplicate_rate, out_of_order_rate, late_rate
        Per-sample probability of each transport defect.
    sensors
        Sensors each asset sends: the first ``sensors`` of its type in catalog order
        (``None``: all of them). A benchmark knob (``twin bench scale --sensors``): the
        physics is unchanged, the other sensors are simply not sent.
    wear_law
        Wear-out faults progress by a life law of the operating point rather than on a
        clock (:mod:`transforms.simulator.physics`). A benchmark knob (``twin bench
        fidelity``): setpoints then change when such a fault fails, and the ground
        truth's failure times are those of the base operating point.
    """

    assets: int = 12
    duration_s: float = 6 * 3600.0
    interval_s: float = 5.0
    seed: int = 7
    start_ms: int = 1_795_800_000_000
    fault_fraction: float = 0.7
    regime_fraction: float = 0.5
    malformed_rate: float = 0.005
    dropout_rate: float = 0.005
    duplicate_rate: float = 0.003
    out_of_order_rate: float = 0.01
    late_rate: float = 0.002
    sensors: int | None = None
    wear_law: bool = False

    def __post_init__(self) -> None:
        if self.assets < 1:
            raise ValueError(f"assets must be >= 1, got {self.assets}")
        if not self.duration_s > 0 or not self.interval_s > 0:
            raise ValueError("duration_s and interval_s must be positive")
        if self.interval_s * 1000 < 1:
            raise ValueError("interval_s must be at least 1 ms")
        for name in ("fault_fraction", "regime_fraction", "malformed_rate", "dropout_rate",
                     "duplicate_rate", "out_of_order_rate", "late_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.sensors is not None and not 1 <= self.sensors <= MAX_SENSORS:
            raise ValueError(f"sensors must be in [1, {MAX_SENSORS}] (the catalog's sensors "
                             f"per asset type), got {self.sensors}")
        defects = (self.malformed_rate + self.dropout_rate + self.duplicate_rate
                   + self.out_of_order_rate + self.late_rate)
        if defects > 1.0:
            raise ValueError(f"defect rates add up to {defects:.3f} > 1")

    @property
    def end_ms(self) -> int:
        return self.start_ms + int(self.duration_s * 1000)


@dataclass(frozen=True)
class AssetSpec:
    """One simulated asset: identity, vendor, and its normal operating point."""

    index: int
    asset_id: str
    asset_type: str
    vendor: str
    load: float  # base load, fraction of rated
    ambient_k: float  # base ambient temperature
    nominal_speed: float  # rad/s at setpoint 1.0
    phase_ms: int  # offset of its sampling grid


@dataclass(frozen=True)
class FaultEpisode:
    asset_id: str
    fault: str
    kind: str  # gradual | abrupt | sensor
    sensor: str
    start_ms: int
    failure_ms: int
    repaired_ms: int
    severity: float  # fault-specific size (drift bias fraction, cavitation depth, ...)


@dataclass(frozen=True)
class RegimeChange:
    asset_id: str
    kind: str  # load_step | ambient_shift
    ts_ms: int
    size: float  # load fraction step, or kelvin
    detail: str = ""
    ramp_s: float = 0.0  # how long the change takes (0: a step)


@dataclass
class Scenario:
    assets: list[AssetSpec]
    faults: dict[str, FaultEpisode] = field(default_factory=dict)
    regimes: dict[str, RegimeChange] = field(default_factory=dict)

    def ground_truth(self) -> dict[str, Any]:
        return {
            "assets": [asdict(a) for a in self.assets],
            "fault_episodes": [
                {k: v for k, v in asdict(e).items() if k != "severity"}
                for e in sorted(self.faults.values(), key=lambda e: e.start_ms)
            ],
            "regime_changes": [
                {k: v for k, v in asdict(r).items() if k not in ("size", "ramp_s")}
                for r in sorted(self.regimes.values(), key=lambda r: r.ts_ms)
            ],
        }


def asset_specs(config: FleetConfig) -> list[AssetSpec]:
    vendors = list(VENDORS)
    specs = []
    for i in range(config.assets):
        rng = random.Random(f"{config.seed}:asset:{i}")
        asset_type = "pump" if i % 2 == 0 else "motor"
        specs.append(AssetSpec(
            index=i,
            asset_id=f"{asset_type}-{i:03d}",
            asset_type=asset_type,
            vendor=vendors[i % len(vendors)],
            load=round(rng.uniform(0.5, 0.75), 4),
            ambient_k=round(rng.uniform(288.0, 303.0), 2),
            nominal_speed=round((1480.0 if asset_type == "pump" else 1490.0)
                                * 2 * 3.141592653589793 / 60 * rng.uniform(0.98, 1.02), 3),
            phase_ms=rng.randrange(0, int(config.interval_s * 1000)),
        ))
    return specs


def plan(config: FleetConfig) -> Scenario:
    """The seeded scenario of ``config``: assets, at most one fault and one regime change each."""
    scenario = Scenario(asset_specs(config))
    rng = random.Random(f"{config.seed}:scenario")
    n = config.assets
    faulty = sorted(rng.sample(range(n), round(config.fault_fraction * n)))
    kinds_by_type = {t: [f for f, (_, types, _) in FAULTS.items() if t in types]
                     for t in ("pump", "motor")}
    cycle = {t: rng.sample(k, len(k)) for t, k in kinds_by_type.items()}
    seen = {t: 0 for t in cycle}
    for i in faulty:
        spec = scenario.assets[i]
        t = spec.asset_type
        fault = cycle[t][seen[t] % len(cycle[t])]
        seen[t] += 1
        episode = _episode(config, spec, fault, rng)
        if episode is not None:
            scenario.faults[spec.asset_id] = episode
    for i in sorted(rng.sample(range(n), round(config.regime_fraction * n))):
        spec = scenario.assets[i]
        change = _regime(config, spec, scenario.faults.get(spec.asset_id), rng)
        if change is not None:
            scenario.regimes[spec.asset_id] = change
    return scenario


def _episode(config: FleetConfig, spec: AssetSpec, fault: str,
             rng: random.Random) -> FaultEpisode | None:
    kind, _, (lo, hi) = FAULTS[fault]
    earliest = config.start_ms + max(int(1.5 * HOUR_MS), int(0.25 * config.duration_s * 1000))
    downtime = int(rng.uniform(20, 40) * MINUTE_MS)
    room = config.end_ms - 15 * MINUTE_MS - downtime - earliest
    length = min(int(rng.uniform(lo, hi) * MINUTE_MS), room)
    if length < MIN_FAULT_MINUTES * MINUTE_MS:
        return None
    start = earliest + int(rng.uniform(0, room - length))
    start -= start % 1000
    if kind == "sensor":
        sensor = rng.choice(FAULTY_SENSORS[fault][spec.asset_type])
    else:
        sensor = SYMPTOM[fault][spec.asset_type]
    severity = {
        "bearing_wear": rng.uniform(2.5, 4.0),  # vibration multiple at failure
        "cavitation": rng.uniform(0.5, 1.0),  # depth of the suction pressure collapse
        "winding_insulation": rng.uniform(30.0, 50.0),  # kelvin of extra winding heat
        "stuck_sensor": 0.0,
        "sensor_drift": rng.choice((-1, 1)) * rng.uniform(0.08, 0.15),  # bias fraction
    }[fault]
    return FaultEpisode(spec.asset_id, fault, kind, sensor, start, start + length,
                        start + length + downtime, round(severity, 4))


def _regime(config: FleetConfig, spec: AssetSpec, fault: FaultEpisode | None,
            rng: random.Random) -> RegimeChange | None:
    lo = config.start_ms + max(HOUR_MS, int(0.15 * config.duration_s * 1000))
    hi = config.end_ms - HOUR_MS
    for _ in range(50):
        if hi <= lo:
            return None
        ts = int(rng.uniform(lo, hi))
        ts -= ts % 1000
        if fault is not None and fault.start_ms - 30 * MINUTE_MS <= ts <= (
                fault.repaired_ms + 30 * MINUTE_MS):
            continue
        kind = rng.choice(REGIMES)
        if kind == "load_step":
            step = rng.uniform(0.15, 0.35)
            step = -step if spec.load + step > 0.95 else step
            return RegimeChange(spec.asset_id, kind, ts, round(step, 4),
                                f"load {spec.load:.2f} -> {spec.load + step:.2f} of rated")
        shift = rng.choice((-1, 1)) * rng.uniform(5.0, 10.0)
        ramp_min = rng.uniform(60, 120)  # a front passing, a hall's heating switching over
        return RegimeChange(spec.asset_id, kind, ts, round(shift, 3),
                            f"ambient {shift:+.1f} K over {ramp_min:.0f} min", ramp_min * 60)
    return None

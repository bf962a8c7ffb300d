"""The physical side of the twin: centrifugal pumps and induction motors, in SI.

Each asset is a handful of coupled first-order models, stepped a chunk of samples at a
time with numpy (``scipy.signal.lfilter`` for the lags, so a chunk costs microseconds per
sample):

- **operating point**: load wanders around its base (Ornstein-Uhlenbeck, ~15 min memory)
  and steps on a ``load_step`` regime change; ambient temperature follows a daily cycle
  and shifts over an hour or two on an ``ambient_shift``; speed follows the speed setpoint.
- **pump**: flow ~ speed x load; head ~ speed^2 falling with flow; current ~ shaft power
  (load x speed^3); bearing temperature = ambient + friction heat (load, speed) through a
  2.5 min thermal lag; vibration ~ speed^2 with a little load dependence.
- **motor**: torque ~ load; current ~ magnetizing + load current; winding temperature =
  ambient + copper loss (current^2) through a 5 min lag; bearing temperature and
  vibration as for pumps.
- **faults**: bearing wear multiplies vibration (up to ``severity`` x at failure) and
  heats the bearing; cavitation collapses suction pressure and adds broadband vibration
  and flow noise from its onset; insulation breakdown heats the winding and makes the
  phase current ripple; a stuck sensor repeats one value exactly; a drifting sensor gains
  a bias that grows linearly to ``severity`` of its reading.

Noise is Gaussian per sample, of the size real transmitters have (0.1-1 %, vibration 6 %).

By default a fault runs on a clock: it fails at its planned time whatever the asset is
asked to do. With ``wear_law`` (a benchmark knob, off in every run), the two wear-out
faults progress at a rate that depends on how the asset is run, by the laws maintenance
engineering uses, relative to the asset's base operating point (commanded speed and load,
not their wander): ``bearing_wear`` by rolling-contact fatigue (ISO 281: damage per hour
~ speed x load^3, the load being the healthy vibration level this model gives), and
``winding_insulation`` by thermal ageing (doubling per 10 K of healthy winding
temperature). At the base operating point the fault fails at its planned time.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.signal import lfilter

from transforms.simulator.scenario import AssetSpec, FaultEpisode, RegimeChange

LOAD_TAU_S = 900.0
LOAD_SIGMA = 0.04
DAY_S = 86_400.0
TAU_S = {"bearing_temp": 150.0, "winding_temp": 300.0}
PUMP_FLOW = 0.08  # m3/s at full load and speed
PUMP_HEAD = 4.0e5  # Pa of discharge pressure at zero flow, full speed
MOTOR_TORQUE = 480.0  # N*m at full load
MOTOR_VOLTAGE = 400.0
VIBRATION = 0.0025  # m/s RMS of a healthy machine at full speed
WEAR_LAW_FAULTS = ("bearing_wear", "winding_insulation")
# The sensor that carries each asset type's load (for a load change asked of a twin).
LOAD_SENSOR = {"pump": "flow", "motor": "torque"}


def load_reading(asset_type: str, load: float, speed_frac: float = 1.0) -> float:
    """The expected reading of :data:`LOAD_SENSOR` at a base load and speed fraction."""
    if asset_type == "pump":
        return PUMP_FLOW * speed_frac * load
    return MOTOR_TORQUE * load * speed_frac


def healthy_vibration(speed_frac: np.ndarray | float, load: np.ndarray | float):
    """Vibration of a healthy machine (m/s RMS) at a speed fraction and load."""
    return VIBRATION * (0.6 + 0.4 * speed_frac ** 2) * (1 + 0.3 * load)


def healthy_winding_rise(speed_frac: np.ndarray | float, load: np.ndarray | float):
    """Winding temperature rise over ambient (K) of a healthy motor, in steady state."""
    return 20.0 + 55.0 * (0.35 + 0.65 * load * speed_frac) ** 2


def wear_rate(fault: str, speed_frac, load, base_load: float):
    """The wear law's damage rate at (speed, load) over its rate at the base operating
    point (speed 1, ``base_load``): 1 for faults without a law."""
    if fault == "bearing_wear":
        return speed_frac * (healthy_vibration(speed_frac, load)
                             / healthy_vibration(1.0, base_load)) ** 3
    if fault == "winding_insulation":
        return 2.0 ** ((healthy_winding_rise(speed_frac, load)
                        - healthy_winding_rise(1.0, base_load)) / 10.0)
    return np.ones_like(np.asarray(speed_frac, dtype=float))


def _lag(x: np.ndarray, y0: float, alpha: float) -> np.ndarray:
    """First-order lag ``y[k] = a y[k-1] + (1-a) x[k]`` starting from ``y0``."""
    out, _ = lfilter([1.0 - alpha], [1.0, -alpha], x, zi=[alpha * y0])
    return out


class AssetModel:
    """One simulated asset; :meth:`step` makes its next chunk of true sensor values."""

    def __init__(self, spec: AssetSpec, interval_s: float, start_ms: int,
                 fault: FaultEpisode | None, regime: RegimeChange | None,
                 wear_law: bool = False) -> None:
        self.spec = spec
        self.wear_law = wear_law and fault is not None and fault.fault in WEAR_LAW_FAULTS
        self.damage = 0.0  # wear law: the fault's progress so far (1: failure)
        self.failed_ms: int | None = None  # wear law: when it failed
        self.dt = interval_s
        self.start_ms = start_ms
        self.fault = fault
        self.regime = regime
        self.load_dev = 0.0
        ambient0 = float(self._ambient(np.array([start_ms]))[0])
        self.temps = {  # in thermal equilibrium at the start
            "bearing_temp": ambient0 + 15.0 + 20.0 * spec.load,
            "winding_temp": ambient0 + 20.0 + 55.0 * (0.35 + 0.65 * spec.load) ** 2}
        self.stuck_value: float | None = None

    # -- operating point ----------------------------------------------------------------

    def _commanded_load(self, t_ms: np.ndarray, offset: np.ndarray | None) -> np.ndarray:
        """The base load the asset is asked for: its own, regime steps, load changes."""
        load = np.full(len(t_ms), self.spec.load)
        r = self.regime
        if r is not None and r.kind == "load_step":
            load = load + np.where(t_ms >= r.ts_ms, r.size, 0.0)
        return load if offset is None else load + offset

    def _load(self, t_ms: np.ndarray, rng: np.random.Generator,
              offset: np.ndarray | None = None) -> np.ndarray:
        a = math.exp(-self.dt / LOAD_TAU_S)
        shocks = rng.standard_normal(len(t_ms)) * LOAD_SIGMA * math.sqrt(1 - a * a)
        dev, _ = lfilter([1.0], [1.0, -a], shocks, zi=[a * self.load_dev])
        if len(dev):
            self.load_dev = float(dev[-1])
        return np.clip(self._commanded_load(t_ms, offset) + dev, 0.05, 1.0)

    def _ambient(self, t_ms: np.ndarray) -> np.ndarray:
        t_s = t_ms / 1000.0
        ambient = self.spec.ambient_k + 3.0 * np.sin(2 * np.pi * (t_s / DAY_S - 0.375))
        r = self.regime
        if r is not None and r.kind == "ambient_shift":
            ambient = ambient + r.size * np.clip((t_ms - r.ts_ms) / (r.ramp_s * 1000), 0, 1)
        return ambient

    def _progress(self, t_ms: np.ndarray) -> np.ndarray:
        """0 before the fault, rising towards 1 at failure; 0 again after it.

        At failure the asset stops and the failed part is replaced; during the downtime
        (nothing is emitted) temperatures settle back, so the asset restarts healthy.
        """
        f = self.fault
        if f is None:
            return np.zeros(len(t_ms))
        p = (t_ms - f.start_ms) / max(f.failure_ms - f.start_ms, 1)
        return np.where((t_ms >= f.start_ms) & (t_ms < f.failure_ms), np.clip(p, 0, 1), 0.0)

    def _wear_progress(self, t_ms: np.ndarray, speed_frac: np.ndarray,
                       load_cmd: np.ndarray) -> np.ndarray:
        """The wear law's progress: damage accumulated at the law's rate since the fault
        started, 0 after the failure (the part was replaced)."""
        f = self.fault
        if self.failed_ms is not None:
            return np.zeros(len(t_ms))
        rate = wear_rate(f.fault, np.clip(speed_frac, 1e-3, None),
                         np.clip(load_cmd, 0.05, 1.0), self.spec.load)
        active = t_ms >= f.start_ms
        step = np.where(active, rate * self.dt * 1000.0 / max(f.failure_ms - f.start_ms, 1),
                        0.0)
        progress = self.damage + np.cumsum(step)
        done = np.flatnonzero(progress >= 1.0)
        if len(done):
            self.failed_ms = int(t_ms[done[0]])
            progress[done[0]:] = 0.0
            self.damage = 1.0
        elif len(progress):
            self.damage = float(progress[-1])
        return np.clip(progress, 0.0, 1.0)

    def offline(self, t_ms: np.ndarray) -> np.ndarray:
        """Wear law: whether each time falls in the repair after the realised failure."""
        f = self.fault
        if not self.wear_law or self.failed_ms is None:
            return np.zeros(len(t_ms), dtype=bool)
        down = f.repaired_ms - f.failure_ms
        return (t_ms >= self.failed_ms) & (t_ms < self.failed_ms + down)

    # -- the chunk ------------------------------------------------------------------------

    def step(self, t_ms: np.ndarray, speed_frac: np.ndarray,
             rng: np.random.Generator, load_offset: np.ndarray | None = None
             ) -> dict[str, np.ndarray]:
        """True sensor values (SI) at event times ``t_ms`` under the given speed setpoints
        (and changes of the base load, fractions of rated, if any).

        Draws a fixed number of random numbers per sample, so the noise of later chunks does
        not depend on setpoints or faults.
        """
        n = len(t_ms)
        noise = rng.standard_normal((12, n))
        load = self._load(t_ms, rng, load_offset)
        ambient = self._ambient(t_ms)
        s = speed_frac
        if self.wear_law:
            progress = self._wear_progress(t_ms, s, self._commanded_load(t_ms, load_offset))
        else:
            progress = self._progress(t_ms)
        fault = self.fault.fault if self.fault is not None else None
        wear = progress ** 1.5 if fault == "bearing_wear" else np.zeros(n)
        cav = np.where(progress > 0, 0.4 + 0.6 * progress, 0.0) if fault == "cavitation" \
            else np.zeros(n)
        cav = cav * (self.fault.severity if fault == "cavitation" else 0.0)
        insul = progress ** 1.5 if fault == "winding_insulation" else np.zeros(n)
        sev = self.fault.severity if self.fault is not None else 0.0

        v = {}
        v["speed"] = self.spec.nominal_speed * s * (1 - 0.01 * load) * (1 + 0.002 * noise[0])
        v["ambient_temp"] = ambient + 0.1 * noise[1]
        a_brg = math.exp(-self.dt / TAU_S["bearing_temp"])
        brg_target = ambient + 15.0 + 20.0 * load * s + 25.0 * wear
        brg = _lag(brg_target, self.temps["bearing_temp"], a_brg)
        self.temps["bearing_temp"] = float(brg[-1])
        v["bearing_temp"] = brg + 0.15 * noise[2]
        vib = healthy_vibration(s, load) * (1 + (sev - 1) * wear)
        vib = vib * (1 + 0.06 * noise[3]) + 0.004 * cav * np.abs(noise[4])
        v["vibration"] = np.abs(vib)
        if self.spec.asset_type == "pump":
            flow = PUMP_FLOW * s * load * (1 - 0.15 * cav)
            v["flow"] = flow * (1 + 0.01 * noise[5] + 0.08 * cav * noise[6])
            q = flow / PUMP_FLOW
            v["discharge_pressure"] = PUMP_HEAD * (1.2 * s**2 - 0.5 * q**2) * (
                1 + 0.007 * noise[7] + 0.03 * cav * noise[8])
            v["suction_pressure"] = (1.5e5 - 4.0e4 * load - 8.0e4 * cav) * (
                1 + 0.007 * noise[9])
            v["motor_current"] = 60.0 * (0.3 + 0.7 * load * s**3) * (1 + 0.008 * noise[10])
        else:
            v["torque"] = MOTOR_TORQUE * load * s * (1 + 0.01 * noise[5])
            v["voltage"] = MOTOR_VOLTAGE * (1 + 0.004 * noise[6])
            current_pu = 0.35 + 0.65 * load * s
            v["current"] = 150.0 * current_pu * (1 + 0.008 * noise[7] + 0.05 * insul
                                                 * noise[8])
            a_wdg = math.exp(-self.dt / TAU_S["winding_temp"])
            wdg_target = ambient + 20.0 + 55.0 * current_pu**2 + sev * insul
            wdg = _lag(wdg_target, self.temps["winding_temp"], a_wdg)
            self.temps["winding_temp"] = float(wdg[-1])
            v["winding_temp"] = wdg + 0.15 * noise[9]
        self._sensor_fault(t_ms, v)
        return v

    def _sensor_fault(self, t_ms: np.ndarray, v: dict[str, np.ndarray]) -> None:
        f = self.fault
        if f is None or f.kind != "sensor":
            return
        active = (t_ms >= f.start_ms) & (t_ms < f.failure_ms)
        if not active.any():
            return
        x = v[f.sensor]
        if f.fault == "stuck_sensor":
            if self.stuck_value is None:
                self.stuck_value = float(x[np.argmax(active)])
            x[active] = self.stuck_value
        else:  # sensor_drift: bias on the reading as the instrument shows it
            p = np.clip((t_ms - f.start_ms) / max(f.failure_ms - f.start_ms, 1), 0, 1)
            zero = 273.15 if f.sensor.endswith("_temp") else 0.0  # drift of a degC reading
            x[active] += (f.severity * p * (x - zero))[active]

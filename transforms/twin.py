"""The digital twin of one asset: windows -> features -> detector -> health -> policy -> state.

:class:`AssetTwin` is the one object an engine keeps per asset (Beam: a
``ReadModifyWriteStateSpec``; Flink: a ``ValueState``). It is plain Python, picklable, and
returns what it emits, so engine bindings stay thin: read state, call, write state, emit.

Outputs are ``(tag, record)`` pairs; tags are :data:`FEATURES`, :data:`PREDICTION`,
:data:`ACTION`, :data:`STATE` and :data:`LATE`, and records match the Avro schemas in
``schemas/avro/twin``.
"""

from __future__ import annotations

from typing import Any

from transforms.columns import ReadingBlock, sensor_names
from transforms.detector import DriftAwareDetector
from transforms.features import FEATURE_KEY, window_features
from transforms.health import HealthForecaster
from transforms.policy import ActionPolicy
from transforms.windowing import Window, WindowBuffer

FEATURES, PREDICTION, ACTION, STATE, LATE, DUPLICATE = (
    "features", "prediction", "action", "state", "late", "duplicate",
)
Output = tuple[str, dict[str, Any]]


class AssetTwin:
    """Everything the twin knows about one asset.

    Parameters
    ----------
    asset_id, asset_type
        Which asset.
    window_ms, allowed_lateness_ms, out_of_orderness_ms
        Event-time windowing (see :class:`~transforms.windowing.WindowBuffer`).
    min_readings
        Windows with fewer distinct readings are reported as features but neither scored
        nor learned from (too few points for a spread).
    detector, health, policy
        Keyword arguments of :class:`~transforms.detector.DriftAwareDetector`,
        :class:`~transforms.health.HealthForecaster` and
        :class:`~transforms.policy.ActionPolicy`.
    """

    def __init__(
        self,
        asset_id: str,
        asset_type: str,
        window_ms: int = 60_000,
        allowed_lateness_ms: int = 60_000,
        out_of_orderness_ms: int = 20_000,
        min_readings: int = 4,
        detector: dict[str, Any] | None = None,
        health: dict[str, Any] | None = None,
        policy: dict[str, Any] | None = None,
    ) -> None:
        self.asset_id = asset_id
        self.asset_type = asset_type
        self.window_ms = window_ms
        self.min_readings = min_readings
        self.buffer = WindowBuffer(window_ms, allowed_lateness_ms, out_of_orderness_ms)
        self.detector = DriftAwareDetector(asset_type, **(detector or {}))
        self.health = HealthForecaster(window_s=window_ms / 1000, **(health or {}))
        self.policy = ActionPolicy(**(policy or {}))
        self.windows_seen = 0
        self.last_drift_ms: int | None = None
        self.nominal: dict[str, float] = {}  # warm-up mean of setpoint-controlled sensors
        self._warm_sums: dict[str, tuple[float, int]] = {}

    # -- engine entry points ------------------------------------------------------------
    def add(self, reading: dict[str, Any]) -> list[Output]:
        """Take one canonical reading; returns outputs of any windows it closed."""
        status, closed = self.buffer.add(reading)
        if status == "late":
            return [(LATE, reading)]
        out: list[Output] = [(DUPLICATE, reading)] if status == "duplicate" else []
        for w in closed:
            out.extend(self._on_window(w))
        return out

    def add_block(self, block: ReadingBlock) -> list[Output]:
        """Take this asset's readings as columns (arrival order): the same outputs as
        :meth:`add` on each row, in one step when the block is in event-time order."""
        late, dups, closed = self.buffer.add_block(block)
        out: list[Output] = [(LATE, r) for r in late]
        out.extend((DUPLICATE, r) for r in dups)
        for w in closed:
            out.extend(self._on_window(w))
        return out

    def advance(self, watermark_ms: int) -> list[Output]:
        """The engine's watermark moved: close what it closes."""
        out: list[Output] = []
        for w in self.buffer.advance(watermark_ms):
            out.extend(self._on_window(w))
        return out

    def flush(self) -> list[Output]:
        """End of a bounded input: close every open window."""
        out: list[Output] = []
        for w in self.buffer.flush():
            out.extend(self._on_window(w))
        return out

    def next_deadline_ms(self) -> int | None:
        return self.buffer.next_deadline_ms()

    def last_deadline_ms(self) -> int | None:
        return self.buffer.last_deadline_ms()

    # -- one window ---------------------------------------------------------------------
    def _on_window(self, w: Window) -> list[Output]:
        feats = window_features(w)
        out: list[Output] = [(FEATURES, {
            "asset_id": w.asset_id, "asset_type": w.asset_type,
            "window_start_ms": w.start_ms, "window_end_ms": w.end_ms,
            "count": w.count, "duplicates": w.duplicates, "features": feats,
        })]
        if w.count < self.min_readings or not feats:
            return out
        a = self.detector.assess(feats)
        drifted = self.detector.learn_one(feats, a)
        if a.warming_up:  # no operating point to drift from yet
            drifted = []
        self.windows_seen += 1
        if drifted:
            self.last_drift_ms = w.end_ms
        self._learn_nominal(feats)
        # the health index follows unexplained deviation; drift windows are explained
        hi, forecast, rul = self.health.update(0.0 if a.warming_up else a.max_z)
        pred = {
            "prediction_id": f"{w.asset_id}:{w.end_ms}:prediction",
            "asset_id": w.asset_id, "asset_type": w.asset_type,
            "window_start_ms": w.start_ms, "window_end_ms": w.end_ms,
            "anomaly_score": a.score, "is_anomaly": a.is_anomaly,
            "warming_up": a.warming_up, "drift": bool(drifted),
            "drift_sensors": drifted, "contributors": a.contributors,
            "health_index": hi, "forecast_health": forecast,
            "forecast_horizon_s": int(self.health.horizon_windows * self.window_ms / 1000),
            "rul_s": rul,
        }
        out.append((PREDICTION, pred))
        for action in self.policy.decide(pred):
            if action["kind"] == "SETPOINT":
                scale = self.nominal.get(self.policy.setpoint_name)
                if scale is None:  # no nominal known: cannot command safely
                    continue
                action["setpoint_value"] *= scale
                action["setpoint_previous"] *= scale
            out.append((ACTION, action))
        out.append((STATE, self.state(w, feats, pred)))
        return out

    def _learn_nominal(self, feats: dict[str, float]) -> None:
        if self.windows_seen > self.detector.warmup:
            return
        name = self.policy.setpoint_name
        v = feats.get(f"{name}.mean")
        if v is None:
            return
        s, n = self._warm_sums.get(name, (0.0, 0))
        self._warm_sums[name] = (s + v, n + 1)
        self.nominal[name] = (s + v) / (n + 1)

    def state(self, w: Window, feats: dict[str, float], pred: dict[str, Any]) -> dict[str, Any]:
        """The twin-state record after window ``w``."""
        setpoints = {}
        if self.policy.setpoint_name in self.nominal:
            setpoints[self.policy.setpoint_name] = (
                self.policy.setpoint * self.nominal[self.policy.setpoint_name])
        return {
            "asset_id": self.asset_id, "asset_type": self.asset_type, "ts_ms": w.end_ms,
            "values": {s: feats[k] for s in sensor_names(self.asset_type)
                       if (k := FEATURE_KEY["mean"][s]) in feats},
            "health_index": pred["health_index"], "anomaly_score": pred["anomaly_score"],
            "alert_open": self.policy.alert_open, "setpoints": setpoints,
            "windows_seen": self.windows_seen, "drift_events": self.detector.drift_events,
            "last_drift_ms": self.last_drift_ms,
        }

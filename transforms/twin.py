"""The digital twin of one asset: windows -> features -> detector -> health -> policy -> state.

:class:`AssetTwin` is everything known about one asset. It is plain Python, picklable,
and returns what it emits, so engine bindings stay thin: read state, call, write state,
emit. Flink keeps one per asset key (snapshot plus log); Beam keeps a :class:`TwinShard`
per state key, the twins of many assets in bounded runs (one call closes and computes
many assets' windows together, :func:`close_windows`) and of one asset in streams;
either way each twin's outputs are the same.

Outputs are ``(tag, record)`` pairs; tags are :data:`FEATURES`, :data:`PREDICTION`,
:data:`ACTION`, :data:`STATE`, :data:`LATE`, :data:`DUPLICATE` and :data:`DEAD_LETTER`, and
records match the Avro schemas in ``schemas/avro/twin``.

Before a reading reaches the windows, its event time is judged against the asset's own
(:class:`~transforms.eventtime.EventTimeGuard`): one far ahead of the asset's latest, and
not confirmed by the readings after it, is a dead letter (reason ``timestamp_jump``,
stage ``twin``, the canonical reading as its payload) and moves no watermark. Bindings
send :data:`DEAD_LETTER` records where normalization's dead letters go and count them
as dead letters, not valid readings.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from schemas import wire
from transforms.catalog import SETPOINTS
from transforms.columns import ReadingBlock, sensor_names
from transforms.deadletter import DEAD_LETTER, dead_letter
from transforms.detectors import AssetDetector, for_asset
from transforms.eventtime import DEFAULT_CONFIRMATIONS, DEFAULT_MAX_JUMP_MS, EventTimeGuard
from transforms.features import FEATURE_KEY, windows_features
from transforms.health import HealthForecaster
from transforms.policy import ActionPolicy
from transforms.shards import DEFAULT_SHARDS  # noqa: F401  (re-exported)
from transforms.whatif.fidelity import Fidelity
from transforms.whatif.operating import OperatingPoint
from transforms.windowing import Window, WindowBuffer

FEATURES, PREDICTION, ACTION, STATE, LATE, DUPLICATE = (
    "features", "prediction", "action", "state", "late", "duplicate",
)
Output = tuple[str, dict[str, Any]]
JUMP = "timestamp_jump"  # the dead-letter reason of a reading held back by the guard


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
    max_jump_ms, jump_confirmations
        The event-time guard (:class:`~transforms.eventtime.EventTimeGuard`): a reading
        more than ``max_jump_ms`` ahead of the asset's latest event time is a dead letter
        unless ``jump_confirmations`` readings in a row confirm the jump (``max_jump_ms``
        ``None``: no guard).
    detector, health, policy
        The detector's configuration (``{"kind": "asset", <settings>}``, the kind
        ``"asset"`` by default: :func:`transforms.detectors.for_asset`), and keyword
        arguments of
        :class:`~transforms.health.HealthForecaster` and
        :class:`~transforms.policy.ActionPolicy`.
    learned_every
        Every this many scored windows the state record carries the learned models
        (``learned``, a JSON document, :mod:`transforms.whatif.model`) for what-if
        questions from the state alone; 0: never. With the asset detector only.
    recommend
        Keyword arguments of :func:`transforms.whatif.optimize.recommend` (e.g.
        ``{"min_rul_s": 86400}``), or None (the default): off. When on, the work order of
        each alert episode asks the twin's what-if for the setpoint that keeps the asset
        running that long, says it in the work order's reason ("derate to 85% speed: RUL
        9.0 h -> 31.0 h") and proposes it as a dry-run ``SETPOINT`` action for people to
        confirm. The same on every engine (it is the twin's code).
    """

    def __init__(
        self,
        asset_id: str,
        asset_type: str,
        window_ms: int = 60_000,
        allowed_lateness_ms: int = 60_000,
        out_of_orderness_ms: int = 20_000,
        min_readings: int = 4,
        max_jump_ms: int | None = DEFAULT_MAX_JUMP_MS,
        jump_confirmations: int = DEFAULT_CONFIRMATIONS,
        detector: dict[str, Any] | None = None,
        health: dict[str, Any] | None = None,
        policy: dict[str, Any] | None = None,
        learned_every: int = 60,
        recommend: dict[str, Any] | None = None,
    ) -> None:
        if learned_every < 0:
            raise ValueError(f"learned_every must be >= 0, got {learned_every}")
        self.asset_id = asset_id
        self.asset_type = asset_type
        self.window_ms = window_ms
        self.min_readings = min_readings
        self.buffer = WindowBuffer(window_ms, allowed_lateness_ms, out_of_orderness_ms)
        self.guard = EventTimeGuard(max_jump_ms, jump_confirmations)
        self.detector = for_asset(asset_type, detector)
        self.health = HealthForecaster(window_s=window_ms / 1000, **(health or {}))
        self.policy = ActionPolicy(**{**policy_defaults(asset_type), **(policy or {})})
        self.windows_seen = 0
        self.last_drift_ms: int | None = None
        self.nominal: dict[str, float] = {}  # warm-up mean of setpoint-controlled sensors
        self._warm_sums: dict[str, tuple[float, int]] = {}
        # what-if: how the operating point moves, and how faithful the models are
        self.learned_every = learned_every
        self.recommend = None if recommend is None else dict(recommend)
        self.operating = (OperatingPoint(asset_type) if isinstance(self.detector, AssetDetector)
                          else None)
        self.fidelity = Fidelity()
        self.last_noise_z: dict[str, float] = {}
        self.last_score = 0.0
        self.last_window: tuple[int, dict[str, float]] | None = None  # end, sensor means

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "guard" not in state:  # a twin saved before the guard existed: the default one
            self.guard = EventTimeGuard()
        if "fidelity" not in state:  # a twin saved before what-if: it learns from now on
            self.learned_every = 60
            self.recommend = None
            self.operating = (OperatingPoint(self.asset_type)
                              if isinstance(self.detector, AssetDetector) else None)
            self.fidelity = Fidelity()
            self.last_noise_z = {}
            self.last_score = 0.0
            self.last_window = None

    # -- engine entry points ------------------------------------------------------------
    def add(self, reading: dict[str, Any]) -> list[Output]:
        """Take one canonical reading; returns outputs of any windows it closed."""
        out, closed = self.take(reading)
        return out + self.close(closed)

    def add_block(self, block: ReadingBlock) -> list[Output]:
        """Take this asset's readings as columns (arrival order): the same outputs as
        :meth:`add` on each row, in one step when the block is in event-time order."""
        out, closed = self.take_block(block)
        return out + self.close(closed)

    def advance(self, watermark_ms: int) -> list[Output]:
        """The engine's watermark moved: close what it closes."""
        return self.close(self.buffer.advance(watermark_ms))

    def flush(self) -> list[Output]:
        """End of a bounded input: close every open window."""
        return self.close(self.buffer.flush())

    def next_deadline_ms(self) -> int | None:
        return self.buffer.next_deadline_ms()

    def last_deadline_ms(self) -> int | None:
        return self.buffer.last_deadline_ms()

    # -- the two halves of add: buffer, then close ----------------------------------------
    def take(self, reading: dict[str, Any]) -> tuple[list[Output], list[Window]]:
        """Buffer one reading: its own outputs (late, duplicate) and the windows it
        closed, not yet scored (:meth:`close`)."""
        latest = self.buffer.max_ts_ms
        held = self.guard.admit(int(reading["ts_ms"]), latest)
        if held is not None:
            return [(DEAD_LETTER, self._held_back(reading, held, latest))], []
        status, closed = self.buffer.add(reading)
        if status == "late":
            return [(LATE, reading)], []
        return ([(DUPLICATE, reading)] if status == "duplicate" else []), closed

    def take_block(self, block: ReadingBlock) -> tuple[list[Output], list[Window]]:
        """:meth:`take` for a block of this asset's readings."""
        out: list[Output] = []
        latest = self.buffer.max_ts_ms
        if not self.guard.admits_all(block.ts_ms, latest):  # row by row, as take would
            admit = self.guard.admit
            keep: list[int] = []
            for i, ts in enumerate(block.ts_ms.tolist()):
                held = admit(ts, latest)
                if held is None:
                    keep.append(i)
                    latest = max(latest, ts)
                else:
                    out.append((DEAD_LETTER, self._held_back(block.reading(i), held, latest)))
            if len(keep) < len(block):
                block = block.take(np.asarray(keep, dtype=np.intp))
        late, dups, closed = self.buffer.add_block(block)
        out.extend((LATE, r) for r in late)
        out.extend((DUPLICATE, r) for r in dups)
        return out, closed

    def _held_back(self, reading: dict[str, Any], why: str, latest_ms: int) -> dict[str, Any]:
        """The dead letter of a reading the guard held back: the canonical reading as its
        payload (the raw message stays in its source), time = the asset's latest."""
        return dead_letter("twin", JUMP, f"asset {self.asset_id}: {why}",
                           reading.get("vendor") or "", self.asset_id.encode(),
                           wire.encode("twin/reading.v1", reading),
                           latest_ms)

    def close(self, windows: list[Window]) -> list[Output]:
        """Score closed windows, in order: their features, predictions, actions, state."""
        return close_windows([(self, windows)]) if windows else []

    # -- one window ---------------------------------------------------------------------
    def _on_window(self, w: Window, feats: dict[str, float]) -> list[Output]:
        out: list[Output] = [(FEATURES, {
            "asset_id": w.asset_id, "asset_type": w.asset_type,
            "window_start_ms": w.start_ms, "window_end_ms": w.end_ms,
            "count": w.count, "duplicates": w.duplicates, "features": feats,
        })]
        if w.count < self.min_readings or not feats:
            return out
        a = self.detector.assess(feats)
        fidelity = self._learn_whatif(w, feats, a)  # before the detector learns the window
        drifted = self.detector.learn_one(feats, a)
        if a.warming_up:  # no operating point to drift from yet
            drifted = []
        self.windows_seen += 1
        if drifted:
            self.last_drift_ms = w.end_ms
        self._learn_nominal(feats)
        # the health index follows unexplained deviation; drift windows are explained
        h = self.health
        ahead = None if h.level is None or h._n < 3 else h.level + h.trend
        hi, forecast, rul = self.health.update(0.0 if a.warming_up else a.max_z)
        self.fidelity.health_step(ahead, hi)
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
            "fidelity_error": fidelity[0], "fidelity_coverage": fidelity[1],
        }
        out.append((PREDICTION, pred))
        actions = self.policy.decide(pred)
        # the onset of an episode: the window whose verdicts made the policy page
        pred["alarm"] = any(action["kind"] == "ALERT" for action in actions)
        for action in actions:
            if action["kind"] == "SETPOINT":
                scale = self.nominal.get(self.policy.setpoint_name)
                if scale is None:  # no nominal known: cannot command safely
                    continue
                action["setpoint_value"] *= scale
                action["setpoint_previous"] *= scale
            out.append((ACTION, action))
        if self.recommend is not None and self.operating is not None:
            out.extend((ACTION, a) for a in self._recommended(actions))
        out.append((STATE, self.state(w, feats, pred)))
        return out

    def _recommended(self, actions: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """With ``recommend`` on: the episode's work order (among ``actions``, already
        emitted) carries the what-if's recommendation in its reason; returns the
        recommendation as a dry-run SETPOINT (SI units), if it changes anything."""
        order = next((a for a in actions if a["kind"] == "WORK_ORDER"), None)
        if order is None:
            return []
        from transforms.whatif import ModelError
        from transforms.whatif.model import snapshot
        from transforms.whatif.optimize import GuardrailError, recommend, setpoint_action

        try:
            doc = snapshot(self)
            rec = recommend(doc, **self.recommend)
        except ModelError as exc:
            order["reason"] += f"; no what-if recommendation: {exc}"
            return []
        order["reason"] += f"; what-if: {rec['text']}"
        try:
            proposal = setpoint_action(doc, rec, dry_run=True)
        except GuardrailError as exc:  # e.g. the policy changed the setpoint just now
            order["reason"] += f" (not proposed now: {exc})"
            return []
        return [] if proposal is None else [proposal]

    def _learn_whatif(self, w: Window, feats: dict[str, float], a: Any
                      ) -> tuple[float | None, float | None]:
        """The what-if side of a window, before the detector learns it: how well the
        models predicted it (the running fidelity, None while warming up) and how the
        operating point moved."""
        det = self.detector
        if self.operating is None:
            return None, None
        gate = a.warming_up or det.adapt_left > 0 or a.score < det.learn_below
        op = self.operating
        means = {s: v for s in op.driven + op.exogenous
                 if (v := feats.get(FEATURE_KEY["mean"][s])) is not None}
        op.learn(means, gate=gate, jump=a.drift and not a.warming_up)
        self.last_noise_z = dict(a.terms[1]["noise_z"]) if a.terms is not None else {}
        self.last_score = a.score
        self.last_window = (w.end_ms, {s: feats[k] for s in sensor_names(self.asset_type)
                                       if (k := FEATURE_KEY["mean"][s]) in feats})
        if a.warming_up:
            return None, None
        return self.fidelity.update(det.explain(a))

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
        last = self.last_window
        if last is not None and last[0] == w.end_ms:  # the window's means, made once
            values = last[1]
        else:
            values = {s: feats[k] for s in sensor_names(self.asset_type)
                      if (k := FEATURE_KEY["mean"][s]) in feats}
        setpoints = {}
        if self.policy.setpoint_name in self.nominal:
            setpoints[self.policy.setpoint_name] = (
                self.policy.setpoint * self.nominal[self.policy.setpoint_name])
        return {
            "asset_id": self.asset_id, "asset_type": self.asset_type, "ts_ms": w.end_ms,
            "values": values,
            "health_index": pred["health_index"], "anomaly_score": pred["anomaly_score"],
            "alert_open": self.policy.alert_open, "setpoints": setpoints,
            "windows_seen": self.windows_seen, "drift_events": self.detector.drift_events,
            "last_drift_ms": self.last_drift_ms, "model": self._model_id(),
            "fidelity_error": pred.get("fidelity_error"),
            "fidelity_coverage": pred.get("fidelity_coverage"),
            "learned": self._model_document(w, values),
        }

    def _model_id(self) -> str | None:
        from transforms.catalog import active_model

        m = active_model(self.asset_type)
        return m.id if m is not None else None

    def _model_document(self, w: Window, values: dict[str, float]) -> str | None:
        """The learned models as JSON every ``learned_every`` scored windows, else None."""
        every = self.learned_every
        if not every or self.operating is None or self.windows_seen % every:
            return None
        from transforms.whatif.model import dumps, snapshot

        return dumps(snapshot(self))


def policy_defaults(asset_type: str) -> dict[str, Any]:
    """The action policy's setpoint settings from the asset type's model: the sensor the
    twin may command and its guardrails (none: the twin commands nothing)."""
    sp = SETPOINTS.get(asset_type)
    if sp is None:
        return {"setpoint_name": None}
    return {"setpoint_name": sp.sensor, "setpoint_min": sp.min, "setpoint_max": sp.max,
            "derate_step": sp.step, "setpoint_interval_s": sp.interval_s}


def close_windows(closed: list[tuple[AssetTwin, list[Window]]]) -> list[Output]:
    """Score the closed windows of one or many twins, each twin's in order.

    Every window's features are computed first, in stacks (:func:`~transforms.features.
    windows_features`, the same bits as one by one), then each twin scores its windows:
    a twin's outputs are the ones it gives alone.
    """
    feats = iter(windows_features([w for _, ws in closed for w in ws]))
    out: list[Output] = []
    for twin, windows in closed:
        for w in windows:
            out.extend(twin._on_window(w, next(feats)))
    return out


class TwinShard:
    """The twins of many assets, stepped together: what an engine keeps per shard key.

    Keyed per asset, an engine makes one call, one state read and write and two timers
    per asset and batch of readings, and each call sees one asset's windows. Keyed by
    shard (a stable hash of the asset id, :func:`shard_of`), one call takes every asset's
    readings of a source batch that fall in the shard, and the windows they close are
    computed together (:func:`close_windows`). Each twin gives exactly the outputs it
    gives alone: the same windows in the same order, the same features to the bit.

    Parameters
    ----------
    twin_kwargs
        Keyword arguments of every :class:`AssetTwin` it creates.
    """

    def __init__(self, twin_kwargs: dict[str, Any] | None = None) -> None:
        self.twin_kwargs = dict(twin_kwargs or {})
        self.twins: dict[str, AssetTwin] = {}

    def __len__(self) -> int:
        return len(self.twins)

    def twin(self, asset_id: str, asset_type: str,
             restore: Callable[[str], AssetTwin | None] | None = None) -> AssetTwin:
        """The asset's twin: held, else ``restore(asset_id)`` (a twin saved by an earlier
        run), else a new one."""
        twin = self.twins.get(asset_id)
        if twin is None:
            twin = restore(asset_id) if restore is not None else None
            if twin is None:
                twin = AssetTwin(asset_id, asset_type, **self.twin_kwargs)
            self.twins[asset_id] = twin
        return twin

    def add(self, items: Iterable[tuple[str, ReadingBlock] | dict[str, Any]],
            restore: Callable[[str], AssetTwin | None] | None = None) -> list[Output]:
        """Readings in arrival order, each ``(asset_id, ReadingBlock)`` or a reading dict;
        returns every output, each asset's in its order."""
        out: list[Output] = []
        closed: list[tuple[AssetTwin, list[Window]]] = []
        for item in items:
            if isinstance(item, dict):
                twin = self.twin(item["asset_id"], item["asset_type"], restore)
                own, windows = twin.take(item)
            else:
                asset_id, block = item
                twin = self.twin(asset_id, block.asset_type, restore)
                own, windows = twin.take_block(block)
            out.extend(own)
            if windows:
                closed.append((twin, windows))
        out.extend(close_windows(closed))
        return out

    def advance(self, watermark_ms: int) -> list[Output]:
        """The engine's watermark moved: close what it closes, in every twin."""
        closed = [(t, ws) for t in self.twins.values() if (ws := t.buffer.advance(watermark_ms))]
        return close_windows(closed)

    def flush(self) -> list[Output]:
        """End of a bounded input: close every open window of every twin."""
        return close_windows([(t, ws) for t in self.twins.values() if (ws := t.buffer.flush())])

    def next_deadline_ms(self) -> int | None:
        """The earliest watermark at which some twin's window closes."""
        return min((d for t in self.twins.values()
                    if (d := t.next_deadline_ms()) is not None), default=None)

    def last_deadline_ms(self) -> int | None:
        """The watermark at which every open window of every twin has closed."""
        return max((d for t in self.twins.values()
                    if (d := t.last_deadline_ms()) is not None), default=None)


def shard_of(asset_id: str, shards: int) -> int:
    """The shard of ``asset_id`` among ``shards``: stable across processes and runs
    (CRC-32 of its UTF-8 bytes; Python's ``hash`` of a str is salted per process)."""
    return zlib.crc32(asset_id.encode()) % shards

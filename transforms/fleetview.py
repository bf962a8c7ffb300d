"""What a live view of the fleet knows: every asset's latest state, its recent history and
the fleet's data quality, built from the twin's output records.

:class:`FleetView` folds the records the twin writes (``twin/state.v1``,
``twin/prediction.v1``, ``twin/action.v1``, ``twin/deadletter.v1``, and, from run
folders, ``twin/features.v1`` and late ``twin/reading.v1``) into:

- one row per asset: health, anomaly score, open alert, drift, remaining useful life,
  last seen, and a ``risk`` the fleet is ordered by (:func:`risk`);
- per asset, bounded histories for charts: predictions, sensor window statistics, the
  action log (with each command's signature status), alarm and drift marks, and an
  interval for the health forecast from the forecast's own past errors
  (:class:`ForecastInterval`);
- fleet data quality: dead letters by reason and source with samples, late and duplicate
  readings per minute.

It is engine-free and transport-free: a binding decodes messages and calls
:meth:`FleetView.ingest`; readers ask for rows, details and deltas. Every change bumps a
version, so a push channel sends only what changed since the version a client has
(:meth:`FleetView.changed_since`). Histories are bounded (``history`` windows per asset,
a few hundred actions and marks), so memory follows the fleet size, not the run's length.
Records the twin re-emits (its ids are deterministic; Kafka delivery is at least once)
are folded in once.

The view is not thread-safe by itself: the binding holds :attr:`FleetView.lock` around
calls that read or change it.

>>> v = FleetView()
>>> v.ingest("twin/state.v1", {"asset_id": "pump-000", "asset_type": "pump",
...     "ts_ms": 60_000, "values": {"flow": 0.5}, "health_index": 0.4, "anomaly_score": 0.97,
...     "alert_open": True, "setpoints": {}, "windows_seen": 12})
True
>>> v.ingest("twin/state.v1", {"asset_id": "motor-001", "asset_type": "motor",
...     "ts_ms": 60_000, "values": {}, "health_index": 0.99, "anomaly_score": 0.1,
...     "alert_open": False, "setpoints": {}, "windows_seen": 12})
True
>>> [(r["asset_id"], r["status"], r["risk"]) for r in v.rows()]
[('pump-000', 'alert', 1.97), ('motor-001', 'normal', 0.1)]
"""

from __future__ import annotations

import math
import re
import threading
from array import array
from collections import OrderedDict, deque
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import numpy as np

from transforms.catalog import ASSET_TYPES

STATE, PREDICTION, ACTION, DEAD_LETTER, FEATURES, LATE = (
    "twin/state.v1", "twin/prediction.v1", "twin/action.v1", "twin/deadletter.v1",
    "twin/features.v1", "twin/reading.v1",
)
SCHEMAS = (STATE, PREDICTION, ACTION, DEAD_LETTER, FEATURES, LATE)

DEFAULT_HISTORY = 360  # windows of history kept per asset (6 h of the twin's 60 s windows)
MAX_ACTIONS = 200  # per asset, newest kept
MAX_MARKS = 200  # alarm and drift marks per asset
SAMPLES_PER_REASON = 5  # dead-letter samples kept per reason, newest
PREVIEW_BYTES = 96  # of a dead letter's payload, shown as hex and text
MAX_POINTERS = 200_000  # dead letters' source pointers remembered, to count each once
MINUTE_MS = 60_000
MAX_MINUTES = 24 * 60  # per-minute quality series, newest kept
RUL_HORIZON_S = 24 * 3600.0  # a remaining life shorter than this raises the risk
INTERVAL_COVERAGE = 0.9  # of the health forecast's interval
INTERVAL_MIN_ERRORS = 10  # past forecast errors needed before an interval is given
INTERVAL_ERRORS = 200  # past forecast errors kept per asset
SEVERITY_RANK = {"critical": 2, "warning": 1}
STATUSES = ("alert", "abnormal", "drift", "warming up", "normal", "no data")

PREDICTION_COLUMNS = ("window_end_ms", "anomaly_score", "is_anomaly", "health_index",
                      "forecast_health", "forecast_horizon_s", "rul_s", "drift", "alarm",
                      "warming_up", "forecast_low", "forecast_high")
SENSOR_STATS = ("mean", "min", "max")
# the fields of a state record that bring a what-if models document up to date
# (transforms.whatif.model.advance); at most MAX_SINCE_LEARNED such records are kept per
# asset (the twin writes a document every learned_every windows, 60 by default)
ADVANCE_FIELDS = ("ts_ms", "values", "setpoints", "health_index", "anomaly_score",
                  "alert_open", "windows_seen", "last_drift_ms")
MAX_SINCE_LEARNED = 1440

# The fields of a fleet row, in the order the API lists them.
ROW_FIELDS = ("asset_id", "asset_type", "site", "status", "risk", "health_index",
              "anomaly_score", "is_anomaly", "warming_up", "alert_open", "alert_severity",
              "alert_reason", "alert_since_ms", "drift", "drift_events", "last_drift_ms",
              "rul_s", "forecast_health", "forecast_horizon_s", "forecast_low",
              "forecast_high", "window_end_ms", "last_seen_ms", "received_ms",
              "windows_seen", "contributors", "values", "setpoints", "info")


def epoch_ms(value: Any) -> int | None:
    """``timestamp-millis`` as epoch ms, whether fastavro gave a datetime or a number."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return round(value.timestamp() * 1000)
    return int(value)


def _num(value: Any) -> float | None:
    """A JSON-safe number: None for missing, NaN and infinities."""
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def risk(health_index: float | None, anomaly_score: float | None, rul_s: float | None,
         alert_severity: str | None) -> float:
    """How much an asset needs attention, for ordering the fleet (larger first).

    An open alert's severity ranks first (critical 2, warning 1, any other open alert 1,
    none 0), as alarm lists do; within a rank, the worst of the anomaly score, the lost
    health (``1 - health_index``) and the urgency of the remaining useful life
    (``1 - rul / 24 h`` when it is shorter than a day), each in [0, 1].

    >>> risk(0.9, 0.2, None, None), risk(0.9, 0.2, 6 * 3600.0, None)
    (0.2, 0.75)
    >>> risk(0.5, 0.99, None, "critical")
    2.99
    """
    parts = [0.0]
    if anomaly_score is not None:
        parts.append(min(max(anomaly_score, 0.0), 1.0))
    if health_index is not None:
        parts.append(min(max(1.0 - health_index, 0.0), 1.0))
    if rul_s is not None and rul_s < RUL_HORIZON_S:
        parts.append(1.0 - max(rul_s, 0.0) / RUL_HORIZON_S)
    rank = 0 if alert_severity is None else SEVERITY_RANK.get(alert_severity, 1)
    return round(rank + max(parts), 6)


class Ring:
    """The newest ``capacity`` rows of fixed float columns, in arrival order.

    Storage grows by doubling up to ``capacity``, so a short history costs little.
    ``appended`` counts every row ever added: a reader that saw ``n`` rows asks for
    :meth:`since` ``n``.

    >>> r = Ring(("t", "x"), capacity=3)
    >>> for i in range(5):
    ...     r.append((i, i * 10))
    >>> r.columns()["x"], r.appended, r.since(4)["t"], r.since(1)
    ([20.0, 30.0, 40.0], 5, [4.0], None)
    """

    __slots__ = ("names", "capacity", "appended", "_data", "_start", "_n")

    def __init__(self, names: Iterable[str], capacity: int) -> None:
        self.names = tuple(names)
        self.capacity = max(1, int(capacity))
        self.appended = 0
        self._data = np.empty((min(8, self.capacity), len(self.names)))
        self._start = 0  # index of the oldest kept row in _data
        self._n = 0  # rows kept

    def __len__(self) -> int:
        return self._n

    def append(self, row: Iterable[float]) -> None:
        size = len(self._data)
        if self._n == size and size < self.capacity:
            grown = np.empty((min(2 * size, self.capacity), len(self.names)))
            grown[:self._n] = self._ordered()
            self._data, self._start, size = grown, 0, len(grown)
        if self._n < size:
            self._data[(self._start + self._n) % size] = tuple(row)
            self._n += 1
        else:  # full: the oldest row makes room
            self._data[self._start] = tuple(row)
            self._start = (self._start + 1) % size
        self.appended += 1

    def last(self) -> np.ndarray | None:
        if not self._n:
            return None
        return self._data[(self._start + self._n - 1) % len(self._data)]

    def _ordered(self) -> np.ndarray:
        return self._data[(self._start + np.arange(self._n)) % len(self._data)]

    def columns(self, k: int | None = None) -> dict[str, list[float | None]]:
        """The newest ``k`` rows (all kept rows by default), column by column; NaN is
        None (JSON null)."""
        k = self._n if k is None else max(0, min(k, self._n))
        block = self._ordered()[self._n - k:]
        return {name: [None if x != x else x for x in block[:, i].tolist()]
                for i, name in enumerate(self.names)}

    def since(self, appended: int) -> dict[str, list[float | None]] | None:
        """The rows added after a reader had seen ``appended``; None when some of them
        are no longer kept (the reader should start again from :meth:`columns`)."""
        new = self.appended - appended
        if new < 0 or new > self._n:
            return None
        return self.columns(new)


class ForecastInterval:
    """An interval for the health forecast from the forecast's own past errors.

    The twin's forecast is a point (Holt's trend extrapolated ``horizon`` seconds). Each
    forecast is remembered until its target time passes; then its error against the
    health index observed there is kept. The interval is the forecast plus or minus the
    ``coverage`` quantile of the absolute errors (split-conformal prediction, as in
    ``mapie``'s and ``statsforecast``'s conformal intervals), once
    :data:`INTERVAL_MIN_ERRORS` errors are known.

    >>> f = ForecastInterval()
    >>> for i in range(30):
    ...     f.observe(i * 60_000, 1.0, 0.9, 60)   # forecasts 0.9, health stays 1.0
    >>> [round(x, 3) for x in f.interval(0.9)]
    [0.8, 1.0]
    """

    __slots__ = ("coverage", "_pending", "_errors")

    def __init__(self, coverage: float = INTERVAL_COVERAGE) -> None:
        self.coverage = coverage
        self._pending: deque[tuple[int, float]] = deque()
        self._errors: deque[float] = deque(maxlen=INTERVAL_ERRORS)

    def observe(self, window_end_ms: int, health: float, forecast: float | None,
                horizon_s: float | None) -> None:
        while self._pending and self._pending[0][0] <= window_end_ms:
            _, predicted = self._pending.popleft()
            self._errors.append(abs(health - predicted))
        if forecast is not None and horizon_s:
            target = window_end_ms + int(horizon_s * 1000)
            if not self._pending or target > self._pending[-1][0]:
                self._pending.append((target, forecast))

    def interval(self, forecast: float | None) -> tuple[float, float] | None:
        if forecast is None or len(self._errors) < INTERVAL_MIN_ERRORS:
            return None
        q = float(np.quantile(np.fromiter(self._errors, float), self.coverage,
                              method="higher"))
        return max(0.0, forecast - q), min(1.0, forecast + q)


class AssetView:
    """What the view knows about one asset (see :class:`FleetView`)."""

    __slots__ = ("asset_id", "asset_type", "info", "version", "state_ms", "values",
                 "setpoints", "windows_seen", "drift_events", "last_drift_ms", "health",
                 "score", "score_ms", "is_anomaly", "warming_up", "drift", "contributors",
                 "forecast", "horizon_s", "rul_s", "interval", "alert_open", "alert_ms",
                 "alert", "cleared_ms", "last_seen_ms", "received_ms", "predictions", "sensors",
                 "sensor_names", "has_features", "actions", "action_ids", "actions_added",
                 "marks", "marks_added", "intervals", "learned", "learned_ms",
                 "since_learned", "_row")

    def __init__(self, asset_id: str, asset_type: str | None, info: Mapping[str, Any],
                 history: int) -> None:
        self.asset_id, self.asset_type, self.info = asset_id, asset_type, dict(info)
        self.version = 0
        self.state_ms: int | None = None
        self.values: dict[str, float] = {}
        self.setpoints: dict[str, float] = {}
        self.windows_seen = 0
        self.drift_events = 0
        self.last_drift_ms: int | None = None
        self.health: float | None = None
        self.score: float | None = None
        self.score_ms: int | None = None
        self.is_anomaly = False
        self.warming_up = False
        self.drift = False
        self.contributors: list[str] = []
        self.forecast: float | None = None
        self.horizon_s: float | None = None
        self.rul_s: float | None = None
        self.interval: tuple[float, float] | None = None
        self.alert_open = False
        self.alert_ms: int | None = None
        self.alert: dict[str, Any] | None = None  # the newest ALERT action
        self.cleared_ms: int | None = None  # the newest ALERT_CLEARED
        self.last_seen_ms: int | None = None
        self.received_ms: int | None = None
        self.predictions = Ring(PREDICTION_COLUMNS, history)
        self.sensors: Ring | None = None
        self.sensor_names: tuple[str, ...] = ()
        self.has_features = False
        self.actions: deque[dict[str, Any]] = deque(maxlen=MAX_ACTIONS)
        self.action_ids: set[str] = set()
        self.actions_added = 0
        self.marks: deque[dict[str, Any]] = deque(maxlen=MAX_MARKS)
        self.marks_added = 0
        self.intervals = ForecastInterval()
        # what a what-if needs: the newest learned-models document (JSON, as the state
        # record carried it) and the state records after it, to bring it up to date
        self.learned: str | None = None
        self.learned_ms: int | None = None
        self.since_learned: deque[tuple] = deque(maxlen=MAX_SINCE_LEARNED)
        self._row: dict[str, Any] | None = None

    # -- rows -----------------------------------------------------------------------

    def alert_severity(self) -> str | None:
        if not self.alert_open:
            return None
        return (self.open_alert() or {}).get("severity") or "warning"

    def status(self) -> str:
        if self.alert_open:
            return "alert"
        if self.score_ms is None and self.state_ms is None:
            return "no data"
        if self.is_anomaly:
            return "abnormal"
        if self.drift:
            return "drift"
        if self.warming_up:
            return "warming up"
        return "normal"

    def row(self) -> dict[str, Any]:
        """The asset's fleet row (cached until it changes)."""
        if self._row is not None:
            return self._row
        severity = self.alert_severity()
        alert = self.open_alert()
        low, high = self.interval or (None, None)
        self._row = {
            "asset_id": self.asset_id, "asset_type": self.asset_type,
            "site": self.info.get("site"), "status": self.status(),
            "risk": risk(self.health, self.score, self.rul_s, severity),
            "health_index": self.health, "anomaly_score": self.score,
            "is_anomaly": self.is_anomaly, "warming_up": self.warming_up,
            "alert_open": self.alert_open, "alert_severity": severity,
            "alert_reason": alert.get("reason") if alert else None,
            "alert_since_ms": alert.get("ts_ms") if alert else None,
            "drift": self.drift, "drift_events": self.drift_events,
            "last_drift_ms": self.last_drift_ms, "rul_s": self.rul_s,
            "forecast_health": self.forecast, "forecast_horizon_s": self.horizon_s,
            "forecast_low": low, "forecast_high": high,
            "window_end_ms": self.score_ms if self.score_ms is not None else self.state_ms,
            "last_seen_ms": self.last_seen_ms, "received_ms": self.received_ms,
            "windows_seen": self.windows_seen, "contributors": list(self.contributors),
            "values": dict(self.values), "setpoints": dict(self.setpoints),
            "info": dict(self.info),
        }
        return self._row

    def _seen(self, ms: int | None, received_ms: int | None) -> None:
        if ms is not None and (self.last_seen_ms is None or ms > self.last_seen_ms):
            self.last_seen_ms = ms
        if received_ms is not None and (self.received_ms is None
                                        or received_ms > self.received_ms):
            self.received_ms = received_ms

    def _mark(self, kind: str, ms: int, **fields: Any) -> None:
        self.marks.append({"kind": kind, "ms": ms, **fields})
        self.marks_added += 1

    def _sensor_ring(self, names: Iterable[str], history: int) -> Ring:
        if self.sensors is None:
            known = ASSET_TYPES.get(self.asset_type or "")
            self.sensor_names = tuple(s.name for s in known) if known else tuple(sorted(names))
            self.sensors = Ring(["window_end_ms", *(f"{s}.{stat}" for s in self.sensor_names
                                                    for stat in SENSOR_STATS)], history)
        return self.sensors

    def _alert_from(self, ms: int, is_open: bool) -> None:
        """Whether an alert is open: what the newest record in event time says (state and
        actions arrive on different topics, in any order)."""
        if self.alert_ms is not None and ms < self.alert_ms:
            return
        self.alert_ms, self.alert_open = ms, is_open

    def open_alert(self) -> dict[str, Any] | None:
        """The ALERT action of the open episode (None when none is open or it is not
        known: the ALERT was before the lookback)."""
        if not self.alert_open or self.alert is None:
            return None
        if self.cleared_ms is not None and self.cleared_ms >= self.alert["ts_ms"]:
            return None
        return self.alert

    # -- records --------------------------------------------------------------------

    def add_state(self, r: Mapping[str, Any], received_ms: int | None, history: int) -> bool:
        ms = epoch_ms(r["ts_ms"])
        self._seen(ms, received_ms)
        if self.state_ms is not None and ms < self.state_ms:
            return received_ms is not None  # an older window: only "last received" moved
        new_window = self.state_ms is None or ms > self.state_ms
        self.state_ms = ms
        self._keep_learned(r, ms, new_window)
        self.asset_type = self.asset_type or r.get("asset_type")
        self.values = {k: v for k, v in (r.get("values") or {}).items() if _num(v) is not None}
        self.setpoints = dict(r.get("setpoints") or {})
        self.windows_seen = int(r.get("windows_seen") or 0)
        self.drift_events = int(r.get("drift_events") or 0)
        self.last_drift_ms = r.get("last_drift_ms")
        if self.score_ms is None or ms >= self.score_ms:
            self.health, self.score = _num(r.get("health_index")), _num(r.get("anomaly_score"))
        self._alert_from(ms, bool(r.get("alert_open")))
        if new_window and not self.has_features and self.values:
            ring = self._sensor_ring(self.values, history)
            row = [ms] + [self.values.get(s, math.nan) if stat == "mean" else math.nan
                          for s in self.sensor_names for stat in SENSOR_STATS]
            last = ring.last()
            if last is not None and last[0] >= ms:
                return True
            ring.append(row)
        return True

    def _keep_learned(self, r: Mapping[str, Any], ms: int, new_window: bool) -> None:
        """Keep the newest models document, and the fields of later state records that
        :func:`transforms.whatif.model.advance` replays, packed (:func:`_pack`)."""
        if r.get("learned"):
            self.learned, self.learned_ms = r["learned"], ms
            self.since_learned.clear()
        elif self.learned is not None and new_window:
            self.since_learned.append(_pack(r, ms))

    def whatif_sources(self) -> tuple[str | None, list[dict[str, Any]]]:
        """The newest models document (None: no state record has carried one yet) and the
        state records after it, for :meth:`FleetView.whatif_document`."""
        return self.learned, [_unpack(p) for p in self.since_learned]

    def add_features(self, r: Mapping[str, Any], received_ms: int | None, history: int
                     ) -> bool:
        ms = epoch_ms(r["window_end_ms"])
        self._seen(ms, received_ms)
        feats = r.get("features") or {}
        names = {k.rpartition(".")[0] for k in feats}
        ring = self._sensor_ring(names, history)
        if not self.has_features:  # features carry min and max: they replace state means
            self.has_features = True
            self.sensors = ring = Ring(ring.names, ring.capacity)
        last = ring.last()
        if last is not None and last[0] >= ms:
            return False
        ring.append([ms] + [_nan(feats.get(f"{s}.{stat}")) for s in self.sensor_names
                            for stat in SENSOR_STATS])
        return True

    def add_prediction(self, r: Mapping[str, Any], received_ms: int | None) -> bool:
        ms = epoch_ms(r["window_end_ms"])
        self._seen(ms, received_ms)
        last = self.predictions.last()
        if last is not None and last[0] >= ms:
            return received_ms is not None
        self.asset_type = self.asset_type or r.get("asset_type")
        health = _num(r.get("health_index"))
        forecast, horizon = _num(r.get("forecast_health")), _num(r.get("forecast_horizon_s"))
        if health is not None:
            self.intervals.observe(ms, health, forecast, horizon)
        interval = self.intervals.interval(forecast)
        if self.state_ms is None or ms >= self.state_ms:
            self.health, self.score = health, _num(r.get("anomaly_score"))
        self.score_ms = ms
        self.is_anomaly, self.warming_up = bool(r.get("is_anomaly")), bool(r.get("warming_up"))
        self.drift = bool(r.get("drift"))
        self.contributors = list(r.get("contributors") or [])
        self.forecast, self.horizon_s, self.rul_s = forecast, horizon, _num(r.get("rul_s"))
        self.interval = interval
        low, high = interval or (math.nan, math.nan)
        self.predictions.append((
            ms, _nan(r.get("anomaly_score")), float(self.is_anomaly), _nan(health),
            _nan(forecast), _nan(horizon), _nan(r.get("rul_s")), float(self.drift),
            float(bool(r.get("alarm"))), float(self.warming_up), low, high))
        if r.get("alarm") or self.is_anomaly:
            self._mark("alarm" if r.get("alarm") else "anomaly", ms,
                       score=_num(r.get("anomaly_score")), contributors=list(self.contributors))
        if self.drift:
            self._mark("drift", ms, sensors=list(r.get("drift_sensors") or []))
        return True

    def add_action(self, r: Mapping[str, Any], received_ms: int | None,
                   signature: str | None, command: Mapping[str, Any] | None) -> bool:
        ms = epoch_ms(r["ts_ms"])
        self._seen(ms, received_ms)
        action_id = r.get("action_id") or f"{self.asset_id}:{ms}:{r.get('kind')}"
        if action_id in self.action_ids:
            return False
        if len(self.action_ids) >= 4 * MAX_ACTIONS:
            self.action_ids = {a["action_id"] for a in self.actions}
        self.action_ids.add(action_id)
        action = {
            "n": self.actions_added, "action_id": action_id, "kind": r.get("kind"),
            "ts_ms": ms, "severity": r.get("severity"), "reason": r.get("reason"),
            "anomaly_score": _num(r.get("anomaly_score")),
            "health_index": _num(r.get("health_index")), "rul_s": _num(r.get("rul_s")),
            "setpoint_name": r.get("setpoint_name"),
            "setpoint_value": _num(r.get("setpoint_value")),
            "setpoint_previous": _num(r.get("setpoint_previous")),
            "dry_run": bool(r.get("dry_run")), "signature": signature,
            "command": dict(command) if command else None, "received_ms": received_ms,
        }
        self.actions.append(action)
        self.actions_added += 1
        if action["kind"] == "ALERT":
            if self.alert is None or ms >= self.alert["ts_ms"]:
                self.alert = action
            self._alert_from(ms, True)
        elif action["kind"] == "ALERT_CLEARED":
            self.cleared_ms = ms if self.cleared_ms is None else max(ms, self.cleared_ms)
            self._alert_from(ms, False)
        return True

    # -- details --------------------------------------------------------------------

    def sensor_series(self, k: int | None = None) -> dict[str, Any]:
        if self.sensors is None:
            return {"window_end_ms": [], "sensors": {}}
        cols = self.sensors.columns(k)
        return self._sensor_json(cols)

    def _sensor_json(self, cols: dict[str, list[float | None]]) -> dict[str, Any]:
        units = {s.name: s.unit for s in ASSET_TYPES.get(self.asset_type or "", ())}
        return {"window_end_ms": cols["window_end_ms"],
                "sensors": {s: {"unit": units.get(s), **{stat: cols[f"{s}.{stat}"]
                                                         for stat in SENSOR_STATS}}
                            for s in self.sensor_names}}


_POINTER = re.compile(r"(.+)/\d+@\d+")


def _nan(value: Any) -> float:
    v = _num(value)
    return math.nan if v is None else v


class Quality:
    """Fleet data quality: dead letters by reason and source, late and duplicate readings."""

    def __init__(self) -> None:
        self.version = 0
        self.dead_letters = 0
        self.by_reason: dict[str, int] = {}
        self.by_source: dict[str, int] = {}
        self.by_reason_source: dict[tuple[str, str], int] = {}
        self.by_stage: dict[str, int] = {}
        self.samples: dict[str, deque[dict[str, Any]]] = {}
        self.dead_per_minute: OrderedDict[int, int] = OrderedDict()
        self.late = 0
        self.late_per_minute: OrderedDict[int, int] = OrderedDict()
        self.late_by_asset: dict[str, int] = {}
        self.duplicates = 0
        self.duplicates_per_minute: OrderedDict[int, int] = OrderedDict()
        self.late_known = False  # whether the source carries late readings at all
        self.duplicates_known = False
        self.unreadable = 0  # messages on the topics the view could not decode
        self.repeats = 0  # dead letters seen before (a rerun's, or redelivered)
        self._pointers: OrderedDict[str, None] = OrderedDict()
        self.unreadable_by_reason: dict[str, int] = {}

    @staticmethod
    def _bump(series: OrderedDict[int, int], ms: int | None, n: int = 1) -> None:
        if ms is None:
            return
        minute = ms - ms % MINUTE_MS
        series[minute] = series.get(minute, 0) + n
        if len(series) > MAX_MINUTES:
            for key in sorted(series)[:len(series) - MAX_MINUTES]:
                del series[key]

    def add_dead_letter(self, r: Mapping[str, Any]) -> None:
        reason, pointer = str(r.get("reason") or "?"), str(r.get("source") or "?")
        # from Kafka the source is a pointer, topic/partition@offset: counted by topic
        where = _POINTER.fullmatch(pointer)
        source = where.group(1) if where else pointer
        if where:  # one message's dead letter, written again by a rerun: counted once
            if pointer in self._pointers:
                self.repeats += 1
                return
            self._pointers[pointer] = None
            if len(self._pointers) > MAX_POINTERS:
                self._pointers.popitem(last=False)
        stage = str(r.get("stage") or "?")
        self.dead_letters += 1
        self.by_reason[reason] = self.by_reason.get(reason, 0) + 1
        self.by_source[source] = self.by_source.get(source, 0) + 1
        self.by_reason_source[(reason, source)] = self.by_reason_source.get(
            (reason, source), 0) + 1
        self.by_stage[stage] = self.by_stage.get(stage, 0) + 1
        ms = epoch_ms(r.get("ts_ms"))
        self._bump(self.dead_per_minute, ms)
        payload = r.get("payload") or b""
        if isinstance(payload, str):  # JSON lines carry bytes as base64
            import base64

            try:
                payload = base64.b64decode(payload)
            except ValueError:
                payload = payload.encode()
        key = r.get("key")
        if isinstance(key, bytes | bytearray):
            key = bytes(key).decode("utf-8", "replace")
        head = bytes(payload[:PREVIEW_BYTES])
        self.samples.setdefault(reason, deque(maxlen=SAMPLES_PER_REASON)).append({
            "reason": reason, "stage": stage, "source": pointer,
            "detail": str(r.get("detail") or ""), "ts_ms": ms, "key": key,
            "payload_bytes": len(payload), "payload_hex": head.hex(" "),
            "payload_text": "".join(chr(b) if 32 <= b < 127 else "." for b in head),
        })
        self.version += 1

    def add_late(self, r: Mapping[str, Any]) -> None:
        self.late += 1
        self._bump(self.late_per_minute, epoch_ms(r.get("ts_ms")))
        asset = str(r.get("asset_id") or "?")
        self.late_by_asset[asset] = self.late_by_asset.get(asset, 0) + 1
        self.version += 1

    def add_duplicates(self, window_end_ms: int, n: int) -> None:
        if n:
            self.duplicates += n
            self._bump(self.duplicates_per_minute, window_end_ms, n)
            self.version += 1

    def add_unreadable(self, reason: str) -> None:
        self.unreadable += 1
        self.unreadable_by_reason[reason] = self.unreadable_by_reason.get(reason, 0) + 1
        self.version += 1

    def summary(self) -> dict[str, Any]:
        """Counts only (for the fleet page)."""
        return {"dead_letters": self.dead_letters,
                "dead_letters_by_reason": dict(sorted(self.by_reason.items(),
                                                      key=lambda kv: (-kv[1], kv[0]))),
                "late_readings": self.late if self.late_known else None,
                "duplicate_readings": self.duplicates if self.duplicates_known else None,
                "unreadable": self.unreadable, "repeated_dead_letters": self.repeats}

    def detail(self) -> dict[str, Any]:
        """Everything (for the data-quality page)."""
        def series(s: OrderedDict[int, int]) -> dict[str, list[int]]:
            keys = sorted(s)
            return {"minute_ms": keys, "count": [s[k] for k in keys]}

        return {
            **self.summary(),
            "by_source": dict(sorted(self.by_source.items(), key=lambda kv: (-kv[1], kv[0]))),
            "by_stage": dict(sorted(self.by_stage.items(), key=lambda kv: (-kv[1], kv[0]))),
            "by_reason_source": [{"reason": r, "source": s, "count": n} for (r, s), n in
                                 sorted(self.by_reason_source.items(),
                                        key=lambda kv: (-kv[1], kv[0]))],
            "samples": {r: list(d)[::-1] for r, d in sorted(self.samples.items())},
            "dead_letters_per_minute": series(self.dead_per_minute),
            "late_per_minute": series(self.late_per_minute) if self.late_known else None,
            "late_by_asset": dict(sorted(self.late_by_asset.items(),
                                         key=lambda kv: (-kv[1], kv[0]))[:50])
            if self.late_known else None,
            "duplicates_per_minute": series(self.duplicates_per_minute)
            if self.duplicates_known else None,
            "unreadable_by_reason": dict(self.unreadable_by_reason),
        }


class FleetView:
    """The fleet as the twin's outputs describe it (see the module docstring).

    Parameters
    ----------
    history
        Windows of history kept per asset for charts.
    asset_info
        Optional attributes per asset id (``site``, a name, ...) from the plant's asset
        register; ``site`` is what the fleet can be filtered by.
    """

    def __init__(self, history: int = DEFAULT_HISTORY,
                 asset_info: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        self.history = history
        self.asset_info = {k: dict(v) for k, v in (asset_info or {}).items()}
        self.assets: dict[str, AssetView] = {}
        self.quality = Quality()
        self.version = 0
        self.records = 0
        self.records_by_schema: dict[str, int] = {}
        self.lock = threading.Lock()
        self._changes: OrderedDict[str, int] = OrderedDict()  # asset -> version, oldest first

    def _asset(self, asset_id: str, asset_type: str | None) -> AssetView:
        a = self.assets.get(asset_id)
        if a is None:
            a = self.assets[asset_id] = AssetView(
                asset_id, asset_type, self.asset_info.get(asset_id, {}), self.history)
        return a

    def _changed(self, a: AssetView) -> None:
        self.version += 1
        a.version = self.version
        a._row = None
        self._changes[a.asset_id] = self.version
        self._changes.move_to_end(a.asset_id)

    def ingest(self, schema: str, record: Mapping[str, Any], received_ms: int | None = None,
               signature: str | None = None, command: Mapping[str, Any] | None = None
               ) -> bool:
        """Fold in one decoded record of ``schema``; returns whether the view changed.

        ``received_ms``: when the record reached its topic (Kafka timestamp), for "last
        received" and the view's lag; ``signature`` and ``command``: an action's
        signature status (``valid``, ``invalid``, ``missing``, ...) and its verified
        stamp. A record of another schema raises ``ValueError``.
        """
        self.records += 1
        self.records_by_schema[schema] = self.records_by_schema.get(schema, 0) + 1
        if schema == DEAD_LETTER:
            self.quality.add_dead_letter(record)
            self.version += 1
            return True
        if schema == LATE:
            self.quality.late_known = True
            self.quality.add_late(record)
            self.version += 1
            return True
        if schema not in SCHEMAS:
            raise ValueError(f"the fleet view does not read {schema} records")
        asset_id = str(record.get("asset_id") or "")
        if not asset_id:
            raise ValueError(f"a {schema} record without an asset_id")
        a = self._asset(asset_id, record.get("asset_type"))
        if schema == STATE:
            changed = a.add_state(record, received_ms, self.history)
        elif schema == PREDICTION:
            changed = a.add_prediction(record, received_ms)
        elif schema == ACTION:
            changed = a.add_action(record, received_ms, signature, command)
        else:
            self.quality.duplicates_known = True
            self.quality.add_duplicates(epoch_ms(record["window_end_ms"]),
                                        int(record.get("duplicates") or 0))
            changed = a.add_features(record, received_ms, self.history)
        if changed:
            self._changed(a)
        return changed

    def mark_sources(self, late: bool, duplicates: bool) -> None:
        """Say whether the source carries late readings and window duplicate counts at
        all (run folders do; the Kafka output topics do not), so zero is not shown for
        "unknown"."""
        self.quality.late_known = self.quality.late_known or late
        self.quality.duplicates_known = self.quality.duplicates_known or duplicates

    # -- reading ----------------------------------------------------------------------

    def rows(self, asset_type: str | None = None, site: str | None = None,
             status: str | None = None) -> list[dict[str, Any]]:
        """Fleet rows, riskiest first (ties: asset id), filtered by type, site, status."""
        out = [a.row() for a in self.assets.values()]
        if asset_type:
            out = [r for r in out if r["asset_type"] == asset_type]
        if site:
            out = [r for r in out if r["site"] == site]
        if status:
            out = [r for r in out if r["status"] == status]
        out.sort(key=lambda r: (-r["risk"], r["asset_id"]))
        return out

    def changed_since(self, version: int) -> list[dict[str, Any]]:
        """Rows of the assets that changed after ``version``, oldest change first."""
        out = []
        for asset_id in reversed(self._changes):
            if self._changes[asset_id] <= version:
                break
            out.append(self.assets[asset_id].row())
        out.reverse()
        return out

    def counts(self) -> dict[str, Any]:
        """Fleet totals: assets per status and type, sites, the newest event time."""
        by_status = dict.fromkeys(STATUSES, 0)
        by_type: dict[str, int] = {}
        sites: set[str] = set()
        newest = None
        for a in self.assets.values():
            r = a.row()
            by_status[r["status"]] += 1
            by_type[r["asset_type"] or "?"] = by_type.get(r["asset_type"] or "?", 0) + 1
            if r["site"] is not None:
                sites.add(str(r["site"]))
            if r["last_seen_ms"] is not None and (newest is None or r["last_seen_ms"] > newest):
                newest = r["last_seen_ms"]
        return {"assets": len(self.assets), "by_status": by_status,
                "by_type": dict(sorted(by_type.items())), "sites": sorted(sites),
                "newest_event_ms": newest}

    def asset_detail(self, asset_id: str) -> dict[str, Any] | None:
        """One asset: its row and its histories; None if the view has never seen it."""
        a = self.assets.get(asset_id)
        if a is None:
            return None
        return {"asset": a.row(), "predictions": a.predictions.columns(),
                "sensors": a.sensor_series(), "actions": list(a.actions)[::-1],
                "marks": list(a.marks), "cursor": self.cursor(a)}

    def whatif_sources(self, asset_id: str) -> tuple[str | None, list[dict[str, Any]]] | None:
        """The asset's newest models document (JSON) and the state records after it
        (cheap: call it under the lock, then :func:`whatif_document` outside it); None if
        the view has never seen the asset."""
        a = self.assets.get(asset_id)
        return None if a is None else a.whatif_sources()

    @staticmethod
    def cursor(a: AssetView) -> dict[str, int]:
        return {"version": a.version, "predictions": a.predictions.appended,
                "sensors": a.sensors.appended if a.sensors is not None else 0,
                "actions": a.actions_added, "marks": a.marks_added}

    def asset_since(self, asset_id: str, cursor: Mapping[str, int]) -> dict[str, Any] | None:
        """What changed for one asset after ``cursor`` (from :meth:`asset_detail` or a
        previous call): None if nothing did; ``{"reset": True, ...}`` with the whole
        detail when the client fell behind the kept history."""
        a = self.assets.get(asset_id)
        if a is None or a.version <= cursor.get("version", 0):
            return None
        preds = a.predictions.since(cursor.get("predictions", 0))
        sens = (a.sensors.since(cursor.get("sensors", 0)) if a.sensors is not None
                else {"window_end_ms": []})
        new_actions = a.actions_added - cursor.get("actions", 0)
        new_marks = a.marks_added - cursor.get("marks", 0)
        if (preds is None or sens is None or new_actions > len(a.actions)
                or new_marks > len(a.marks) or new_actions < 0 or new_marks < 0):
            return {"reset": True, **self.asset_detail(asset_id)}
        actions = list(a.actions)[len(a.actions) - new_actions:] if new_actions else []
        marks = list(a.marks)[len(a.marks) - new_marks:] if new_marks else []
        return {"reset": False, "asset": a.row(), "predictions": preds,
                "sensors": a._sensor_json(sens) if a.sensors is not None else
                {"window_end_ms": [], "sensors": {}},
                "actions": actions[::-1], "marks": marks, "cursor": self.cursor(a)}


_NAMES: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per set of sensor names


def _names(keys: Iterable[str]) -> tuple[str, ...]:
    t = tuple(keys)
    return _NAMES.setdefault(t, t) if len(_NAMES) < 10_000 else t


def _pack(r: Mapping[str, Any], ms: int) -> tuple:
    """A state record's :data:`ADVANCE_FIELDS` in a quarter of a dict's memory: the
    numbers in typed arrays, the sensor names shared by every record that has them (a
    fleet keeps up to ``learned_every`` of these per asset)."""
    values = {k: v for k, v in (r.get("values") or {}).items() if v is not None}
    setpoints = {k: v for k, v in (r.get("setpoints") or {}).items() if v is not None}
    return (ms, epoch_ms(r.get("last_drift_ms")), _names(values),
            array("d", values.values()), _names(setpoints), array("d", setpoints.values()),
            float(r["health_index"]), float(r.get("anomaly_score") or 0.0),
            bool(r.get("alert_open")), int(r.get("windows_seen") or 0))


def _unpack(p: tuple) -> dict[str, Any]:
    ms, drift, vn, vv, sn, sv, health, score, alert, seen = p
    return {"ts_ms": ms, "last_drift_ms": drift, "values": dict(zip(vn, vv)),
            "setpoints": dict(zip(sn, sv)), "health_index": health, "anomaly_score": score,
            "alert_open": alert, "windows_seen": seen}


def whatif_document(asset_id: str, learned: str | None, later: list[dict[str, Any]]
                    ) -> dict[str, Any]:
    """The what-if models document of an asset (:mod:`transforms.whatif.model`) from what
    :meth:`FleetView.whatif_sources` returned: the newest document brought up to the newest
    state record. Raises :class:`~transforms.whatif.model.ModelError` saying why there is
    none."""
    from transforms.whatif.model import ModelError, advance, loads

    if learned is None:
        raise ModelError(f"{asset_id}: no state record has carried its learned models yet "
                         f"(the twin writes them every learned_every windows after the "
                         f"warm-up; with learned_every 0 never): nothing to ask a what-if of")
    return advance(loads(learned), later)

"""A twin's learned models as one plain document: what a what-if question is asked of.

:func:`snapshot` takes from an :class:`~transforms.twin.AssetTwin` everything a roll-forward
needs and nothing else, as JSON-ready data (names, numbers, lists, maps):

- ``detector``: the asset detector's residual models, their covariances and residual
  variances, its frozen scaler and its lagged inputs (:meth:`~transforms.detectors.asset.
  AssetDetector.export`);
- ``operating``: how the operating point moves (:class:`~transforms.whatif.operating.
  OperatingPoint`);
- ``health``: the health forecaster's settings and Holt state;
- ``fidelity``: the running fidelity, the residuals' level and trend, the health
  forecast's one-step error variance (:class:`~transforms.whatif.fidelity.Fidelity`);
- ``policy``: the setpoint, its nominal value and the guardrails a recommendation must
  pass; whether an alert is open;
- ``values``, ``ts_ms``: the last window's sensor means and end.

The twin's state records carry it (``learned``, every ``learned_every`` windows, as JSON);
:func:`from_states` brings the latest such document up to the newest state record of its
asset (lagged inputs, operating level and health trend replayed from the records' window
means and health indices; the models' weights are those of the document, at most
``learned_every`` windows old). The document is versioned (:data:`VERSION`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

VERSION = 1


class ModelError(ValueError):
    """A state or document a what-if cannot be asked of, with what to do about it."""


def snapshot(twin: Any) -> dict[str, Any]:
    """The learned models of ``twin`` (an :class:`~transforms.twin.AssetTwin` with the
    asset detector) after its last scored window."""
    from transforms.detectors.asset import AssetDetector

    det = twin.detector
    if not isinstance(det, AssetDetector) or getattr(twin, "operating", None) is None:
        raise ModelError(f"{twin.asset_id}: what-if needs the asset detector (kind 'asset'); "
                         f"this twin runs {type(det).__name__}")
    if twin.last_window is None:
        raise ModelError(f"{twin.asset_id}: the twin has not scored a window yet")
    end_ms, values = twin.last_window
    h, pol = twin.health, twin.policy
    name = pol.setpoint_name
    return {
        "version": VERSION,
        "asset_id": twin.asset_id,
        "asset_type": twin.asset_type,
        "ts_ms": int(end_ms),
        "window_s": twin.window_ms / 1000.0,
        "values": {s: float(v) for s, v in values.items()},
        "windows_seen": int(twin.windows_seen),
        "noise_z": {s: float(v) for s, v in twin.last_noise_z.items()},
        "anomaly_score": float(twin.last_score),
        "detector": det.export(),
        "operating": twin.operating.export(),
        "health": {
            "health": float(h.health), "excess": float(h.excess),
            "level": None if h.level is None else float(h.level), "trend": float(h.trend),
            "n": int(h._n), "alpha": h.alpha, "beta": h.beta,
            "failure_level": h.failure_level, "max_rul_s": h.max_rul_s,
            "healthy_z": h.healthy_z, "scale_z": h.scale_z, "smoothing": h.smoothing,
        },
        "fidelity": twin.fidelity.export(),
        "policy": {
            "setpoint_name": name,
            "setpoint": float(pol.setpoint),  # fraction of nominal
            "nominal": twin.nominal.get(name),
            "setpoint_min": pol.setpoint_min, "setpoint_max": pol.setpoint_max,
            "derate_step": pol.derate_step, "setpoint_interval_s": pol.setpoint_interval_s,
            "setpoint_changed_ms": pol.setpoint_changed_ms,
            "alert_open": bool(pol.alert_open),
            "dry_run": bool(pol.dry_run),
        },
    }


def dumps(doc: dict[str, Any]) -> str:
    """The document as compact JSON (floats round-trip exactly)."""
    return json.dumps(doc, separators=(",", ":"), allow_nan=False)


def loads(text: str | bytes | dict[str, Any]) -> dict[str, Any]:
    """A document from JSON (or a dict), checked for its version and parts."""
    doc = json.loads(text) if isinstance(text, str | bytes) else text
    if not isinstance(doc, dict):
        raise ModelError("a model document is a JSON object")
    if doc.get("version") != VERSION:
        raise ModelError(f"model document of version {doc.get('version')!r}; this "
                         f"twinstream reads version {VERSION}")
    missing = [k for k in ("asset_id", "asset_type", "ts_ms", "window_s", "values",
                           "detector", "operating", "health", "fidelity", "policy")
               if k not in doc]
    if missing:
        raise ModelError(f"model document lacks {', '.join(missing)}")
    return doc


def _epoch_ms(ts: Any) -> int:
    if hasattr(ts, "timestamp"):
        return round(ts.timestamp() * 1000)
    return int(ts)


def from_states(records: Iterable[dict[str, Any]], asset_id: str | None = None
                ) -> dict[str, dict[str, Any]]:
    """The what-if document of each asset (or of ``asset_id`` only) from twin state
    records (``twin/state.v1``, any order): the latest record with ``learned`` models, brought
    up to the asset's newest record. Assets without any model document are left out."""
    by_asset: dict[str, list[dict[str, Any]]] = {}
    for r in records:
        if asset_id is not None and r["asset_id"] != asset_id:
            continue
        by_asset.setdefault(r["asset_id"], []).append(r)
    out = {}
    for aid, recs in by_asset.items():
        recs.sort(key=lambda r: _epoch_ms(r["ts_ms"]))
        last_doc = max((i for i, r in enumerate(recs) if r.get("learned")), default=None)
        if last_doc is None:
            continue
        doc = loads(recs[last_doc]["learned"])
        out[aid] = advance(doc, recs[last_doc + 1:])
    return out


def advance(doc: dict[str, Any], later: list[dict[str, Any]]) -> dict[str, Any]:
    """``doc`` brought forward over the later state records of its asset, in order.

    Replayed exactly: the detector's lagged inputs and ambient, the operating level
    (restarted where a record's ``last_drift_ms`` is its own window), the health
    forecaster's Holt state (from each record's health index), the setpoint and the open
    alert. Not replayed: the models' weights and statistics (the records do not carry
    what they learned from).
    """
    if not later:
        return doc
    doc = json.loads(dumps(doc))  # a copy
    det, op, health, pol = doc["detector"], doc["operating"], doc["health"], doc["policy"]
    scale, alphas = det["scale"], det["lag_alphas"]
    rises = set(det["rises"])
    for r in later:
        values = dict(r["values"])
        ts = _epoch_ms(r["ts_ms"])
        amb_name = det["ambient"]
        ambient = None
        if amb_name and amb_name in values:
            old = det["ambient_avg"] if det["ambient_avg"] is not None else values[amb_name]
            ambient = (1 - det["ambient_alpha"]) * old + det["ambient_alpha"] * values[amb_name]
            det["ambient_avg"] = ambient
        for s in det["regressors"]:
            if s not in values or s not in scale:
                continue
            mean, sd = scale[s]
            v = values[s] - (ambient if ambient is not None and s in rises else 0.0)
            z = (v - mean) / sd if sd > 0 else 0.0
            prev = det["avg"].get(s) or [z] * len(alphas)
            det["avg"][s] = [(1 - a) * p + a * z for a, p in zip(alphas, prev)]
        for s, w in op.get("exo", {}).items():  # the weather's Holt level
            if s in values:
                ahead = w["level"] + w["slope"]
                w["level"] = ahead + op.get("weather_alpha", 0.2) * (values[s] - ahead)
                w["since_block"] = (w["since_block"] + 1) % w["block"]
        jump = r.get("last_drift_ms") is not None and _epoch_ms(r["last_drift_ms"]) == ts
        a = op["level_alpha"]
        for s in op["driven"] + op["exogenous"]:
            if s in values:
                if jump or s not in op["level"]:
                    op["level"][s] = values[s]
                else:
                    op["level"][s] += a * (values[s] - op["level"][s])
        hi = float(r["health_index"])
        if health["level"] is None:
            health["level"] = hi
        else:
            prev = health["level"]
            health["level"] = health["alpha"] * hi + (1 - health["alpha"]) * (
                prev + health["trend"])
            health["trend"] = (health["beta"] * (health["level"] - prev)
                               + (1 - health["beta"]) * health["trend"])
        health["health"] = hi
        health["n"] += 1
        pol["alert_open"] = bool(r["alert_open"])
        sp = (r.get("setpoints") or {}).get(pol["setpoint_name"])
        if sp is not None and pol.get("nominal"):
            pol["setpoint"] = sp / pol["nominal"]
        doc["values"], doc["ts_ms"] = values, ts
        doc["anomaly_score"] = float(r["anomaly_score"])
        doc["windows_seen"] = int(r["windows_seen"])
    return doc

"""Score a run's alerts against the simulator's ground truth.

An *alert* is an ``ALERT`` action. It is a true alert when it falls inside a fault episode
of its asset, from the fault's start to its failure time plus ``grace_ms`` (the last
windows before a failure close a little after it). An episode is *detected* when it has a
true alert before its failure; lead time is failure minus the first such alert. Every
other alert is a false alarm; a false alarm within ``regime_horizon_ms`` after a regime
change of the same asset is a *regime-change alert* (the twin paged someone for a load or
season shift).

>>> gt = {"config": {"assets": 1, "duration_s": 86400},
...       "fault_episodes": [{"asset_id": "a", "fault": "bearing_wear", "start_ms": 1000,
...                           "failure_ms": 9000}],
...       "regime_changes": [{"asset_id": "a", "kind": "load_step", "ts_ms": 2_000_000}]}
>>> acts = [{"asset_id": "a", "kind": "ALERT", "ts_ms": 5000},
...         {"asset_id": "a", "kind": "ALERT", "ts_ms": 2_100_000}]
>>> m = evaluate(gt, acts)
>>> m["recall"], m["precision"], m["median_lead_time_s"], m["regime_change_alerts"]
(1.0, 0.5, 4.0, 1)
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any


def evaluate(
    ground_truth: dict[str, Any],
    actions: list[dict[str, Any]],
    grace_ms: int = 300_000,
    regime_horizon_ms: int = 2 * 3600_000,
) -> dict[str, Any]:
    """Detection metrics of ``actions`` against ``ground_truth`` (see module doc)."""
    episodes = ground_truth.get("fault_episodes", [])
    regimes = ground_truth.get("regime_changes", [])
    cfg = ground_truth.get("config", {})
    alerts = sorted((a for a in actions if a["kind"] == "ALERT"), key=lambda a: a["ts_ms"])
    by_asset: dict[str, list[dict]] = defaultdict(list)
    for e in episodes:
        by_asset[e["asset_id"]].append(e)
    first_alert: dict[int, int] = {}
    true_alerts = 0
    false_alerts: list[dict[str, Any]] = []
    for a in alerts:
        hit = None
        for e in by_asset.get(a["asset_id"], []):
            if e["start_ms"] <= a["ts_ms"] <= e["failure_ms"] + grace_ms:
                hit = e
                break
        if hit is None:
            false_alerts.append(a)
            continue
        true_alerts += 1
        key = id(hit)
        if a["ts_ms"] <= hit["failure_ms"] and key not in first_alert:
            first_alert[key] = a["ts_ms"]
    leads = [(e["failure_ms"] - first_alert[id(e)]) / 1000 for e in episodes
             if id(e) in first_alert]
    regime_alerts = sum(
        1 for a in false_alerts
        if any(r["asset_id"] == a["asset_id"]
               and r["ts_ms"] <= a["ts_ms"] <= r["ts_ms"] + regime_horizon_ms
               for r in regimes))
    asset_days = max(cfg.get("assets", 1), 1) * cfg.get("duration_s", 86400) / 86400
    per_fault: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for e in episodes:
        per_fault[e["fault"]][0] += 1
        per_fault[e["fault"]][1] += id(e) in first_alert
    return {
        "fault_episodes": len(episodes),
        "detected_episodes": len(first_alert),
        "recall": round(len(first_alert) / len(episodes), 4) if episodes else None,
        "alerts": len(alerts),
        "true_alerts": true_alerts,
        "false_alarms": len(false_alerts),
        "precision": round(true_alerts / len(alerts), 4) if alerts else None,
        "false_alarms_per_asset_day": round(len(false_alerts) / asset_days, 4),
        "median_lead_time_s": statistics.median(leads) if leads else None,
        "min_lead_time_s": min(leads) if leads else None,
        "regime_changes": len(regimes),
        "regime_change_alerts": regime_alerts,
        "by_fault": {k: {"episodes": v[0], "detected": v[1]} for k, v in sorted(per_fault.items())},
        "missed": [
            {k: e[k] for k in ("asset_id", "fault", "start_ms", "failure_ms")}
            for e in episodes if id(e) not in first_alert
        ],
    }

"""Action policy: predictions in, actions out, with hysteresis, cooldown, dedup and guardrails.

* **Alert** when ``alarm_windows`` consecutive windows are anomalous; **cleared** after
  ``clear_windows`` consecutive normal ones (hysteresis). While open, no second alert
  (deduplication); after clearing, none for ``cooldown_s`` (cooldown).
* **Work order** once per alert episode, when health drops below ``work_order_health``
  or remaining useful life below ``work_order_rul_s``.
* **Setpoint**: while an alert is open and health is below ``derate_health``, derate the
  speed setpoint by ``derate_step`` (a fraction of nominal); never below
  ``setpoint_min`` or above ``setpoint_max`` (fractions of nominal), and at most one
  change per ``setpoint_interval_s`` (rate limit). Restored to nominal when cleared.
* ``dry_run``: actions are produced and marked ``dry_run`` (for trials of the policy).

Every action id is ``asset_id:ts_ms:KIND``, so re-running on the same data produces the
same ids and consumers can deduplicate.

>>> pol = ActionPolicy(alarm_windows=2, clear_windows=2)
>>> p = lambda t, a, h=0.9: {"asset_id": "p1", "window_end_ms": t, "is_anomaly": a,
...     "anomaly_score": 0.9999 if a else 0.1, "health_index": h, "rul_s": None}
>>> [a["kind"] for t, an in enumerate([1, 1, 1, 0, 0]) for a in pol.decide(p(t, bool(an)))]
['ALERT', 'ALERT_CLEARED']
"""

from __future__ import annotations

from typing import Any


class ActionPolicy:
    """Per-asset action policy with explicit, picklable state."""

    def __init__(
        self,
        alarm_windows: int = 3,
        clear_windows: int = 10,
        cooldown_s: float = 1800.0,
        work_order_health: float = 0.35,
        work_order_rul_s: float = 4 * 3600.0,
        derate_health: float = 0.2,
        derate_step: float = 0.05,
        setpoint_nominal: float = 1.0,
        setpoint_min: float = 0.8,
        setpoint_max: float = 1.05,
        setpoint_interval_s: float = 600.0,
        setpoint_name: str = "speed",
        dry_run: bool = False,
    ) -> None:
        if not setpoint_min <= setpoint_nominal <= setpoint_max:
            raise ValueError("need setpoint_min <= setpoint_nominal <= setpoint_max")
        if alarm_windows < 1 or clear_windows < 1:
            raise ValueError("alarm_windows and clear_windows must be >= 1")
        self.alarm_windows = alarm_windows
        self.clear_windows = clear_windows
        self.cooldown_s = cooldown_s
        self.work_order_health = work_order_health
        self.work_order_rul_s = work_order_rul_s
        self.derate_health = derate_health
        self.derate_step = derate_step
        self.setpoint_nominal = setpoint_nominal
        self.setpoint_min = setpoint_min
        self.setpoint_max = setpoint_max
        self.setpoint_interval_s = setpoint_interval_s
        self.setpoint_name = setpoint_name
        self.dry_run = dry_run
        # state
        self.alert_open = False
        self.hot = 0
        self.cold = 0
        self.cleared_ms: int | None = None
        self.work_order_sent = False
        self.setpoint = setpoint_nominal
        self.setpoint_changed_ms: int | None = None

    def _action(self, p: dict[str, Any], kind: str, severity: str, reason: str, **kw) -> dict:
        ts = int(p["window_end_ms"])
        return {
            "action_id": f"{p['asset_id']}:{ts}:{kind}",
            "asset_id": p["asset_id"],
            "kind": kind,
            "ts_ms": ts,
            "severity": severity,
            "reason": reason,
            "anomaly_score": float(p["anomaly_score"]),
            "health_index": float(p["health_index"]),
            "rul_s": p.get("rul_s"),
            "setpoint_name": kw.get("name"),
            "setpoint_value": kw.get("value"),
            "setpoint_previous": kw.get("previous"),
            "dry_run": self.dry_run,
        }

    def _set(self, p: dict, target: float, reason: str) -> dict | None:
        ts = int(p["window_end_ms"])
        target = min(self.setpoint_max, max(self.setpoint_min, target))
        if abs(target - self.setpoint) < 1e-12:
            return None
        if (self.setpoint_changed_ms is not None
                and ts - self.setpoint_changed_ms < self.setpoint_interval_s * 1000):
            return None
        step = self.derate_step
        target = min(self.setpoint + step, max(self.setpoint - step, target))
        previous, self.setpoint, self.setpoint_changed_ms = self.setpoint, target, ts
        return self._action(p, "SETPOINT", "warning", reason, name=self.setpoint_name,
                            value=target, previous=previous)

    def decide(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        """Actions for one prediction (in window order), updating the policy state."""
        ts = int(p["window_end_ms"])
        out: list[dict[str, Any]] = []
        contributors = ", ".join(p.get("contributors") or []) or "multiple features"
        if p["is_anomaly"]:
            self.hot, self.cold = self.hot + 1, 0
        else:
            self.hot, self.cold = 0, self.cold + 1
        if not self.alert_open:
            cooling = (self.cleared_ms is not None
                       and ts - self.cleared_ms < self.cooldown_s * 1000)
            if self.hot >= self.alarm_windows and not cooling:
                self.alert_open = True
                self.work_order_sent = False
                sev = "critical" if p["health_index"] < self.work_order_health else "warning"
                out.append(self._action(
                    p, "ALERT", sev,
                    f"{self.hot} anomalous windows in a row; unexplained: {contributors}"))
        elif self.cold >= self.clear_windows:
            self.alert_open = False
            self.cleared_ms = ts
            out.append(self._action(
                p, "ALERT_CLEARED", "info", f"{self.cold} normal windows in a row"))
            sp = self._set(p, self.setpoint_nominal, "condition back to normal: restore")
            if sp:
                out.append(sp)
        if self.alert_open:
            rul = p.get("rul_s")
            low_rul = rul is not None and rul < self.work_order_rul_s
            if not self.work_order_sent and (p["health_index"] < self.work_order_health
                                             or low_rul):
                self.work_order_sent = True
                why = (f"health {p['health_index']:.2f}"
                       + (f", remaining useful life {rul / 3600:.1f} h" if rul is not None
                          else ""))
                out.append(self._action(p, "WORK_ORDER", "critical",
                                        f"inspect {contributors}: {why}"))
            if p["health_index"] < self.derate_health:
                sp = self._set(p, self.setpoint - self.derate_step,
                               f"derate while degraded (health {p['health_index']:.2f})")
                if sp:
                    out.append(sp)
        return out

"""Recommended setpoints: the operating point that does the most within limits.

:func:`recommend` searches the setpoint (the twin policy's, ``speed`` by default) within
the policy's guardrails for the value that maximises an objective, the expected mean of
a sensor over the horizon (throughput: the setpoint itself, or ``flow``), subject to:

- **limits** on sensors: the upper edge of each one's 90 % interval stays at or below its
  limit over the horizon (``{"bearing_temp": 360.0}``);
- **remaining life**: the expected remaining useful life is at least ``min_rul_s`` (the
  time to the next planned maintenance);
- **no extrapolation**: the answer may not rest on inputs beyond what the asset has shown
  (the roll-forward's leverage and operating-point checks), unless allowed.

Each candidate is rolled forward (:func:`~transforms.whatif.rollforward.roll_forward`)
the way the asset would really be moved: a ramp that respects the guardrails (steps of
``derate_step`` of nominal, one per ``setpoint_interval_s``, within ``setpoint_min`` and
``setpoint_max``). The search is a grid at the policy's step, refined by 1 % of nominal
around the best. :func:`setpoint_action` turns the first step of the ramp into a
``SETPOINT`` action (``twin/action.v1``; a dry run unless asked otherwise) after
:func:`check_guardrails` has passed it; the Kafka binding signs it like every command.
"""

from __future__ import annotations

import math
from typing import Any

from transforms.whatif.model import ModelError
from transforms.whatif.scenario import Change, Scenario, Step

HARD_FLAGS = ("models", "operating point", "implausible")  # not the weather: the models'


class GuardrailError(ValueError):
    """A proposed setpoint the policy's guardrails refuse, with which one and why."""


def _policy(doc: dict[str, Any]) -> dict[str, Any]:
    """The policy's guardrails, with ``setpoint`` the fraction of nominal the asset runs
    at: the policy's own when it commands the asset, the measured one (to 1 %) when it
    runs in dry run (its setpoint is then what it would have commanded) or when the asset
    runs more than half a step away from it (a command refused, or not applied yet: a
    ramp starts where the asset is)."""
    pol = doc["policy"]
    if not pol.get("nominal"):
        raise ModelError(f"{doc['asset_id']}: no nominal {pol['setpoint_name']} learned yet "
                         f"(the warm-up's mean): cannot propose a setpoint")
    if pol["setpoint_name"] not in doc["values"]:
        raise ModelError(f"{doc['asset_id']}: its last window has no "
                         f"{pol['setpoint_name']}")
    measured = round(doc["values"][pol["setpoint_name"]] / pol["nominal"], 2)
    if pol.get("dry_run") or abs(measured - pol["setpoint"]) > pol["derate_step"] / 2:
        pol = {**pol, "setpoint": measured, "setpoint_changed_ms": None}
    return pol


def ramp(doc: dict[str, Any], target: float) -> list[tuple[float, float]]:
    """``(seconds from now, fraction of nominal)`` steps from the current setpoint to
    ``target`` as the guardrails allow: at most ``derate_step`` per step, one step per
    ``setpoint_interval_s``, the first once the last change is that old."""
    pol = _policy(doc)
    lo, hi = pol["setpoint_min"], pol["setpoint_max"]
    target = min(hi, max(lo, target))
    current = pol["setpoint"]
    interval = pol["setpoint_interval_s"]
    changed = pol.get("setpoint_changed_ms")
    first = 0.0 if changed is None else max(0.0, interval - (doc["ts_ms"] - changed) / 1000)
    steps, t, value = [], first, current
    while abs(target - value) > 1e-9:
        step = max(-pol["derate_step"], min(pol["derate_step"], target - value))
        value = round(value + step, 10)
        steps.append((t, value))
        t += interval
    return steps


def scenario_of(doc: dict[str, Any], steps: list[tuple[float, float]], horizon_s: float
                ) -> Scenario:
    """The what-if scenario of a ramp (absolute setpoint values in SI units)."""
    pol = _policy(doc)
    name, nominal = pol["setpoint_name"], pol["nominal"]
    out = []
    for k, (t, frac) in enumerate(steps):
        end = steps[k + 1][0] if k + 1 < len(steps) else None
        if t >= horizon_s:
            break
        out.append(Step({name: Change(name, frac * nominal, "absolute",
                                      f"{frac:.0%} of nominal")}, t, end))
    return Scenario(out, horizon_s)


def check_guardrails(doc: dict[str, Any], value_frac: float, at_s: float = 0.0) -> None:
    """Raise :class:`GuardrailError` unless moving the setpoint from its current value to
    ``value_frac`` (of nominal) ``at_s`` seconds from the state's time is within the
    policy's bounds, step and rate."""
    pol = _policy(doc)
    if not math.isfinite(value_frac):
        raise GuardrailError(f"not a finite setpoint: {value_frac!r}")
    if not pol["setpoint_min"] - 1e-9 <= value_frac <= pol["setpoint_max"] + 1e-9:
        raise GuardrailError(f"{value_frac:.3f} of nominal is outside the bounds "
                             f"[{pol['setpoint_min']}, {pol['setpoint_max']}]")
    if abs(value_frac - pol["setpoint"]) > pol["derate_step"] + 1e-9:
        raise GuardrailError(f"a step from {pol['setpoint']:.3f} to {value_frac:.3f} of "
                             f"nominal is larger than {pol['derate_step']} per change")
    changed = pol.get("setpoint_changed_ms")
    if changed is not None:
        since = (doc["ts_ms"] - changed) / 1000 + at_s
        if since < pol["setpoint_interval_s"] - 1e-6:
            raise GuardrailError(f"the setpoint changed {since:.0f} s before; the rate "
                                 f"limit is one change per {pol['setpoint_interval_s']:g} s")


def _evaluate(doc, frac, horizon_s, objective, limits, min_rul_s, allow_extrapolation):
    from transforms.whatif.rollforward import roll_forward

    steps = ramp(doc, frac)
    res = roll_forward(doc, scenario_of(doc, steps, horizon_s))
    path = res["scenario_path"]
    if objective not in path["sensors"]:
        raise ModelError(f"{doc['asset_id']}: no {objective} to maximise (predicted: "
                         f"{', '.join(path['sensors'])})")
    obj = sum(path["sensors"][objective]["mean"]) / len(res["times_s"])
    why = []
    for name, limit in limits.items():
        peak = max(path["sensors"][name]["hi"])
        if peak > limit:
            why.append(f"{name} up to {peak:.4g} > {limit:.4g}")
    rul = path["rul_s"]
    if min_rul_s is not None and rul is not None and rul < min_rul_s:
        why.append(f"RUL {rul / 3600:.1f} h < {min_rul_s / 3600:.1f} h")
    hard = sorted({r for r in path["extrapolation"]["reasons"] if r in HARD_FLAGS})
    if hard and not allow_extrapolation:
        why.append("extrapolates (" + ", ".join(hard) + ")")
    return {"fraction": round(frac, 6), "steps": steps, "objective": obj, "rul_s": rul,
            "extrapolates": bool(hard),
            "rul_lo_s": path["rul_lo_s"], "rul_hi_s": path["rul_hi_s"],
            "feasible": not why, "why": why,
            "peaks": {n: max(path["sensors"][n]["hi"]) for n in limits}}


def recommend(doc: dict[str, Any], *, objective: str | None = None,
              limits: dict[str, float] | None = None, min_rul_s: float | None = None,
              horizon_s: float = 6 * 3600.0, allow_extrapolation: bool = False
              ) -> dict[str, Any]:
    """The recommended setpoint for the asset of ``doc`` (module docs); JSON-ready.

    ``feasible`` says whether some setpoint meets every constraint; if none does, the
    recommendation is the one with the longest expected remaining life (a derating is the
    best that can be done) and ``why`` says what each candidate breaks.
    """
    pol = _policy(doc)
    name = pol["setpoint_name"]
    objective = objective or name
    limits = dict(limits or {})
    from transforms.catalog import sensor

    for n in [objective, *limits]:
        try:
            sensor(doc["asset_type"], n)
        except KeyError:
            raise ModelError(f"{doc['asset_id']} is a {doc['asset_type']}: it has no sensor "
                             f"{n!r}") from None
    lo, hi, step = pol["setpoint_min"], pol["setpoint_max"], pol["derate_step"]
    grid = sorted({round(min(hi, lo + k * step), 6)
                   for k in range(int(math.ceil((hi - lo) / step)) + 1)}
                  | {round(pol["setpoint"], 6)})
    seen: dict[float, dict[str, Any]] = {}

    def at(frac: float) -> dict[str, Any]:
        key = round(frac, 6)
        if key not in seen:
            seen[key] = _evaluate(doc, key, horizon_s, objective, limits, min_rul_s,
                                  allow_extrapolation)
        return seen[key]

    base = at(round(pol["setpoint"], 6))
    failed = base["rul_s"] == 0.0  # nothing to gain: the twin already counts it as failed
    if failed:
        seen[base["fraction"]] = {**base, "feasible": False,
                                  "why": ["health is at the failure level: maintain now"]}
    else:
        for frac in grid:
            at(frac)

    def best() -> dict[str, Any]:
        ok = [c for c in seen.values() if c["feasible"]]
        if ok:
            return max(ok, key=lambda c: (c["objective"], c["fraction"]))
        # none meets every constraint: the longest expected life among the answers that
        # do not extrapolate (an extrapolated life is no reason to move); where the
        # setpoint does not change it (no life law), the current one: no change for nothing
        inf = float("inf")
        current = round(pol["setpoint"], 6)
        pool = [c for c in seen.values() if not c["extrapolates"] or allow_extrapolation
                or c["fraction"] == current]
        return max(pool, key=lambda c: (inf if c["rul_s"] is None else c["rul_s"],
                                        c["fraction"] == current, c["objective"]))

    if not failed:
        first = best()
        for k in range(-4, 5):  # refine by 1 % of nominal around the grid's best
            frac = round(first["fraction"] + 0.01 * k, 6)
            if lo - 1e-9 <= frac <= hi + 1e-9:
                at(frac)
    chosen = best()
    nominal = pol["nominal"]
    cost = 1.0 - chosen["objective"] / base["objective"] if base["objective"] else 0.0
    gain = None  # also when the recommended setpoint shows no end of life at all
    if base["rul_s"] and chosen["rul_s"]:
        gain = chosen["rul_s"] / base["rul_s"]
    text = describe(name, pol["setpoint"], chosen["fraction"], base["rul_s"],
                    chosen["rul_s"], cost, objective)
    others = [c for c in seen.values() if c is not base]
    if not chosen["feasible"] and others and all(c["extrapolates"] for c in others):
        text += (f" (every other {name} would be an extrapolation: the twin has not seen "
                 f"this asset run there)")
    elif not chosen["feasible"] and not failed:
        text += " (no setpoint meets every constraint: the longest-lived one)"
    return {
        "asset_id": doc["asset_id"], "asset_type": doc["asset_type"], "from_ms": doc["ts_ms"],
        "setpoint_name": name, "nominal": nominal, "objective": objective,
        "limits": limits, "min_rul_s": min_rul_s, "horizon_s": horizon_s,
        "current_fraction": pol["setpoint"], "fraction": chosen["fraction"],
        "value": chosen["fraction"] * nominal, "feasible": chosen["feasible"],
        "why": chosen["why"], "steps": chosen["steps"],
        "baseline": {k: base[k] for k in ("objective", "rul_s", "rul_lo_s", "rul_hi_s",
                                          "peaks")},
        "recommended": {k: chosen[k] for k in ("objective", "rul_s", "rul_lo_s", "rul_hi_s",
                                               "peaks")},
        "objective_cost": cost, "rul_gain": gain,
        "text": text,
        "candidates": [{k: c[k] for k in ("fraction", "objective", "rul_s", "feasible", "why")}
                       for c in sorted(seen.values(), key=lambda c: c["fraction"])],
    }


def _h(rul: float | None) -> str:
    return "no end in sight" if rul is None else f"{rul / 3600:.1f} h"


def describe(name: str, current: float, frac: float, rul0: float | None, rul1: float | None,
             cost: float, objective: str) -> str:
    """``"derate to 85 % speed: RUL 9.0 h -> 31.0 h, 15 % less speed"``."""
    if abs(frac - current) < 1e-9:
        return f"keep {name} at {frac:.0%}: RUL {_h(rul0)}"
    verb = "derate" if frac < current else "raise"
    text = f"{verb} to {frac:.0%} {name}: RUL {_h(rul0)} -> {_h(rul1)}"
    if cost > 0.0005:
        text += f", {cost:.0%} less {objective}"
    elif cost < -0.0005:
        text += f", {-cost:.0%} more {objective}"
    return text


def setpoint_action(doc: dict[str, Any], rec: dict[str, Any], dry_run: bool = True
                    ) -> dict[str, Any] | None:
    """The recommendation's first step as a ``SETPOINT`` action (``twin/action.v1``),
    checked against the guardrails as of now (:class:`GuardrailError` if the rate limit
    wants it later); None when it changes nothing. Its time is one
    millisecond after the state's window end: its id and sequence then differ from any
    decision of the twin for that window and stay below its next one."""
    if not rec["steps"]:
        return None
    _, frac = rec["steps"][0]
    check_guardrails(doc, frac)  # a command applies when it arrives: now
    pol = _policy(doc)
    ts = int(doc["ts_ms"]) + 1
    nominal = pol["nominal"]
    health = doc["health"]["health"]
    return {
        "action_id": f"{doc['asset_id']}:{ts}:SETPOINT", "asset_id": doc["asset_id"],
        "kind": "SETPOINT", "ts_ms": ts, "severity": "warning",
        "reason": f"what-if recommendation: {rec['text']}"
                  + (f" (first of {len(rec['steps'])} steps)" if len(rec["steps"]) > 1 else ""),
        "anomaly_score": float(doc.get("anomaly_score", 0.0)), "health_index": float(health),
        "rul_s": rec["baseline"]["rul_s"], "setpoint_name": pol["setpoint_name"],
        "setpoint_value": frac * nominal, "setpoint_previous": pol["setpoint"] * nominal,
        "dry_run": bool(dry_run),
    }

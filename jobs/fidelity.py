"""``twin bench fidelity``: the twin as a simulator of its asset, measured against the asset.

The fleet simulator is the assets' ground truth, so the twin's what-if answers can be
checked: run a seeded fleet through the twins (in this process, the same transforms the
pipelines run), stop at a question time, take each twin's state, ask it what-if questions
(speed changes of -15, -10, -5 and +5 %, base-load changes of -0.2, -0.1, +0.1 and +0.2 of
rated, and no change), then make the same changes to the simulated asset from that time
on (:meth:`~transforms.simulator.fleet.Fleet.rerun`: the same seed, so the same load
wander, weather, fault and noise) and compare, at 15 min, 1 h and 6 h:

- the error of each predicted condition sensor's window mean, in its unit and relative
  (to the value; a temperature to its rise over ambient, since 3 K is 1 % of 300 K but
  12 % of a 25 K rise);
- whether the truth fell inside the 90 % prediction interval.

Questions are asked of *healthy* assets (no fault from 30 min before the question to the
horizon; at 4 h and 5 h of event time) and of assets with a *developing fault* (half way
from its start to its failure, horizons after the failure left out); both are reported,
with the share of answers the twin flagged as extrapolation. The fleet runs without
regime changes (an unplanned load step in the horizon is no what-if), with its usual
transport defects.

**Commissioning step test.** A twin learns how its asset responds to speed only if the
speed has varied. The fleet's assets run at one speed, so by default each runs a speed
step test during its first hour (10-minute steps at 0.85, 1.1, 0.9, 1.05, 1.1 and 1.0 of
nominal, averaging 1.0), as model-predictive-control deployments do before their models
are trusted. ``--no-step-test`` measures the twin without it: speed questions are then
extrapolations, and reported as such.
"""

from __future__ import annotations

import copy
import statistics
import time
from collections import defaultdict
from typing import Any

from transforms.simulator.physics import LOAD_SENSOR, WEAR_LAW_FAULTS, load_reading

HORIZONS = {"15m": 900, "1h": 3600, "6h": 21_600}
SPEED_CHANGES = (-0.15, -0.10, -0.05, 0.05)
LOAD_CHANGES = (-0.2, -0.1, 0.1, 0.2)
STEP_TEST = ((0, 0.85), (10, 1.1), (20, 0.9), (30, 1.05), (40, 1.1), (50, 1.0))  # minute, frac
HEALTHY_AT_H = (4.0, 5.0)
FLEET_HOURS = 12.0


def step_test_setpoints(start_ms: int) -> list[tuple[int, float]]:
    return [(start_ms + minute * 60_000, frac) for minute, frac in STEP_TEST]


def make_fleet(seed: int, assets: int, step_test: bool, wear_law: bool = False,
               hours: float = FLEET_HOURS, fault_fraction: float = 0.5):
    from transforms.simulator import Fleet, FleetConfig

    cfg = FleetConfig(assets=assets, duration_s=hours * 3600, seed=seed, regime_fraction=0.0,
                      fault_fraction=fault_fraction, wear_law=wear_law)
    fleet = Fleet(cfg)
    if step_test:
        for a in fleet.assets:
            for at_ms, frac in step_test_setpoints(cfg.start_ms):
                fleet.apply_setpoint(a.asset_id, "speed", frac * a.nominal_speed, at_ms)
    return fleet


def twins_at(fleet, times_ms: list[int], twin_kwargs: dict[str, Any] | None = None
             ) -> dict[int, dict[str, Any]]:
    """The fleet's twins as they stand at each of ``times_ms``: every message of an event
    time before it taken (in arrival order), every window up to it closed. The twins run
    with their policy in dry run (the simulated assets get no commands)."""
    from transforms.errors import InvalidReading
    from transforms.normalize import normalize_message
    from transforms.twin import AssetTwin

    kwargs = {"policy": {"dry_run": True}, **(twin_kwargs or {})}
    clock = fleet.config.end_ms
    messages = sorted(fleet.messages(), key=lambda m: m.arrival_ms)
    done = [False] * len(messages)
    twins: dict[str, AssetTwin] = {}
    out = {}
    for t in sorted(set(times_ms)):
        for i, m in enumerate(messages):
            if done[i] or m.event_ms >= t:
                continue
            done[i] = True
            try:
                r = normalize_message(m.value, now_ms=m.arrival_ms, clock_ms=clock)
            except InvalidReading:
                continue
            if r["ts_ms"] >= t:
                continue
            twin = twins.get(r["asset_id"])
            if twin is None:
                twin = twins[r["asset_id"]] = AssetTwin(r["asset_id"], r["asset_type"],
                                                        **kwargs)
            twin.add(r)
        snap = copy.deepcopy(twins)
        for twin in snap.values():
            twin.flush()
        out[t] = snap
    return out


def _questions(spec) -> list[tuple[str, float, dict[str, Any] | None]]:
    """``(kind, size, scenario document)`` of the bench's what-if questions for one asset."""
    qs: list[tuple[str, float, dict[str, Any] | None]] = [("none", 0.0, None)]
    for c in SPEED_CHANGES:
        qs.append(("speed", c, {"steps": [{"set": {"speed": f"{c * 100:+g}%"}}]}))
    for d in LOAD_CHANGES:
        if 0.1 <= spec.load + d <= 0.95:
            value = load_reading(spec.asset_type, spec.load + d)
            qs.append(("load", d, {"steps": [{"set": {LOAD_SENSOR[spec.asset_type]: value}}]}))
    return qs


def _truth_at(truth: dict[str, Any], window_start: int) -> dict[str, float] | None:
    import numpy as np

    starts = truth["window_start_ms"]
    i = int(np.searchsorted(starts, window_start))
    if i >= len(starts) or starts[i] != window_start:
        return None
    return {s: float(v[i]) for s, v in truth["values"].items()}


def measure(fleet, twins_by_time: dict[int, dict[str, Any]], questions_at: dict[str, list],
            step_test: bool) -> list[dict[str, Any]]:
    """One row per (question, horizon, condition sensor): prediction, interval, truth."""
    from transforms.catalog import sensor as catalog_sensor
    from transforms.whatif import ModelError, whatif
    from transforms.whatif.rollforward import value_at

    cfg = fleet.config
    base_setpoints = step_test_setpoints(cfg.start_ms) if step_test else []
    rows = []
    for asset_id, items in questions_at.items():
        spec = next(a for a in fleet.assets if a.asset_id == asset_id)
        for t_ms, group in items:
            twin = twins_by_time[t_ms].get(asset_id)
            if twin is None:
                continue
            for kind, size, doc in _questions(spec):
                try:
                    res = whatif(twin, doc)
                except ModelError:
                    continue
                setpoints = list(base_setpoints)
                loads = []
                if kind == "speed":
                    setpoints.append((t_ms, 1.0 + size))
                elif kind == "load":
                    loads.append((t_ms, size))
                truth = fleet.rerun(asset_id, setpoints, loads,
                                    until_ms=t_ms + max(HORIZONS.values()) * 1000 + 60_000)
                for hname, h_s in HORIZONS.items():
                    end = t_ms + h_s * 1000
                    if group == "faulty":
                        f = fleet.scenario.faults[asset_id]
                        if end > f.failure_ms:
                            continue
                    true = _truth_at(truth, end - int(res["window_s"] * 1000))
                    if true is None:
                        continue
                    k = min(range(len(res["times_s"])),
                            key=lambda j: abs(res["times_s"][j] - h_s))
                    flagged = res["scenario_path"]["extrapolating_at"][k]
                    for cs in res["condition_sensors"]:
                        p = value_at(res, "scenario_path", cs, h_s)
                        y = true[cs]
                        unit = catalog_sensor(spec.asset_type, cs).unit
                        denom = y - true["ambient_temp"] if unit == "kelvin" else y
                        rows.append({
                            "seed": cfg.seed, "asset_id": asset_id, "t_ms": t_ms,
                            "group": group, "kind": kind, "size": size, "horizon": hname,
                            "sensor": cs, "unit": unit, "predicted": p["mean"],
                            "lo": p["lo"], "hi": p["hi"], "truth": y,
                            "error": p["mean"] - y,
                            "relative_error": abs(p["mean"] - y) / max(abs(denom), 1e-12),
                            "inside_90": p["lo"] <= y <= p["hi"],
                            "extrapolating": flagged,
                            "fault": (fleet.scenario.faults[asset_id].fault
                                      if group == "faulty" else None),
                            "alert_open": res["fault"] is not None,
                        })
    return rows


def plan_questions(fleet) -> dict[str, list[tuple[int, str]]]:
    """For each asset, ``(question time, group)``: healthy at 4 h and 5 h where no fault
    is near, and half way into a developing fault."""
    cfg = fleet.config
    out: dict[str, list[tuple[int, str]]] = defaultdict(list)
    horizon_ms = max(HORIZONS.values()) * 1000
    for a in fleet.assets:
        f = fleet.scenario.faults.get(a.asset_id)
        for h in HEALTHY_AT_H:
            t = cfg.start_ms + int(h * 3_600_000)
            if t + horizon_ms > cfg.end_ms:
                continue
            if f is None or not (f.start_ms - 1_800_000 < t + horizon_ms and f.repaired_ms > t):
                out[a.asset_id].append((t, "healthy"))
        if f is not None:
            t = f.start_ms + (f.failure_ms - f.start_ms) // 2
            t -= t % 60_000
            if t >= cfg.start_ms + 2 * 3_600_000:
                out[a.asset_id].append((t, "faulty"))
    return out


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The bench's figures: per group and horizon (``healthy_1h``, ...), the median
    relative error and the 90 % interval's coverage, with breakdowns."""

    def block(rs: list[dict[str, Any]]) -> dict[str, Any]:
        if not rs:
            return {"n": 0, "median_relative_error": None, "coverage_90": None}
        out = {"n": len(rs),
               "median_relative_error": round(statistics.median(
                   r["relative_error"] for r in rs), 4),
               "coverage_90": round(sum(r["inside_90"] for r in rs) / len(rs), 3),
               "extrapolated_share": round(sum(r["extrapolating"] for r in rs) / len(rs), 3)}
        inside = [r for r in rs if not r["extrapolating"]]
        if inside and len(inside) < len(rs):
            out["not_extrapolated"] = {
                "n": len(inside),
                "median_relative_error": round(statistics.median(
                    r["relative_error"] for r in inside), 4),
                "coverage_90": round(sum(r["inside_90"] for r in inside) / len(inside), 3)}
        return out

    figures: dict[str, Any] = {}
    for group in ("healthy", "faulty"):
        for h in HORIZONS:
            rs = [r for r in rows if r["group"] == group and r["horizon"] == h]
            b = block(rs)
            if rs:
                b["by_change"] = {k: block([r for r in rs if r["kind"] == k])
                                  for k in ("none", "speed", "load")}
                sensors = sorted({(r["sensor"], r["unit"]) for r in rs})
                b["by_sensor"] = {}
                for s, u in sensors:
                    x = [r for r in rs if r["sensor"] == s]
                    mae = statistics.median(abs(r["error"]) for r in x)
                    b["by_sensor"][s] = {**block(x), "unit": u,
                                         "median_abs_error": float(f"{mae:.4g}")}
            figures[f"{group}_{h}"] = b
    return figures


def run_fidelity(seeds: list[int], assets: int = 12, step_test: bool = True,
                 progress=None) -> dict[str, Any]:
    """The whole bench: every seed's fleet, questions, truths; the figures and rows."""
    t0 = time.perf_counter()
    rows: list[dict[str, Any]] = []
    questions = 0
    for seed in seeds:
        fleet = make_fleet(seed, assets, step_test)
        plan = plan_questions(fleet)
        times = sorted({t for items in plan.values() for t, _ in items})
        twins = twins_at(fleet, times)
        new = measure(fleet, twins, plan, step_test)
        rows.extend(new)
        questions += sum(len(items) for items in plan.values())
        if progress:
            progress(f"seed {seed}: {len(new)} comparisons")
    figures = summarize(rows)
    figures["questions"] = questions
    figures["comparisons"] = len(rows)
    figures["elapsed_s"] = round(time.perf_counter() - t0, 1)
    return {"figures": figures, "rows": rows}


def print_fidelity(figures: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="what-if fidelity against the simulator (condition sensors)")
    for col in ("assets", "horizon", "n", "median rel. error", "90 % coverage",
                "extrapolated", "speed changes", "load changes", "no change"):
        table.add_column(col, justify="right" if col not in ("assets",) else "left")
    for group in ("healthy", "faulty"):
        for h in HORIZONS:
            b = figures.get(f"{group}_{h}") or {}
            if not b.get("n"):
                continue
            by = b.get("by_change", {})

            def cell(k: str, by=by) -> str:
                x = by.get(k) or {}
                if not x.get("n"):
                    return "-"
                return f"{x['median_relative_error']:.1%} / {x['coverage_90']:.0%}"

            table.add_row(group, h, str(b["n"]), f"{b['median_relative_error']:.1%}",
                          f"{b['coverage_90']:.0%}", f"{b['extrapolated_share']:.0%}",
                          cell("speed"), cell("load"), cell("none"))
    console = Console()
    console.print(table)
    console.print("cells of the last three columns: median relative error / 90 % coverage; "
                  "relative to the value, a temperature to its rise over ambient",
                  highlight=False)
    sensors = Table(title="healthy, 1 h, per sensor")
    for col in ("sensor", "unit", "n", "median abs. error", "median rel. error", "coverage"):
        sensors.add_column(col)
    for s, x in (figures.get("healthy_1h", {}).get("by_sensor") or {}).items():
        sensors.add_row(s, x["unit"], str(x["n"]), f"{x['median_abs_error']:.4g}",
                        f"{x['median_relative_error']:.1%}", f"{x['coverage_90']:.0%}")
    console.print(sensors)


# -- recommendations against the simulator ---------------------------------------------------

LIFE_FACTOR = 2.0  # the maintenance slot asked for: this many times the expected life
HORIZON_PAST_END_H = 24.0  # how long a rerun may run past the fleet's end to see a failure


def throughput(asset_type: str, values: dict[str, Any]):
    """What an asset delivers per window: a pump's flow; a motor's speed (the rate of the
    machine it drives)."""
    if asset_type == "pump":
        return values["flow"]
    return values["speed"]


def run_optimize(seeds: list[int], assets: int = 12, step_test: bool = True,
                 life_factor: float = LIFE_FACTOR, progress=None) -> dict[str, Any]:
    """For every fault of wear-law fleets: at the twin's work order (the policy's call
    for maintenance), ask :func:`~transforms.whatif.optimize.recommend` for the fastest
    setpoint that keeps the asset running ``life_factor`` times as long as the twin
    expects it to now (the next maintenance slot; the longest-lived allowed setpoint if
    none does), apply its ramp to the simulated asset and measure the time to failure
    gained and the throughput it cost."""
    import numpy as np

    from pipelines.local import run_messages
    from transforms.whatif import ModelError, document
    from transforms.whatif.optimize import recommend

    t0 = time.perf_counter()
    cases = []
    for seed in seeds:
        fleet = make_fleet(seed, assets, step_test, wear_law=True, fault_fraction=0.7)
        msgs = [(m.topic, m.key, m.value, m.arrival_ms) for m in fleet.messages()]
        outputs, _ = run_messages(msgs, {"policy": {"dry_run": True}},
                                  clock_ms=fleet.config.end_ms)
        orders = {}
        for a in outputs.get("action", []):
            f = fleet.scenario.faults.get(a["asset_id"])
            if (a["kind"] == "WORK_ORDER" and f is not None and a["asset_id"] not in orders
                    and f.start_ms <= a["ts_ms"] < f.failure_ms):
                orders[a["asset_id"]] = int(a["ts_ms"])
        twins = twins_at(fleet, list(orders.values())) if orders else {}
        base_sp = step_test_setpoints(fleet.config.start_ms) if step_test else []
        for asset_id, t_ms in sorted(orders.items()):
            f = fleet.scenario.faults[asset_id]
            spec = next(a for a in fleet.assets if a.asset_id == asset_id)
            twin = twins[t_ms].get(asset_id)
            case = {"seed": seed, "asset_id": asset_id, "fault": f.fault, "t_ms": t_ms,
                    "true_ttf_s": (f.failure_ms - t_ms) / 1000}
            try:
                doc = document(twin)
                probe = recommend(doc, horizon_s=3600)  # the twin's own expectation now
                if probe["baseline"]["rul_s"] is None:
                    cases.append({**case, "error": "no remaining-life trend at the work "
                                                   "order"})
                    continue
                rec = recommend(doc, min_rul_s=life_factor * probe["baseline"]["rul_s"])
            except ModelError as exc:
                cases.append({**case, "error": str(exc)})
                continue
            sched = [(t_ms + int(at_s * 1000), frac) for at_s, frac in rec["steps"]]
            until = fleet.config.end_ms + int(HORIZON_PAST_END_H * 3_600_000)
            base = fleet.rerun(asset_id, base_sp, until_ms=until)
            under = fleet.rerun(asset_id, base_sp + sched, until_ms=until)
            law = f.fault in WEAR_LAW_FAULTS  # others fail at their planned time, whatever
            ttf_base = (((base["failed_ms"] if law else None) or f.failure_ms) - t_ms) / 1000
            failed = under["failed_ms"] if law else f.failure_ms
            ttf_rec = None if failed is None else (failed - t_ms) / 1000
            span = (base["window_start_ms"] >= t_ms) & (
                base["window_start_ms"] < t_ms + ttf_base * 1000)
            span_u = (under["window_start_ms"] >= t_ms) & (
                under["window_start_ms"] < t_ms + ttf_base * 1000)
            tp0 = float(np.mean(throughput(spec.asset_type, {k: v[span] for k, v in
                                                              base["values"].items()})))
            tp1 = float(np.mean(throughput(spec.asset_type, {k: v[span_u] for k, v in
                                                              under["values"].items()})))
            cases.append({**case, "fraction": rec["fraction"], "feasible": rec["feasible"],
                          "text": rec["text"], "predicted_rul_s": rec["baseline"]["rul_s"],
                          "predicted_rul_rec_s": rec["recommended"]["rul_s"],
                          "predicted_gain": rec["rul_gain"],
                          "ttf_base_s": ttf_base, "ttf_rec_s": ttf_rec,
                          "survived_run": failed is None,
                          "gain": None if ttf_rec is None else ttf_rec / ttf_base,
                          "throughput_cost": 1 - tp1 / tp0 if tp0 else None})
        if progress:
            progress(f"seed {seed}: {len(orders)} work orders")
    return {"figures": summarize_optimize(cases, time.perf_counter() - t0), "cases": cases}


def summarize_optimize(cases: list[dict[str, Any]], elapsed_s: float) -> dict[str, Any]:
    done = [c for c in cases if "error" not in c]
    derated = [c for c in done if c["fraction"] < 1.0 - 1e-9]
    law = [c for c in done if c["fault"] in ("bearing_wear", "winding_insulation")]

    def med(xs):
        xs = [x for x in xs if x is not None]
        return round(statistics.median(xs), 3) if xs else None

    def gains(cs):
        # a recommendation the simulated run ended before its failure counts at the run's
        # end (a lower bound of the gain)
        return [c["gain"] if c["gain"] is not None else None for c in cs]

    by_fault = {}
    for fault in sorted({c["fault"] for c in done}):
        cs = [c for c in done if c["fault"] == fault]
        by_fault[fault] = {"n": len(cs), "median_gain": med(gains(cs)),
                           "median_throughput_cost": med(c["throughput_cost"] for c in cs),
                           "median_fraction": med(c["fraction"] for c in cs)}
    return {
        "cases": len(cases), "errors": len(cases) - len(done), "derated": len(derated),
        "median_gain": med(gains(done)),
        "median_throughput_cost": med(c["throughput_cost"] for c in done),
        "wear_faults": {"n": len(law), "median_gain": med(gains(law)),
                        "median_throughput_cost": med(c["throughput_cost"] for c in law),
                        "median_predicted_gain": med(c["predicted_gain"] for c in law
                                                     )},
        "by_fault": by_fault,
        "target_met": bool(law) and (med(gains(law)) or 0) >= 2.0
        and (med(c["throughput_cost"] for c in law) or 1) <= 0.15,
        "life_factor": LIFE_FACTOR,
        "elapsed_s": round(elapsed_s, 1),
    }


def print_optimize(figures: dict[str, Any], cases: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="recommended setpoints on faulty simulated assets (wear law on)")
    for col in ("asset", "fault", "recommendation", "twin: RUL now -> then",
                "simulator: time to failure", "gain", "throughput cost"):
        table.add_column(col)
    for c in cases:
        if "error" in c:
            table.add_row(c["asset_id"], c["fault"], f"- ({c['error']})", "", "", "", "")
            continue

        def h(s):
            return "beyond the run" if s is None else f"{s / 3600:.1f} h"

        table.add_row(c["asset_id"], c["fault"], c["text"],
                      f"{h(c['predicted_rul_s'])} -> {h(c['predicted_rul_rec_s'])}",
                      f"{h(c['ttf_base_s'])} -> {h(c['ttf_rec_s'])}",
                      "-" if c["gain"] is None else f"{c['gain']:.2f}x",
                      "-" if c["throughput_cost"] is None else f"{c['throughput_cost']:.0%}")
    console = Console()
    console.print(table)
    w = figures["wear_faults"]
    console.print(f"wear-out faults (a life law applies): median gain {w['median_gain']}x at "
                  f"{w['median_throughput_cost']} throughput cost over {w['n']} cases; all "
                  f"faults: {figures['median_gain']}x at {figures['median_throughput_cost']}",
                  highlight=False)

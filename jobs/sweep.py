"""``twin sweep``: score the twin on many seeded fleets, in-process (no engine).

How the simulator's many-seed detection figures are made (``twin bench sweep``), and the
quick loop for working on the detector: each seed's fleet goes through
:func:`pipelines.local.run_messages` (the same transforms the pipelines run) and is scored
with :func:`transforms.evaluation.evaluate`.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from jobs.options import add_twin_args, parse_duration, twin_kwargs_from

START_MS = 1_795_800_000_000


def parse_seeds(text: str) -> list[int]:
    """``"1-5,9"`` -> ``[1, 2, 3, 4, 5, 9]``.

    >>> parse_seeds("1-3,7")
    [1, 2, 3, 7]
    """
    seeds: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            seeds.extend(range(int(lo), int(hi or lo) + 1))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not a seed list: {text!r} (try 1-15 or 1,4,9)") \
            from exc
    return seeds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--seeds", type=parse_seeds, default="1-15",
                        help="seeds to simulate, e.g. 1-15 or 1,4,9 (default 1-15)")
    parser.add_argument("--assets", type=int, default=12, help="fleet size (default 12)")
    parser.add_argument("--duration", type=parse_duration, default="6h",
                        help="simulated event time per fleet (default 6h)")
    add_twin_args(parser)


def sweep(args: argparse.Namespace, on_seed=None) -> dict[str, Any]:
    """Per-seed metrics and their totals."""
    from pipelines.local import run_messages
    from transforms.evaluation import evaluate
    from transforms.simulator import Fleet, FleetConfig

    per_seed = []
    totals = {"fault_episodes": 0, "detected_episodes": 0, "alerts": 0, "true_alerts": 0,
              "false_alarms": 0, "regime_changes": 0, "regime_change_alerts": 0}
    leads: list[float] = []
    t0 = time.perf_counter()
    for seed in args.seeds:
        fleet = Fleet(FleetConfig(assets=args.assets, duration_s=args.duration, seed=seed,
                                  start_ms=START_MS))
        messages = ((m.topic, m.key, m.value, m.arrival_ms) for m in fleet.messages())
        outputs, _ = run_messages(messages, twin_kwargs_from(args))
        m = evaluate(fleet.ground_truth(), outputs.get("action", []))
        m["seed"] = seed
        per_seed.append(m)
        for k in totals:
            totals[k] += m.get(k) or 0
        if m["median_lead_time_s"] is not None:
            leads.append(m["median_lead_time_s"])
        if on_seed:
            on_seed(m)
    asset_days = len(args.seeds) * args.assets * args.duration / 86400
    totals.update({
        "seeds": len(args.seeds),
        "recall": round(totals["detected_episodes"] / totals["fault_episodes"], 4)
        if totals["fault_episodes"] else None,
        "precision": round(totals["true_alerts"] / totals["alerts"], 4)
        if totals["alerts"] else None,
        "false_alarms_per_asset_day": round(totals["false_alarms"] / asset_days, 4),
        "median_of_median_lead_time_s": sorted(leads)[len(leads) // 2] if leads else None,
        "elapsed_s": round(time.perf_counter() - t0, 1),
    })
    return {"per_seed": per_seed, "total": totals}

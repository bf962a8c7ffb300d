"""``twin run``: the fleet simulator through the whole twin on Apache Beam.

Runbook
-------
``twin run`` (or ``make run``) simulates ``--assets`` assets for ``--duration`` of event
time, pushes every vendor message through normalization, per-asset event-time windows,
the drift-aware detector, health forecasting and the action policy, and writes::

    OUT/predictions.{avro,parquet}   one per asset and window
    OUT/actions.{avro,parquet}       alerts, clears, work orders, setpoint commands
    OUT/state.{avro,parquet}         twin state after every window (changelog)
    OUT/features.{avro,parquet}      window features
    OUT/late.{avro,parquet}          readings that arrived after their window closed
    OUT/dead_letters.{avro,parquet}  rejected input: reason, detail, original bytes
    OUT/ground_truth.json            the simulator's faults and regime changes
    OUT/summary.json                 counts (readings_in == readings_valid + dead_letters)

It runs on Beam's DirectRunner by default. Flags the job does not know are Beam pipeline
options, so ``twin run -- --runner=FlinkRunner --flink_master=...`` or Dataflow options
pass straight through. ``twin evaluate OUT`` scores the run against the ground truth.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from jobs.options import add_twin_args, parse_duration, twin_kwargs_from
from pipelines import progress
from pipelines.beam.pipeline import ProcessMessages, WriteOutputs
from pipelines.beam.sources import ReadSimulator
from transforms.simulator import Fleet, FleetConfig

COUNTERS = (
    "readings_in", "readings_valid", "dead_letters", "late_readings", "duplicate_readings",
    "windows", "predictions", "anomalies", "drift_events",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--assets", type=int, default=24, help="fleet size (default 24)")
    parser.add_argument("--duration", type=parse_duration, default="12h",
                        help="simulated event time, e.g. 90m, 6h, 2d (default 12h)")
    parser.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    parser.add_argument("--interval", type=float, default=5.0,
                        help="seconds between samples of one asset (default 5)")
    parser.add_argument("--malformed-rate", type=float, default=0.005,
                        help="share of vendor messages the simulator breaks (default 0.005)")
    parser.add_argument("--start-ms", type=int, default=None,
                        help="event time of the first sample (default: the run ends now)")
    parser.add_argument("--out", default="out/run", help="output folder (default out/run)")
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    add_twin_args(parser)


def _metrics(result) -> dict[str, Any]:
    counts: dict[str, Any] = dict.fromkeys(COUNTERS, 0)
    actions: dict[str, int] = {}
    reasons: dict[str, int] = {}
    for c in result.metrics().query()["counters"]:
        ns, name, value = c.key.metric.namespace, c.key.metric.name, c.committed or 0
        if ns == "twin" and name in counts:
            counts[name] += value
        elif ns == "twin.actions":
            actions[name] = actions.get(name, 0) + value
        elif ns == "twin.dead_letters":
            reasons[name] = reasons.get(name, 0) + value
    counts["actions"] = dict(sorted(actions.items()))
    counts["dead_letter_reasons"] = dict(sorted(reasons.items()))
    return counts


def _with_progress(total: int, fn, enabled: bool):
    """Run ``fn()`` while showing progress counters of the in-process pipeline."""
    if not enabled:
        return fn()
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    done = threading.Event()
    result: dict[str, Any] = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as exc:  # re-raised in the caller's thread
            result["error"] = exc
        finally:
            done.set()

    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TimeElapsedColumn(), transient=False) as bar:
        t_norm = bar.add_task("messages normalized", total=total)
        t_win = bar.add_task("windows scored     ", total=None)
        threading.Thread(target=target, daemon=True).start()
        while not done.wait(0.25):
            snap = progress.snapshot()
            bar.update(t_norm, completed=snap.get("normalized", 0))
            bar.update(t_win, completed=snap.get("windows", 0))
        snap = progress.snapshot()
        bar.update(t_norm, completed=snap.get("normalized", 0), total=snap.get("normalized", 0))
        bar.update(t_win, completed=snap.get("windows", 0), total=snap.get("windows", 0))
    if "error" in result:
        raise result["error"]
    return result["value"]


def run(args: argparse.Namespace, beam_args: list[str]) -> dict[str, Any]:
    """Run the job; returns the summary (also written to ``OUT/summary.json``)."""
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    now_ms = int(time.time() * 1000)
    start_ms = args.start_ms
    if start_ms is None:  # end the simulated history at the last full minute before now
        start_ms = (now_ms // 60_000) * 60_000 - int(args.duration * 1000)
    config = FleetConfig(
        assets=args.assets, duration_s=args.duration, interval_s=args.interval,
        seed=args.seed, start_ms=start_ms, malformed_rate=args.malformed_rate)
    fleet = Fleet(config)
    (out / "ground_truth.json").write_text(json.dumps(fleet.ground_truth(), indent=1))
    options = PipelineOptions(beam_args or ["--runner=DirectRunner"])
    if not any(a.startswith("--runner") for a in beam_args):
        options = PipelineOptions(["--runner=DirectRunner", "--direct_num_workers=1",
                                   "--direct_running_mode=in_memory", *beam_args])
    progress.reset()
    t0 = time.perf_counter()

    def execute():
        p = beam.Pipeline(options=options)
        outputs = (
            p
            | "ReadSimulator" >> ReadSimulator(config)
            | "ProcessMessages" >> ProcessMessages(twin_kwargs=twin_kwargs_from(args))
        )
        outputs | "WriteOutputs" >> WriteOutputs(str(out))
        result = p.run()
        result.wait_until_finish()
        return result

    expected = int(args.assets * args.duration / args.interval)
    result = _with_progress(expected, execute, enabled=not args.no_progress)
    elapsed = time.perf_counter() - t0
    summary = _metrics(result)
    summary.update({
        "assets": args.assets, "duration_s": args.duration, "seed": args.seed,
        "elapsed_s": round(elapsed, 2),
        "readings_per_s": round(summary["readings_in"] / elapsed, 1) if elapsed else None,
        "invariant_ok": summary["readings_in"]
        == summary["readings_valid"] + summary["dead_letters"],
        "out": str(out),
    })
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary

"""The ``twin`` command line: ``run``, ``evaluate``, ``sweep``, ``broker``, ...

Each subcommand lives in its own module under ``jobs/``; this file only wires them.
"""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table


def _print_summary(summary: dict, console: Console) -> None:
    table = Table(title="twinstream run", show_header=False)
    for key in ("readings_in", "readings_valid", "dead_letters", "late_readings",
                "duplicate_readings", "windows", "predictions", "anomalies", "drift_events"):
        table.add_row(key, str(summary.get(key)))
    table.add_row("actions", ", ".join(f"{k} {v}" for k, v in summary["actions"].items()) or "0")
    table.add_row("dead-letter reasons",
                  ", ".join(f"{k} {v}" for k, v in summary["dead_letter_reasons"].items()))
    table.add_row("invariant in == valid + dead", "ok" if summary["invariant_ok"] else "BROKEN")
    table.add_row("elapsed", f"{summary['elapsed_s']} s ({summary['readings_per_s']} msg/s)")
    console.print(table)


def _print_metrics(metrics: dict, console: Console) -> None:
    table = Table(title="evaluation against ground truth", show_header=False)
    for key, value in metrics.items():
        if key in ("missed", "by_fault"):
            continue
        table.add_row(key, str(value))
    for fault, v in metrics["by_fault"].items():
        table.add_row(f"  {fault}", f"{v['detected']}/{v['episodes']} detected")
    console.print(table)


def cmd_run(args: argparse.Namespace, beam_args: list[str]) -> int:
    from jobs.run import run
    from pipelines.beam.runner import BeamOptionsError
    from pipelines.kafka.broker import BrokerUnavailable
    from pipelines.kafka.config import KafkaConfigError
    from pipelines.kafka.serde import RegistryError

    console = Console()
    try:
        summary = run(args, beam_args)
    except (BrokerUnavailable, KafkaConfigError, RegistryError, FileNotFoundError,
            BeamOptionsError) as exc:
        Console(stderr=True).print(f"[red]twin run: {exc}[/red]", highlight=False)
        return 2
    _print_summary(summary, console)
    console.print(f"outputs in [bold]{summary['out']}[/bold] (summary.json, "
                  "predictions/actions/state/dead_letters as .avro and .parquet)")
    console.print(f"score it: [bold]twin evaluate {summary['out']}[/bold]")
    return 0 if summary["invariant_ok"] else 1


def cmd_evaluate(args: argparse.Namespace, _beam_args: list[str]) -> int:
    from jobs.evaluate import evaluate_dir

    metrics = evaluate_dir(args.dir)
    if args.json:
        print(json.dumps(metrics, indent=1))
    else:
        _print_metrics(metrics, Console())
    return 0


def cmd_sweep(args: argparse.Namespace, _beam_args: list[str]) -> int:
    from jobs.sweep import sweep

    console = Console(stderr=args.json)

    def show(m: dict) -> None:
        missed = ", ".join(f"{e['asset_id']} {e['fault']}" for e in m["missed"]) or "-"
        console.print(f"seed {m['seed']:>3}: {m['detected_episodes']}/{m['fault_episodes']} "
                      f"detected, {m['false_alarms']} false alarms "
                      f"({m['regime_change_alerts']} after regime changes); missed: {missed}")

    result = sweep(args, on_seed=show)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        table = Table(title=f"sweep over {len(args.seeds)} seeds", show_header=False)
        for key, value in result["total"].items():
            table.add_row(key, str(value))
        console.print(table)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from jobs.run import add_arguments as add_run_arguments

    parser = argparse.ArgumentParser(prog="twin", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser(
        "run", help="simulate a fleet and run the twin on Beam (DirectRunner by default)",
        epilog="Unknown flags are Beam pipeline options, e.g. --runner=FlinkRunner.")
    add_run_arguments(p_run)
    p_run.set_defaults(func=cmd_run)
    p_eval = sub.add_parser("evaluate", help="score a run folder against its ground truth")
    p_eval.add_argument("dir", help="output folder of twin run")
    p_eval.add_argument("--json", action="store_true", help="print JSON")
    p_eval.set_defaults(func=cmd_evaluate)
    from jobs.sweep import add_arguments as add_sweep_arguments

    p_sweep = sub.add_parser("sweep", help="score the twin on many seeded fleets, in-process")
    add_sweep_arguments(p_sweep)
    p_sweep.add_argument("--json", action="store_true", help="print JSON")
    p_sweep.set_defaults(func=cmd_sweep)
    from jobs import broker as broker_job

    p_broker = sub.add_parser("broker", help="the embedded Kafka-compatible broker (Tansu)")
    broker_job.add_arguments(p_broker)
    p_broker.set_defaults(func=lambda a, _rest: broker_job.main(a))
    from jobs import tail as tail_job

    p_tail = sub.add_parser("tail", help="print the messages of Kafka topics, decoded")
    tail_job.add_arguments(p_tail)
    p_tail.set_defaults(func=lambda a, _rest: tail_job.main(a))
    from jobs import simulate as simulate_job

    p_simulate = sub.add_parser(
        "simulate", help="publish a simulated fleet to Kafka and apply signed setpoints")
    simulate_job.add_arguments(p_simulate)
    p_simulate.set_defaults(func=lambda a, _rest: simulate_job.main(a))
    from jobs import flink as flink_job

    p_flink = sub.add_parser("flink", help="the twin on a real Flink cluster "
                                           "(cluster start|stop|status)")
    flink_job.add_arguments(p_flink)
    p_flink.set_defaults(func=lambda a, _rest: flink_job.main(a))
    from jobs import replay as replay_job

    p_replay = sub.add_parser(
        "replay", help="score a CSV/Parquet history (or a folder) with the twin's detector")
    replay_job.add_arguments(p_replay)
    p_replay.set_defaults(func=lambda a, _rest: replay_job.main(a))
    from jobs import bench as bench_job

    p_bench = sub.add_parser("bench", help="throughput benchmark; `bench nab`: detection quality")
    bench_job.add_arguments(p_bench)
    p_bench.set_defaults(func=lambda a, _rest: bench_job.main(a))
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    rest = [a for a in rest if a != "--"]
    if rest and args.command != "run":
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    return args.func(args, rest)


if __name__ == "__main__":
    sys.exit(main())

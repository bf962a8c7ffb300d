"""The ``twin`` command line: parsing, the run summary, and the wiring of subcommands.

Each subcommand lives in its own module under ``jobs/``; this module builds one strict
parser for all of them (an unknown flag is an error with a suggestion, never silently
passed on), prints what ``twin run`` and ``twin evaluate`` found, and maps every outcome
onto one exit-code convention (:data:`EXIT_CODES`).
"""

from __future__ import annotations

import argparse
import difflib
import json
import sys
import textwrap
from pathlib import Path

from rich.console import Console
from rich.table import Table

from jobs import hints

DESCRIPTION = """\
twinstream: a streaming digital twin for predictive maintenance. Sensor data from many
vendors is normalized, windowed per asset, scored by drift-aware online models and turned
into predictions and actions (alerts, work orders, signed setpoint commands).

start here:
  twin run                   simulate a fleet, run the twin on Beam, write out/run/
  twin evaluate out/run      score that run against the simulator's ground truth
  twin dashboard             the fleet live in a browser (out/run, or --bootstrap-servers)
  twin broker start          an embedded Kafka-compatible broker for the Kafka commands
  twin <command> --help      every flag of a command
"""

EXIT_CODES = {
    0: "done; every check passed",
    1: "done, but a check failed (run invariant broken, undelivered messages, benchmark "
       "outputs that disagree, a status asked about something not running)",
    2: "not done: usage error, bad setting or input file, or a service that cannot be "
       "reached or started (broker, schema registry, Flink cluster)",
    130: "interrupted (Ctrl-C)",
}

EPILOG = "exit codes:\n" + "\n".join(
    textwrap.fill(text, 88, initial_indent=f"  {code:<4} ", subsequent_indent=" " * 7)
    for code, text in EXIT_CODES.items()) + """

Beam pipeline options go after `--`, and only `twin run` takes them:
  twin run -- --runner=FlinkRunner --flink_master=host:8081

Documentation: README.md and docs/ in the source repository."""


class TwinParser(argparse.ArgumentParser):
    """An :class:`argparse.ArgumentParser` that takes flags only as spelled: no prefix
    abbreviations (``--asset`` is not ``--assets``), so a typo cannot pick a flag."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def _innermost(parser: argparse.ArgumentParser, args: argparse.Namespace
               ) -> argparse.ArgumentParser:
    """The (sub-)parser of the deepest subcommand ``args`` chose, e.g. ``twin flink run``."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = getattr(args, action.dest, None)
            if chosen in action.choices:
                return _innermost(action.choices[chosen], args)
    return parser


def _options_of(parser: argparse.ArgumentParser) -> list[str]:
    return [o for a in parser._actions for o in a.option_strings if o.startswith("--")]


def _beam_option_names() -> set[str]:
    """Every pipeline option Beam knows, by its flag's name (``runner``, ``project``)."""
    from apache_beam.options.pipeline_options import PipelineOptions

    return set(PipelineOptions([]).get_all_options(retain_unknown_options=False))


def unknown_beam_options(beam_options: list[str]) -> str | None:
    """Why ``beam_options`` would not all reach Beam (it drops flags it does not know
    with a warning), or None when they would."""
    names = _beam_option_names()
    notes = []
    for arg in beam_options:
        if not arg.startswith("--"):
            continue
        flag = arg.split("=", 1)[0]
        if flag[2:] not in names:
            close = difflib.get_close_matches(flag[2:], names, n=1, cutoff=0.6)
            notes.append(f"{flag}" + (f": did you mean --{close[0]}?" if close else ""))
    if not notes:
        return None
    return "unknown Beam pipeline options after `--`: " + "; ".join(notes)


def unrecognized_message(extras: list[str], parser: argparse.ArgumentParser) -> str:
    """``unrecognized arguments: ...`` with, for each unknown flag, the nearest known one,
    and the rule for Beam options when one looks like a Beam option."""
    known = _options_of(parser)
    notes = []
    for arg in extras:
        if not arg.startswith("-"):
            continue
        flag = arg.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.6)
        if flag.lstrip("-") in _beam_option_names():
            notes.append(f"{flag} is a Beam pipeline option: Beam options go after `--`, "
                         f"and only twin run takes them (twin run -- {arg})")
        elif close:
            notes.append(f"{flag}: did you mean {close[0]}?")
    text = f"unrecognized arguments: {' '.join(extras)}"
    return text + ("\n  " + "\n  ".join(notes) if notes else "")


def _n(value) -> str:
    return f"{value:,}" if isinstance(value, int) else str(value)


def setpoint_overview(out: Path) -> list[str]:
    """One line per setpoint name the run commanded: count, unit, range of values."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from transforms.catalog import ASSET_TYPES

    path = out / "actions.parquet"
    if not path.is_file():
        return []
    table = pq.read_table(path, columns=["kind", "setpoint_name", "setpoint_value",
                                         "setpoint_previous", "dry_run"])
    table = table.filter(pc.equal(table["kind"], "SETPOINT"))
    units = {s.name: s.unit for sensors in ASSET_TYPES.values() for s in sensors}
    lines = []
    for name in sorted(set(table["setpoint_name"].to_pylist()) - {None}):
        rows = table.filter(pc.equal(table["setpoint_name"], name))
        values = rows["setpoint_value"].to_pylist()
        lower = sum(v < p for v, p in zip(values, rows["setpoint_previous"].to_pylist())
                    if v is not None and p is not None)
        dry = sum(rows["dry_run"].to_pylist())
        unit = units.get(name, "")
        lines.append(f"{len(values)} x {name} [{unit}]: {min(values):.4g} to {max(values):.4g}"
                     f" ({lower} lowered{f', {dry} dry run' if dry else ''})")
    return lines


def summary_rows(summary: dict, out: Path) -> list[tuple[str, str]]:
    """The run summary as (label, text) rows that say how to read each number."""
    rows: list[tuple[str, str]] = []
    what = {"simulator": f"the built-in fleet: {summary.get('assets')} assets, "
                         f"{summary.get('duration_s', 0) / 3600:g} h of event time, seed "
                         f"{summary.get('seed')}",
            "kafka": f"Kafka topics {', '.join(summary.get('topics') or [])} at "
                     f"{summary.get('bootstrap_servers')}"}.get(summary.get("source"), "")
    if what:
        rows.append(("input", what))
    rows.append(("messages", f"{_n(summary['readings_in'])} read: "
                             f"{_n(summary['readings_valid'])} valid readings + "
                             f"{_n(summary['dead_letters'])} dead letters"))
    reasons = summary.get("dead_letter_reasons") or {}
    if reasons:
        rows.append(("dead letters", ", ".join(f"{k} {v}" for k, v in reasons.items())
                     + " (dead_letters.*: reason, detail, original bytes)"))
    truth_path = out / "ground_truth.json"
    if summary.get("source") == "simulator" and truth_path.is_file():
        expected = json.loads(truth_path.read_text()).get("expected_dead_letters", {})
        injected = sum(expected.values())
        verdict = ("each for the reason its defect calls for" if expected == reasons
                   else "BUT the reasons differ from the defects' (see ground_truth.json)")
        rows.append(("", f"{_n(injected)} of them broken on purpose by the simulator "
                         f"(--malformed-rate), {verdict}"))
    rows.append(("late, duplicate", f"{_n(summary['late_readings'])} readings arrived after "
                                    f"their window closed (kept in late.*); "
                                    f"{_n(summary['duplicate_readings'])} duplicates (same "
                                    f"asset and time, kept once)"))
    rows.append(("windows", f"{_n(summary['windows'])} asset windows closed, "
                            f"{_n(summary['predictions'])} predictions (windows with too few "
                            f"readings are not scored)"))
    rows.append(("anomalies", f"{_n(summary['anomalies'])} windows judged abnormal "
                              f"(is_anomaly: one per window, not per incident); "
                              f"{_n(summary['drift_events'])} windows with drift"))
    actions = summary.get("actions") or {}
    rows.append(("alerts", f"{_n(actions.get('ALERT', 0))} alerts (one per episode of "
                           f"abnormal windows; {_n(actions.get('ALERT_CLEARED', 0))} cleared), "
                           f"{_n(actions.get('WORK_ORDER', 0))} work orders"))
    setpoints = setpoint_overview(out) if actions.get("SETPOINT") else []
    rows.append(("setpoints", f"{_n(actions.get('SETPOINT', 0))} setpoint commands"
                 + (": " + "; ".join(setpoints) if setpoints else "")))
    rows.append(("check", "readings in == valid + dead letters: "
                 + ("ok" if summary["invariant_ok"] else "BROKEN (messages were lost)")))
    rows.append(("time", f"{summary['elapsed_s']} s ({_n(int(summary['readings_per_s'] or 0))}"
                         f" messages/s)"))
    return rows


def _print_summary(summary: dict, out: Path, console: Console) -> None:
    table = Table(title="twin run", show_header=False, box=None, padding=(0, 1))
    table.add_column(style="bold")
    table.add_column()
    for label, text in summary_rows(summary, out):
        table.add_row(label, text)
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
    from pipelines.beam.sinks import OutputFolderBusy
    from pipelines.kafka.broker import BrokerUnavailable
    from pipelines.kafka.config import KafkaConfigError
    from pipelines.kafka.serde import RegistryError
    from pipelines.statefile import StateFileError
    from transforms.model import ModelError

    console = Console(highlight=False)
    try:
        summary = run(args, beam_args)
    except (BrokerUnavailable, KafkaConfigError, RegistryError, FileNotFoundError,
            BeamOptionsError, OutputFolderBusy, StateFileError, ModelError) as exc:
        message = hints.rewrite(str(exc))
        Console(stderr=True, soft_wrap=True).print(f"[red]twin run: {message}[/red]",
                                                 highlight=False)
        return 2
    if summary.get("nothing_new"):
        console.print(summary["message"], markup=False, soft_wrap=True)
        return 0
    for note in summary.get("notes", ()):
        console.print(note, markup=False, soft_wrap=True)
    out = Path(summary["out"])
    _print_summary(summary, out, console)
    from jobs.inputcheck import check

    unreadable = check(out, summary, args.max_dead_share)
    console.print(f"outputs in [bold]{hints.path(out)}/[/bold]: predictions, actions, state, "
                  f"features, late, dead_letters (.avro and .parquet), summary.json")
    if (out / "ground_truth.json").is_file():
        console.print(f"score it: [bold]{hints.command('evaluate', hints.path(out))}[/bold]")
    if unreadable:
        err = Console(stderr=True, soft_wrap=True, highlight=False)
        for u in unreadable:
            err.print(f"[red]twin run: cannot read {u.describe()}[/red]")
        err.print(f"(a source fails the run when at least {args.max_dead_share:.0%} of its "
                  f"messages are dead letters: --max-dead-share)")
        return 1
    return 0 if summary["invariant_ok"] else 1


def cmd_evaluate(args: argparse.Namespace, _beam_args: list[str]) -> int:
    from jobs.evaluate import EvaluateError, evaluate_dir

    try:
        metrics = evaluate_dir(args.dir, args.ground_truth)
    except EvaluateError as exc:
        Console(stderr=True, soft_wrap=True).print(f"[red]twin evaluate: {exc}[/red]",
                                                 highlight=False)
        return 2
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

    parser = TwinParser(prog="twin", description=DESCRIPTION, epilog=EPILOG,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")
    p_run = sub.add_parser(
        "run", help="run the twin on Beam: the built-in fleet simulator or Kafka topics in, "
                    "predictions and actions out",
        epilog="Beam pipeline options go after `--`, e.g. "
               "twin run -- --runner=FlinkRunner --flink_master=host:8081")
    add_run_arguments(p_run)
    p_run.set_defaults(func=cmd_run, takes_beam_options=True)
    p_eval = sub.add_parser("evaluate", help="score a run folder against the simulator's "
                                             "ground truth")
    p_eval.add_argument("dir", help="output folder of twin run, or of twin flink run/submit "
                                    "--out")
    p_eval.add_argument("--ground-truth", metavar="FILE", type=Path,
                        help="the simulator's ground truth (default DIR/ground_truth.json; "
                             "for Kafka runs, the file twin simulate --ground-truth wrote)")
    p_eval.add_argument("--json", action="store_true", help="print JSON")
    p_eval.set_defaults(func=cmd_evaluate)
    from jobs.sweep import add_arguments as add_sweep_arguments

    p_sweep = sub.add_parser("sweep", help="score the twin on many seeded fleets, in-process")
    add_sweep_arguments(p_sweep)
    p_sweep.add_argument("--json", action="store_true", help="print JSON")
    p_sweep.set_defaults(func=cmd_sweep)
    from jobs import broker as broker_job

    p_broker = sub.add_parser("broker", help="the embedded Kafka-compatible broker (Tansu, "
                                             "in memory, loopback only)")
    broker_job.add_arguments(p_broker)
    p_broker.set_defaults(func=lambda a, _rest: broker_job.main(a))
    from jobs import tail as tail_job

    p_tail = sub.add_parser("tail", help="print the messages of Kafka topics, decoded, with "
                                         "signatures checked")
    tail_job.add_arguments(p_tail)
    p_tail.set_defaults(func=lambda a, _rest: tail_job.main(a))
    from jobs import simulate as simulate_job

    p_simulate = sub.add_parser(
        "simulate", help="publish a simulated fleet to Kafka and apply signed setpoints")
    simulate_job.add_arguments(p_simulate)
    p_simulate.set_defaults(func=lambda a, _rest: simulate_job.main(a))
    from jobs import flink as flink_job

    p_flink = sub.add_parser("flink", help="the twin as a Flink job: a local cluster, "
                                           "submit, cancel, a mini-cluster run")
    flink_job.add_arguments(p_flink)
    p_flink.set_defaults(func=lambda a, _rest: flink_job.main(a))
    from jobs import model as model_job

    p_model = sub.add_parser("model", help="your plant in files: check model and format "
                                           "files, draft them from sample messages")
    model_job.add_arguments(p_model)
    p_model.set_defaults(func=lambda a, _rest: model_job.main(a))
    from jobs import replay as replay_job

    p_replay = sub.add_parser(
        "replay", help="score a CSV/Parquet history (or a folder) with the twin's detector")
    replay_job.add_arguments(p_replay)
    p_replay.set_defaults(func=lambda a, _rest: replay_job.main(a))
    from jobs import dashboard as dashboard_job

    p_dashboard = sub.add_parser(
        "dashboard", help="the fleet live in a browser (from Kafka or a run folder) and a "
                          "read-only twin-state JSON API")
    dashboard_job.add_arguments(p_dashboard)
    p_dashboard.set_defaults(func=lambda a, _rest: dashboard_job.main(a))
    from jobs import whatif as whatif_job

    p_whatif = sub.add_parser(
        "whatif", help="what if an asset were run differently? its twin's models rolled "
                       "forward: condition sensors, health, RUL, with intervals")
    whatif_job.add_whatif_arguments(p_whatif)
    p_whatif.set_defaults(func=lambda a, _rest: whatif_job.main_whatif(a))
    p_optimize = sub.add_parser(
        "optimize", help="the setpoint that does the most within limits and a minimum RUL, "
                         "as a (dry-run) SETPOINT action")
    whatif_job.add_optimize_arguments(p_optimize)
    p_optimize.set_defaults(func=lambda a, _rest: whatif_job.main_optimize(a))
    from jobs import bench as bench_job

    p_bench = sub.add_parser("bench", help="benchmarks: throughput (scale, history) and "
                                           "detection (nab); report writes docs/benchmarks.md")
    bench_job.add_arguments(p_bench)
    p_bench.set_defaults(func=lambda a, _rest: bench_job.main(a))
    return parser


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` strictly and run the subcommand; returns its exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    beam_options: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, beam_options = argv[:cut], argv[cut + 1:]
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    command_parser = _innermost(parser, args)
    if extras:
        command_parser.error(unrecognized_message(extras, command_parser))
    if beam_options and not getattr(args, "takes_beam_options", False):
        command_parser.error(f"arguments after `--` are Beam pipeline options, and only "
                             f"`twin run` takes them: {' '.join(beam_options)}")
    unknown = unknown_beam_options(beam_options)
    if unknown:
        command_parser.error(unknown)
    try:
        return args.func(args, beam_options)
    except KeyboardInterrupt:
        Console(stderr=True).print("[yellow]interrupted[/yellow]")
        return 130


if __name__ == "__main__":
    sys.exit(main())

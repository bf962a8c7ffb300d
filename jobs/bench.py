"""``twin bench``: the project's benchmarks, each a command that prints its figures.

- ``twin bench`` (throughput): one workload written once to a file (the simulator's
  Confluent-framed Avro vendor messages, clean, ``--assets`` x ``--duration`` at
  ``--interval``), each stage in its own child process on one core, timed after imports:
  (a) ``decode``, fastavro decoding alone (the limit any Avro pipeline works under);
  (b) ``naive``, the textbook per-element Beam pipeline of the same scoring
  (:mod:`pipelines.beam.naive`); (c) ``twinstream``, the twin's own Beam pipeline
  (:class:`~pipelines.beam.pipeline.ProcessMessages`, everything it does); (d) ``flink``,
  the twin's Flink job on a local mini-cluster at parallelism 1. It prints messages/s,
  values/s and peak memory of each, ``speedup_vs_naive`` = (c)/(b),
  ``fraction_of_decode_limit`` = (c)/(a), the twin's state per asset, and whether the
  stages produced the same predictions (exit 1 if not).
- ``twin bench scale``: stage (c) at several fleet sizes and sensor counts (table, plot).
- ``twin bench history``: a small fleet for days of event time through the twins in this
  process: cost per window and state per asset as their history grows.
- ``twin bench fleet``: the main job (``twin run`` on its defaults) timed in a child
  process, with its counts and its evaluation against the simulator's ground truth.
- ``twin bench kafka-backlog``: ``twin run --source kafka`` over backlogs of several sizes
  on a fresh embedded broker each: peak memory and time against the backlog
  (:mod:`jobs.bench_kafka`).
- ``twin bench faults``: the simulator's fleet plus hostile messages on two brokers, one
  undisturbed Kafka run against one SIGKILLed and rerun again and again: lost, extra and
  duplicated outputs by id, scores that differ (:mod:`jobs.bench_faults`).
- ``twin bench peer``: ``twin run --source kafka`` against a Quix Streams peer
  (``../shared/bench/peers/``) on one broker and backlog, runs interleaved: both rates,
  peak memories (whole process trees) and the ratio (:mod:`jobs.bench_peer`).
- ``twin bench latency``: a paced stream through the Flink job on a standalone cluster
  with Kafka at fractions of its capacity: per prediction, the time from its window's
  last reading arriving to the prediction landing, beyond the watermark's wait (p50, p99,
  max; :mod:`jobs.bench_latency`).
- ``twin bench dashboard``: the dashboard's fleet page with 10,000 assets in a real
  browser: time to render, row updates per second, lag behind the topics, server memory
  (:mod:`jobs.bench_dashboard`).
- ``twin bench sweep``: detection on many seeded fleets (``twin sweep``'s totals).
- ``twin bench nab``: the Numenta Anomaly Benchmark replayed with ``twin replay``'s one
  configuration and scored by NAB's rules (``--data``, ``--scorer``).
- ``twin bench report``: ``docs/benchmarks.md`` from the latest result records.

With ``--record`` a bench also writes its figures as a JSON record (date, commit, machine,
command, parameters, figures; :mod:`jobs.benchrecord`) under ``infra/bench/results/``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from jobs.benchreport import NAB_PROFILES as PROFILES
from jobs.benchreport import NAB_PUBLISHED as PUBLISHED

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCH = REPO.parent / "shared" / "bench"
NAB_HOME = "https://github.com/numenta/NAB (its data/ and labels/ folders, v1.1)"


class BenchError(RuntimeError):
    pass


def run_nab(nab_root: Path, scorer: Path, out: Path, workers: int = 2) -> dict:
    """Replay the corpus into ``out/results`` and score it; returns the scorer's report
    plus ``rows`` and ``detector_s`` (time in replay, all files, summed over workers)."""
    from jobs.replay import replay

    data = nab_root / "data"
    labels = nab_root / "labels" / "combined_windows.json"
    if not data.is_dir() or not labels.is_file():
        raise BenchError(f"no NAB corpus at {nab_root} (want data/ and "
                         f"labels/combined_windows.json): get it from {NAB_HOME} and pass "
                         f"--data DIR or set $TWIN_NAB_DATA")
    if not scorer.is_file():
        raise BenchError(f"no NAB scorer at {scorer}: pass --scorer FILE or set "
                         f"$TWIN_NAB_SCORER (docs/benchmarks.md says where it comes from)")
    results = out / "results"
    reports, errors = replay(data, results, workers, timestamp_column="timestamp",
                             columns=["value"])
    if errors:
        raise BenchError("replay failed: " + "; ".join(errors))
    proc = subprocess.run([sys.executable, str(scorer), str(results), "--nab-root",
                           str(nab_root), "--score-column", "alarm", "--json"],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"scorer failed: {proc.stderr.strip()[-2000:]}")
    report = json.loads(proc.stdout)
    report["files"] = len(reports)
    report["rows"] = sum(r.rows for r in reports)
    report["detector_s"] = round(sum(r.elapsed_s for r in reports), 2)
    (out / "scores.json").write_text(json.dumps(report, indent=1))
    return report


SCALE_PLOT = "img/scale.png"  # beside docs/benchmarks.md
RECORD_HELP = "also write the figures as a JSON record under infra/bench/results/ " \
              "(or $TWIN_BENCH_RESULTS)"


def _default_path(env: str, default: Path) -> Path:
    return Path(os.environ[env]) if os.environ.get(env) else default


TEP_MODEL = REPO / "docs" / "examples" / "tep" / "tep.model.yaml"
TEP_WINDOW_S = 900.0  # 5 rows of 3 minutes: a window needs 4 readings to be scored


def run_tep(tep_root: Path, scorer: Path, out: Path, workers: int = 2,
            through_twin: bool = False) -> dict:
    """Replay the 22 TEP streams into ``out/results`` with replay's one configuration (the
    label column ``fault`` is never read: it is one of the label names replay leaves
    out) and score them; returns the scorer's report plus ``rows`` and ``detector_s``."""
    from jobs.replay import replay

    streams = sorted(tep_root.glob("stream_*.csv"))
    if len(streams) != 22:
        raise BenchError(f"no TEP streams at {tep_root} (want stream_00.csv .. stream_21.csv, "
                         f"found {len(streams)}): see docs/benchmarks.md for where they come "
                         f"from, and pass --data DIR or set $TWIN_TEP_DATA")
    if not scorer.is_file():
        raise BenchError(f"no TEP scorer at {scorer}: pass --scorer FILE or set "
                         f"$TWIN_TEP_SCORER")
    results = out / "results"
    results.mkdir(parents=True, exist_ok=True)
    reports, errors = [], []
    staged = out / "streams"  # only the streams: the folder also holds the raw files
    staged.mkdir(parents=True, exist_ok=True)
    for f in streams:
        link = staged / f.name
        if not link.exists():
            link.symlink_to(f.resolve())
    kw = {}
    if through_twin:  # the plant declared as a model, each stream one asset's history
        from transforms.model import load_model

        kw = {"model": load_model(TEP_MODEL), "window_s": TEP_WINDOW_S}
    reports, errors = replay(staged, results, workers, timestamp_column="timestamp", **kw)
    if errors:
        raise BenchError("replay failed: " + "; ".join(errors))
    if any("fault" in r.columns for r in reports):
        raise BenchError("the label column fault reached the detector")
    proc = subprocess.run([sys.executable, str(scorer), str(results), "--bench",
                           str(tep_root), "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"scorer failed: {proc.stderr.strip()[-2000:]}")
    report = json.loads(proc.stdout)
    report["files"] = len(reports)
    report["rows"] = sum(r.rows for r in reports)
    report["columns"] = len(reports[0].columns)
    report["detector_s"] = round(sum(r.elapsed_s for r in reports), 2)
    (out / "scores.json").write_text(json.dumps(report, indent=1))
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jobs.options import parse_duration, positive_float, positive_int, window_duration

    p.add_argument("--assets", type=positive_int, default=1000,
                   help="throughput workload: assets (default 1000)")
    p.add_argument("--duration", type=parse_duration, default="5m",
                   help="throughput workload: event time (default 5m)")
    p.add_argument("--interval", type=positive_float, default=1.0,
                   help="throughput workload: seconds between samples (default 1)")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated subset of {', '.join(STAGES)}")
    p.add_argument("--out", type=Path, default=Path("out") / "bench",
                   help="work folder (default out/bench)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--record", action="store_true", help=RECORD_HELP)
    sub = p.add_subparsers(dest="bench", required=False,
                           metavar="{scale,history,fleet,kafka-backlog,faults,peer,dashboard,"
                                   "sweep,nab,tep,formats,fidelity,optimize,flink-slots,latency,"
                                   "report}")
    scale = sub.add_parser("scale", help="twinstream's throughput and memory against the "
                                         "number of assets, as a table and a PNG plot")
    scale.add_argument("--assets", default="1000,2000,5000,10000",
                       help="comma-separated fleet sizes (default 1000,2000,5000,10000)")
    scale.add_argument("--sensors", default=None,
                       help="comma-separated sensors per asset, each run at every fleet "
                            "size (default: all 8 of the catalog's)")
    scale.add_argument("--duration", type=parse_duration, default="3m",
                       help="event time per run (default 3m)")
    scale.add_argument("--interval", type=positive_float, default=1.0,
                       help="seconds between samples (default 1)")
    scale.add_argument("--out", type=Path, default=Path("out") / "bench-scale",
                       help="where scale.json and scale.png go (default out/bench-scale)")
    hist = sub.add_parser("history", help="the twins' per-window cost and state size as "
                                           "their history grows (hours of event time)")
    hist.add_argument("--assets", type=positive_int, default=20,
                      help="fleet size (default 20)")
    hist.add_argument("--duration", type=parse_duration, default="24h",
                      help="event time (default 24h)")
    hist.add_argument("--interval", type=positive_float, default=10.0,
                      help="seconds between samples (default 10)")
    hist.add_argument("--window", type=window_duration, default="60s",
                      help="event-time window (default 60s, the twin's default)")
    fleet = sub.add_parser("fleet", help="the main job (twin run on its defaults) timed, "
                                         "counted and evaluated")
    fleet.add_argument("--out", type=Path, default=Path("out") / "bench-fleet",
                       help="the run's output folder (default out/bench-fleet)")
    backlog = sub.add_parser("kafka-backlog", help="peak memory and time of `twin run "
                                                   "--source kafka` against its backlog")
    backlog.add_argument("--messages", default="200000,1000000,2000000",
                         help="comma-separated backlog sizes, one fresh broker each "
                              "(default 200000,1000000,2000000)")
    backlog.add_argument("--assets", type=positive_int, default=24,
                         help="fleet size (default 24)")
    backlog.add_argument("--interval", type=positive_float, default=5.0,
                         help="seconds between an asset's samples (default 5)")
    backlog.add_argument("--max-messages-per-slice", type=positive_int, default=None,
                         metavar="N", help="passed to twin run (default: its own)")
    backlog.add_argument("--out", type=Path, default=Path("out") / "bench-kafka-backlog",
                         help="work folder; the report also goes to backlog.json in it "
                              "(default out/bench-kafka-backlog)")
    faults = sub.add_parser("faults", help="a Kafka run SIGKILLed and rerun over hostile "
                                           "input against an undisturbed one: lost, extra, "
                                           "duplicated outputs by id")
    faults.add_argument("--assets", type=positive_int, default=24,
                        help="fleet size (default 24)")
    faults.add_argument("--hours", type=positive_float, default=3.0,
                        help="event time of the fleet in hours (default 3)")
    faults.add_argument("--interval", type=positive_float, default=5.0,
                        help="seconds between an asset's samples (default 5)")
    faults.add_argument("--max-messages-per-slice", type=positive_int, default=2000,
                        metavar="N", help="slices of the killed runs (default 2000)")
    faults.add_argument("--kills", type=positive_int, default=5,
                        help="SIGKILLs, each followed by a rerun (default 5)")
    faults.add_argument("--seed", type=int, default=1,
                        help="the fleet, the hostile messages and the kill moments (default 1)")
    faults.add_argument("--out", type=Path, default=Path("out") / "bench-faults",
                        help="work folder (its calm/ and crashy/ run folders are made "
                             "afresh); the report also goes to faults.json in it (default "
                             "out/bench-faults)")
    peer = sub.add_parser("peer", help="twin run --source kafka against a Quix Streams peer "
                                       "(../shared/bench/peers/) on one backlog, interleaved")
    peer.add_argument("--assets", type=positive_int, default=200,
                      help="fleet size (default 200, the peer README's)")
    peer.add_argument("--duration", type=parse_duration, default="2h",
                      help="event time published (default 2h: 1.44 million messages)")
    peer.add_argument("--interval", type=positive_float, default=1.0,
                      help="seconds between an asset's samples (default 1)")
    peer.add_argument("--window", type=window_duration, default="10s",
                      help="event-time window of both sides (default 10s)")
    peer.add_argument("--pairs", type=positive_int, default=2,
                      help="twin, peer runs, interleaved (default 2)")
    peer.add_argument("--max-messages-per-slice", type=positive_int, default=None,
                      metavar="N", help="passed to twin run (default: its own)")
    peer.add_argument("--peers", type=Path,
                      default=_default_path("TWIN_PEERS", SHARED_BENCH / "peers"),
                      help="folder of quix_peer.py (default $TWIN_PEERS, else "
                           "../shared/bench/peers beside the repository)")
    peer.add_argument("--peer-venv", type=Path,
                      default=Path(os.environ.get("TMPDIR") or "/tmp") / "peers" / "venv",
                      help="the peer's own venv, made on first use as its run_bench.sh "
                           "does (default $TMPDIR/peers/venv, the one run_bench.sh makes)")
    peer.add_argument("--baseline", type=Path, default=None, metavar="CHECKOUT",
                      help="also run twin run of another checkout of twinstream (e.g. `git "
                           "archive` of the commit before a change) in each round, with "
                           "this venv: before and after on the same backlog")
    peer.add_argument("--out", type=Path, default=Path("out") / "bench-peer",
                      help="work folder; the report also goes to peer.json in it "
                           "(default out/bench-peer)")
    from jobs.bench_dashboard import add_arguments as add_dashboard_arguments

    dashboard = sub.add_parser("dashboard", help="the dashboard's fleet page with 10,000 "
                                                 "assets in a browser: render time, updates/s, "
                                                 "server memory")
    add_dashboard_arguments(dashboard)
    from jobs.sweep import add_arguments as add_sweep_arguments

    sweep = sub.add_parser("sweep", help="detection on many seeded fleets (twin sweep)")
    add_sweep_arguments(sweep)
    nab = sub.add_parser("nab", help="replay and score the Numenta Anomaly Benchmark")
    nab.add_argument("--data", type=Path,
                     default=_default_path("TWIN_NAB_DATA", SHARED_BENCH / "nab"),
                     help="the NAB corpus: a folder with data/ and labels/ (default "
                          "$TWIN_NAB_DATA, else ../shared/bench/nab beside the repository)")
    nab.add_argument("--scorer", type=Path,
                     default=_default_path("TWIN_NAB_SCORER", SHARED_BENCH / "nab_score.py"),
                     help="the NAB scorer script (default $TWIN_NAB_SCORER, else "
                          "../shared/bench/nab_score.py)")
    nab.add_argument("--out", type=Path, default=Path("out") / "nab",
                     help="where results and scores.json go (default out/nab)")
    nab.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1),
                     help="replay processes (default: up to 2)")
    tep = sub.add_parser("tep", help="replay and score the Tennessee Eastman fault-detection "
                                     "benchmark")
    tep.add_argument("--data", type=Path,
                     default=_default_path("TWIN_TEP_DATA", SHARED_BENCH / "tep"),
                     help="the TEP streams (stream_00.csv .. stream_21.csv; default "
                          "$TWIN_TEP_DATA, else ../shared/bench/tep beside the repository)")
    tep.add_argument("--scorer", type=Path,
                     default=_default_path("TWIN_TEP_SCORER", SHARED_BENCH / "tep_score.py"),
                     help="the TEP scorer script (default $TWIN_TEP_SCORER, else "
                          "../shared/bench/tep_score.py)")
    tep.add_argument("--out", type=Path, default=Path("out") / "tep",
                     help="where results and scores.json go (default out/tep)")
    tep.add_argument("--workers", type=positive_int, default=min(2, os.cpu_count() or 1),
                     help="replay processes (default: up to 2)")
    tep.add_argument("--through-twin", action="store_true",
                     help="the plant as a model (docs/examples/tep/tep.model.yaml: the "
                          "manipulated variables as operating point) through the twin, "
                          "15-minute windows, each row given its window's verdict")
    formats = sub.add_parser("formats", help="normalization's cost per message: data formats "
                                             "read by the generic adapter against the "
                                             "built-in vendors' adapters")
    formats.add_argument("--messages", type=positive_int, default=20000,
                         help="messages of each source (default 20000)")
    from jobs.bench_flink import add_arguments as add_flink_slots_arguments

    flink_slots = sub.add_parser("flink-slots", help="the Flink job on a standalone cluster "
                                                     "with Kafka at 1 and 2 slots: messages/s, "
                                                     "checkpoints, the cores' shares")
    add_flink_slots_arguments(flink_slots)
    from jobs.bench_latency import add_arguments as add_latency_arguments

    latency = sub.add_parser("latency", help="a paced stream through the Flink job on a "
                                             "standalone cluster: prediction latency beyond "
                                             "the watermark at loads of its capacity")
    add_latency_arguments(latency)
    fid = sub.add_parser("fidelity", help="the twin's what-if answers against the simulator: "
                                          "errors and 90 %% coverage at 15 min, 1 h, 6 h")
    opt = sub.add_parser("optimize", help="the twin's recommended setpoints on faulty "
                                          "simulated assets: time to failure gained, "
                                          "throughput it cost")
    for b, default_seeds in ((fid, "1-3"), (opt, "1-3")):
        b.add_argument("--seeds", default=default_seeds,
                       help=f"seeds of the simulated fleets, e.g. 1-3 or 1,4,7 (default "
                            f"{default_seeds})")
        b.add_argument("--assets", type=positive_int, default=12,
                       help="assets per fleet (default 12)")
        b.add_argument("--no-step-test", action="store_true",
                       help="no commissioning speed step test in the first hour: speed "
                            "questions are then extrapolations")
        b.add_argument("--out", type=Path, default=Path("out") / f"bench-{b.prog.split()[-1]}",
                       help="where every comparison is written as JSON")
    for bench in (scale, hist, fleet, backlog, faults, peer, dashboard, sweep, nab, tep, formats,
                  fid, opt, flink_slots, latency):
        bench.add_argument("--json", action="store_true", help="print the report as JSON")
        bench.add_argument("--record", action="store_true", help=RECORD_HELP)
    report = sub.add_parser("report", help="write docs/benchmarks.md from the latest "
                                           "result records")
    report.add_argument("--results", type=Path, default=None,
                        help="folder of records (default infra/bench/results, or "
                             "$TWIN_BENCH_RESULTS)")
    report.add_argument("--output", type=Path, default=REPO / "docs" / "benchmarks.md",
                        help="the page to write (default docs/benchmarks.md)")
    report.add_argument("--readme", type=Path, default=REPO / "README.md",
                        help="whose headline figures block to rewrite too (default the "
                             "repository's README.md)")
    report.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if the page differs from what the "
                             "records give")


def _fail(name: str, message: str) -> int:
    from rich.console import Console

    from jobs import hints

    Console(stderr=True, soft_wrap=True).print(f"[red]twin bench{name}: "
                                              f"{hints.rewrite(message)}[/red]",
                                              highlight=False)
    return 2


def _record(args: argparse.Namespace, bench: str, parameters: dict[str, Any],
            figures: dict[str, Any]) -> None:
    if not getattr(args, "record", False):
        return
    from rich.console import Console

    from jobs.benchrecord import make_record, write_record

    path = write_record(make_record(bench, parameters, figures))
    Console(stderr=True).print(f"record: {path}", highlight=False)


def main(args: argparse.Namespace) -> int:
    name = f" {args.bench}" if args.bench else ""
    try:
        return _main(args)
    except BenchError as exc:
        return _fail(name, str(exc))


def _main(args: argparse.Namespace) -> int:
    if args.bench is None:
        stages = tuple(s.strip() for s in args.stages.split(",") if s.strip())
        unknown = [s for s in stages if s not in STAGES]
        if unknown:
            return _fail("", f"unknown stage(s) {unknown}; known: {', '.join(STAGES)}")
        report = run_throughput(args.out, args.assets, args.duration, args.interval, stages)
        (args.out / "throughput.json").write_text(json.dumps(report, indent=1))
        _show(args, report, print_throughput)
        _record(args, "throughput", {"assets": args.assets, "duration_s": args.duration,
                                     "interval_s": args.interval, "stages": list(stages)},
                report)
        p = report.get("predictions", {})
        same = p.get("same", True) and all(v for k, v in p.items()
                                           if k.startswith("flink_same_as_"))
        return 0 if same else 1
    if args.bench == "scale":
        from transforms.simulator.scenario import MAX_SENSORS

        sizes = _int_list(args.assets, 1, None)
        if sizes is None:
            return _fail(" scale", f"--assets wants positive integers like 1000,5000, not "
                                   f"{args.assets!r}")
        sensors = None
        if args.sensors is not None:
            sensors = _int_list(args.sensors, 1, MAX_SENSORS)
            if sensors is None:
                return _fail(" scale", f"--sensors wants integers from 1 to {MAX_SENSORS} "
                                       f"(the catalog's sensors per asset), like 2,4,8, not "
                                       f"{args.sensors!r}")
        report = run_scale(args.out, sizes, args.duration, args.interval, sensors)
        _show(args, report, print_scale)
        _record(args, "scale", {"assets": sizes, "sensors": sensors,
                                "duration_s": args.duration, "interval_s": args.interval},
                report)
        return 0
    if args.bench == "history":
        report = run_history(args.assets, args.duration, args.interval, args.window)
        _show(args, report, print_history)
        _record(args, "history", {"assets": args.assets, "duration_s": args.duration,
                                  "interval_s": args.interval, "window_s": args.window},
                report)
        return 0
    if args.bench == "kafka-backlog":
        from jobs.bench_kafka import print_backlog, run_backlog

        sizes = _int_list(args.messages, 1, None)
        if sizes is None:
            return _fail(" kafka-backlog", f"--messages wants positive integers like "
                                           f"200000,2000000, not {args.messages!r}")
        try:
            report = run_backlog(sizes, args.assets, args.interval,
                                 args.max_messages_per_slice, args.out)
        except RuntimeError as exc:
            raise BenchError(str(exc)) from exc
        (args.out / "backlog.json").write_text(json.dumps(report, indent=1))
        _show(args, report, print_backlog)
        _record(args, "kafka-backlog", {"messages": sizes, "assets": args.assets,
                                        "interval_s": args.interval,
                                        "max_messages_per_slice": args.max_messages_per_slice},
                report)
        return 0
    if args.bench == "faults":
        from jobs.bench_faults import BenchFaultsError, print_faults, run_faults

        try:
            report = run_faults(args.assets, args.hours, args.interval,
                                args.max_messages_per_slice, args.kills, args.seed, args.out)
        except (BenchFaultsError, RuntimeError) as exc:
            raise BenchError(str(exc)) from exc
        (args.out / "faults.json").write_text(json.dumps(report, indent=1))
        _show(args, report, print_faults)
        _record(args, "faults", {"assets": args.assets, "hours": args.hours,
                                 "interval_s": args.interval,
                                 "max_messages_per_slice": args.max_messages_per_slice,
                                 "kills": args.kills, "seed": args.seed}, report)
        return 1 if report["failed"] else 0
    if args.bench == "peer":
        from jobs.bench_peer import PeerUnavailable, print_report, run_peer_bench

        twin_args = ([] if args.max_messages_per_slice is None else
                     ["--max-messages-per-slice", str(args.max_messages_per_slice)])
        try:
            report = run_peer_bench(args.assets, args.duration, args.interval, args.window,
                                    args.pairs, args.peers, args.peer_venv, args.out,
                                    twin_args, args.baseline)
        except (PeerUnavailable, RuntimeError) as exc:
            raise BenchError(str(exc)) from exc
        (args.out / "peer.json").write_text(json.dumps(report, indent=1))
        _show(args, report, print_report)
        _record(args, "peer", {"assets": args.assets, "duration_s": args.duration,
                               "interval_s": args.interval, "window_s": args.window,
                               "pairs": args.pairs,
                               "max_messages_per_slice": args.max_messages_per_slice,
                               "baseline": str(args.baseline) if args.baseline else None},
                report)
        return 0
    if args.bench == "fleet":
        report = run_fleet(args.out)
        _show(args, report, print_fleet)
        _record(args, "fleet", {"command": "twin run (defaults)"}, report)
        return 0 if report["summary"]["invariant_ok"] else 1
    if args.bench == "dashboard":
        from jobs import bench_dashboard

        try:
            report = bench_dashboard.run(args.assets, args.windows, args.rate, args.seconds,
                                         args.renders, args.out)
        except bench_dashboard.BenchDashboardError as exc:
            raise BenchError(str(exc)) from exc
        (args.out / "dashboard.json").write_text(json.dumps(report, indent=1))
        _show(args, report, bench_dashboard.print_report)
        _record(args, "dashboard", {"assets": args.assets, "windows": args.windows,
                                    "rate": args.rate, "seconds": args.seconds,
                                    "renders": args.renders}, report)
        return 0
    if args.bench == "sweep":
        from jobs.sweep import sweep

        result = sweep(args)
        _show(args, result["total"], print_sweep)
        _record(args, "sweep", {"seeds": [min(args.seeds), max(args.seeds)],
                                "assets": args.assets, "duration_s": args.duration},
                result["total"])
        return 0
    if args.bench == "report":
        return report_main(args)
    if args.bench == "flink-slots":
        from jobs import bench_flink

        slots = _int_list(args.slots, 1, None)
        if slots is None:
            return _fail(" flink-slots", f"--slots wants positive integers like 1,2, not "
                                         f"{args.slots!r}")
        try:
            report = bench_flink.run(args.assets, args.duration, slots, args.rounds,
                                     args.partitions, args.checkpoint_interval, args.out,
                                     args.bundle_size, args.bundle_time, args.python_mode)
        except bench_flink.BenchFlinkError as exc:
            raise BenchError(str(exc)) from exc
        _show(args, report, bench_flink.print_report)
        _record(args, "flink-slots", {"assets": args.assets, "duration_s": args.duration,
                                      "slots": slots, "rounds": args.rounds,
                                      "partitions": args.partitions,
                                      "checkpoint_interval_s": args.checkpoint_interval,
                                      "bundle_size": args.bundle_size,
                                      "bundle_time_s": args.bundle_time,
                                      "python_mode": args.python_mode},
                report)
        return 0
    if args.bench == "latency":
        return latency_main(args)
    if args.bench == "formats":
        report = run_formats(args.messages)
        _show(args, report, print_formats)
        _record(args, "formats", {"messages": args.messages}, report)
        return 0
    if args.bench in ("fidelity", "optimize"):
        return _whatif_bench(args)
    if args.bench == "tep":
        report = run_tep(args.data, args.scorer, args.out, args.workers, args.through_twin)
        _show(args, report, lambda r: print_tep(r, args.out))
        _record(args, "tep-twin" if args.through_twin else "tep",
                {"files": report["files"], "rows": report["rows"],
                 "columns": report["columns"], "workers": args.workers,
                 **({"window_s": TEP_WINDOW_S} if args.through_twin else {})}, report)
        return 0
    report = run_nab(args.data, args.scorer, args.out, args.workers)
    _show(args, report, lambda r: print_nab(r, args.out))
    _record(args, "nab", {"files": report["files"], "rows": report["rows"],
                          "workers": args.workers}, report)
    return 0


def _seeds(text: str) -> list[int] | None:
    """``"1-3"`` or ``"1,4,7"`` -> seeds; None if not like that."""
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            return list(range(lo, hi + 1)) if lo <= hi else None
        values = [int(x) for x in text.split(",") if x.strip()]
        return values or None
    except ValueError:
        return None


def _whatif_bench(args: argparse.Namespace) -> int:
    from rich.console import Console

    from jobs import fidelity

    seeds = _seeds(args.seeds)
    if seeds is None:
        return _fail(f" {args.bench}", f"--seeds wants a range like 1-3 or a list like 1,4,7, "
                                       f"not {args.seeds!r}")
    err = Console(stderr=True, highlight=False)
    step_test = not args.no_step_test
    args.out.mkdir(parents=True, exist_ok=True)
    params = {"seeds": seeds, "assets": args.assets, "step_test": step_test}
    if args.bench == "fidelity":
        result = fidelity.run_fidelity(seeds, args.assets, step_test, progress=err.print)
        (args.out / "comparisons.json").write_text(json.dumps(result["rows"]))
        _show(args, result["figures"], fidelity.print_fidelity)
        params.update(horizons=list(fidelity.HORIZONS), healthy_at_h=list(
            fidelity.HEALTHY_AT_H), speed_changes=list(fidelity.SPEED_CHANGES),
            load_changes=list(fidelity.LOAD_CHANGES), fleet_hours=fidelity.FLEET_HOURS)
        _record(args, "fidelity", params, result["figures"])
        return 0
    result = fidelity.run_optimize(seeds, args.assets, step_test, progress=err.print)
    (args.out / "cases.json").write_text(json.dumps(result["cases"], indent=1))
    _show(args, result["figures"], lambda f: fidelity.print_optimize(f, result["cases"]))
    params.update(life_factor=fidelity.LIFE_FACTOR, wear_law=True)
    _record(args, "optimize", params, result["figures"])
    return 0


def latency_main(args: argparse.Namespace) -> int:
    from jobs import bench_latency
    from jobs.benchrecord import read_records, results_dir

    loads = None
    try:
        loads = [float(x) for x in args.loads.split(",")]
    except ValueError:
        pass
    if not loads or any(not 0 < x for x in loads):
        return _fail(" latency", f"--loads wants positive fractions like 0.25,0.5,0.9, not "
                                 f"{args.loads!r}")
    capacity, source = args.capacity, "--capacity"
    if capacity is None and args.rate is None:
        found = bench_latency.capacity_from_records(read_records(results_dir()))
        if found is None:
            return _fail(" latency", "no flink-slots record to take the capacity from: pass "
                                     "--capacity MSG_PER_S or --rate R")
        capacity, name = found
        source = f"one-slot messages/s of {name}"
    try:
        report = bench_latency.run(capacity, loads, args.rate, args.assets, args.phase,
                                   args.warmup, args.window, args.allowed_lateness,
                                   args.out_of_orderness, args.watermark_delay,
                                   args.partitions, args.out, capacity_source=source,
                                   bundle_time_s=args.bundle_time,
                                   python_mode=args.python_mode)
    except bench_latency.BenchLatencyError as exc:
        raise BenchError(str(exc)) from exc
    _show(args, report, bench_latency.print_report)
    _record(args, "latency", {"capacity_msg_per_s": capacity, "capacity_source": source,
                              "loads": loads if args.rate is None else None,
                              "rate": args.rate, "assets": args.assets,
                              "phase_s": args.phase, "warmup_s": args.warmup,
                              "window_s": args.window,
                              "allowed_lateness_s": args.allowed_lateness,
                              "out_of_orderness_s": args.out_of_orderness,
                              "watermark_delay_s": args.watermark_delay,
                              "bundle_time_s": args.bundle_time,
                              "python_mode": args.python_mode,
                              "partitions": args.partitions}, report)
    if not report["matched"]:
        print("twin bench latency: no prediction reached twin.predictions: the job ran but "
              "produced nothing (see the TaskManager's log under --out)", file=sys.stderr)
        return 1
    if report["unmatched"] or report["negative"]:
        return 1
    return 0


def _show(args: argparse.Namespace, report: dict[str, Any], printer) -> None:
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        printer(report)


def print_nab(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="NAB v1.1 (58 files, one configuration, labels never read)")
    for col in ("detector", "standard", "low FP", "low FN"):
        table.add_column(col, justify="left" if col == "detector" else "right")
    ours = [report[p]["score"] for p in PROFILES]
    rows = sorted([("twinstream", ours), *PUBLISHED.items()], key=lambda r: -r[1][0])
    for name, scores in rows:
        style = "bold" if name.startswith("twinstream") else None
        table.add_row(name, *(f"{s:.1f}" for s in scores), style=style)
    console = Console()
    console.print(table)
    per_row = report["detector_s"] / max(report["rows"], 1) * 1e6
    console.print(f"{report['rows']:,} rows in {report['files']} files; replay incl. I/O "
                  f"{per_row:.0f} us per row; results in {out / 'results'}, scores in "
                  f"{out / 'scores.json'}", highlight=False)


def print_tep(report: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    s = report["summary"]
    table = Table(title="TEP: 21 faults, one configuration, labels never read")
    for col in ("fault", "FDR %", "delay (min)", "FAR before it %", "AUC"):
        table.add_column(col, justify="right")
    for fault, f in report["per_fault"].items():
        usual = "" if int(fault) not in (3, 9, 15) else " *"
        table.add_row(fault + usual, f"{f['fdr'] * 100:.1f}",
                      "-" if f["delay_min"] is None else str(f["delay_min"]),
                      f"{f['far_prefault'] * 100:.1f}", f"{f['auc']:.3f}")
    console = Console()
    console.print(table)
    per_row = report["detector_s"] / max(report["rows"], 1) * 1e6
    console.print(f"mean FDR, 18 usual faults: {s['mean_fdr_18'] * 100:.1f} % (21 faults "
                  f"{s['mean_fdr_21'] * 100:.1f} %) at FAR {s['far'] * 100:.2f} % "
                  f"(stream_00 alone {s['far_stream_00'] * 100:.2f} %); ROC AUC "
                  f"{s['auc']:.3f}; at FAR 5 %: FDR {s['mean_fdr_at_far_18'] * 100:.1f} % "
                  f"(* = 3, 9, 15, left out of the 18)", highlight=False)
    console.print(f"{report['rows']:,} rows x {report['columns']} columns in "
                  f"{report['files']} streams; replay incl. I/O {per_row:.0f} us per row; "
                  f"results in {out / 'results'}", highlight=False)


def run_formats(messages: int, rounds: int = 5) -> dict[str, Any]:
    """µs per message of :func:`~transforms.normalize.normalize_batch` (batches of 5,000,
    the best of ``rounds`` interleaved rounds) on the built-in vendors' messages and on the
    compressor example's messages written as JSON, CSV lines and plain Avro, each read
    through a format file (docs/examples/compressor)."""
    import io
    import time

    import fastavro
    import numpy as np

    from transforms.formats import parse_format
    from transforms.model import load_model
    from transforms.normalize import generic, normalize_batch
    from transforms.plant import Plant
    from transforms.simulator import Fleet, FleetConfig

    example = REPO / "docs" / "examples" / "compressor"
    model = load_model(example / "compressor.model.yaml")
    now = 1_796_119_200_000
    rng = np.random.default_rng(0)
    rows = [{"device": f"comp-{i % 50}", "t": (now - 86_400_000) // 1000 + i,
             "p_bar": round(7 + rng.normal(), 3), "t_c": round(60 + rng.normal(), 2),
             "vib": round(2 + rng.normal(0, 0.1), 3), "amps": round(40 + rng.normal(), 2)}
            for i in range(messages)]
    values = {k: {"field": k, "unit": u} for k, u in
              (("p_bar", "bar"), ("t_c", "degC"), ("vib", "mm/s"), ("amps", "A"))}
    base = {"version": 1, "asset": "device", "time": {"field": "t", "format": "epoch_s"},
            "values": values}
    avro_schema = {"type": "record", "name": "Comp", "fields": [
        {"name": "device", "type": "string"}, {"name": "t", "type": "long"},
        *({"name": k, "type": "double"} for k in values)]}
    parsed = fastavro.parse_schema(avro_schema)

    def avro(r):
        buf = io.BytesIO()
        fastavro.schemaless_writer(buf, parsed, r)
        return buf.getvalue()

    import tempfile

    cols = ["device", "t", *values]
    sources: dict[str, tuple[list[bytes], Any]] = {}
    tmp = Path(tempfile.mkdtemp(prefix="twin-bench-formats-"))
    (tmp / "comp.avsc").write_text(json.dumps(avro_schema))
    for name, enc, extra, encode in (
            ("json", "json", {}, lambda r: json.dumps(r).encode()),
            ("csv", "csv", {"csv": {"columns": cols}},
             lambda r: ",".join(str(r[c]) for c in cols).encode()),
            ("avro", "avro", {"schema": "comp.avsc"}, avro)):
        fmt = parse_format({"format": f"bench-{name}", "encoding": enc, **base, **extra},
                           str(tmp / f"{name}.yaml"))
        Plant(model, (fmt,)).install()
        adapter = generic.register(fmt, model)
        sources[f"format: {name}, 4 values"] = ([encode(r) for r in rows], adapter.decode)
    fleet = Fleet(FleetConfig(assets=max(3, messages // 720 + 3), duration_s=3600,
                              interval_s=5, seed=1, start_ms=now - 7_200_000,
                              malformed_rate=0.0))
    by_vendor: dict[str, list[bytes]] = {}
    for m in fleet.messages():
        by_vendor.setdefault(m.topic.rsplit(".", 1)[-1], []).append(m.value)
    for vendor, vals in sorted(by_vendor.items()):
        sources[f"vendor: {vendor}, 8 values"] = (vals[:messages], None)
    best = dict.fromkeys(sources, math.inf)
    for _ in range(rounds):  # interleaved: each round times every source once
        for name, (payloads, decode) in sources.items():
            kw = {"decode": decode} if decode is not None else {}
            t0 = time.perf_counter()
            for k in range(0, len(payloads), 5000):
                part = payloads[k:k + 5000]
                _, rejects = normalize_batch(part, [now] * len(part), clock_ms=now, **kw)
                if rejects:
                    raise BenchError(f"{name}: {len(rejects)} messages refused: "
                                     f"{rejects[0][1]}")
            best[name] = min(best[name], (time.perf_counter() - t0) / len(payloads))
    return {"rounds": rounds, "us_per_message": {k: round(v * 1e6, 2) for k, v in best.items()},
            "messages": {k: len(v[0]) for k, v in sources.items()}}


def print_formats(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title="normalization, µs per message (best of interleaved rounds)")
    table.add_column("source")
    table.add_column("µs / message", justify="right")
    for k, v in report["us_per_message"].items():
        table.add_row(k, f"{v:.2f}")
    Console().print(table)


def report_main(args: argparse.Namespace) -> int:
    from jobs.benchrecord import read_records, results_dir
    from jobs.benchreport import render, with_headline

    folder = args.results or results_dir()
    try:
        records = read_records(folder)
    except ValueError as exc:
        return _fail(" report", str(exc))
    if not records:
        return _fail(" report", f"no result records in {folder}: run a bench with --record")
    pages = {args.output: render(records)}
    if args.readme is not None and args.readme.is_file():
        pages[args.readme] = with_headline(args.readme.read_text(), records)
    stale = [path for path, text in pages.items()
             if not path.is_file() or path.read_text() != text]
    if args.check:
        if not stale:
            print(f"{', '.join(map(str, pages))} match the latest records in {folder}")
            return 0
        print(f"{', '.join(map(str, stale))} differ from the latest records in {folder}: "
              f"run twin bench report", file=sys.stderr)
        return 1
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(pages[path])
    from jobs.benchrecord import latest

    scale = latest(records).get("scale")
    if scale is not None:  # the page shows the latest scale record's plot
        (args.output.parent / SCALE_PLOT).parent.mkdir(parents=True, exist_ok=True)
        plot_scale(scale["figures"], args.output.parent / SCALE_PLOT)
    print(f"wrote {', '.join(map(str, stale)) or 'nothing (up to date)'} from "
          f"{len(records)} records in {folder}")
    return 0


# -- the main job and the seed sweep ---------------------------------------------------------

def run_fleet(out: Path) -> dict[str, Any]:
    """``twin run`` on its defaults in a child process (wall time and peak memory of the
    whole job, set-up included), then its evaluation against the ground truth."""
    import resource
    import time

    from jobs.evaluate import evaluate_dir

    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "jobs.cli", "run", "--no-progress",
                           "--out", str(out.resolve())], capture_output=True, text=True,
                          cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchError(f"twin run failed (exit {proc.returncode}): "
                         f"{proc.stderr.strip()[-2000:]}")
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024
    summary = json.loads((out / "summary.json").read_text())
    return {"summary": summary, "evaluation": evaluate_dir(out), "wall_s": round(wall, 1),
            "peak_rss_mb": peak_mb}


def print_fleet(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    s, m = report["summary"], report["evaluation"]
    table = Table(title="the main job (twin run, defaults)", show_header=False)
    for key in ("readings_in", "readings_valid", "dead_letters", "late_readings",
                "duplicate_readings", "windows", "predictions", "anomalies", "drift_events"):
        table.add_row(key, f"{s[key]:,}")
    table.add_row("actions", ", ".join(f"{k} {v}" for k, v in s["actions"].items()))
    for key in ("fault_episodes", "detected_episodes", "recall", "precision",
                "false_alarms_per_asset_day", "median_lead_time_s", "regime_change_alerts"):
        table.add_row(key, str(m.get(key)))
    table.add_row("wall time", f"{report['wall_s']} s (job {s['elapsed_s']} s)")
    table.add_row("peak RSS", f"{report['peak_rss_mb']:,} MB")
    Console().print(table)


def print_sweep(total: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"sweep over {total['seeds']} seeds", show_header=False)
    for key, value in total.items():
        table.add_row(key, str(value))
    Console().print(table)


# -- throughput ----------------------------------------------------------------------------
BENCH_WINDOW_S = 10.0
BENCH_DETECTOR = {"warmup": 12}  # past warm-up within the workload: every stage scores


def _int_list(text: str, low: int, high: int | None) -> list[int] | None:
    """Comma-separated integers, each in ``[low, high]``; ``None`` if any is not (or none
    is given)."""
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        return None
    ok = values and all(low <= v and (high is None or v <= high) for v in values)
    return values if ok else None


def _clean_fleet(assets: int, duration_s: float, interval_s: float, seed: int,
                 sensors: int | None = None):
    """A ``FleetConfig`` whose messages are all valid, on time and sent once."""
    from transforms.simulator import FleetConfig

    return FleetConfig(assets=assets, duration_s=duration_s, interval_s=interval_s, seed=seed,
                       malformed_rate=0.0, dropout_rate=0.0, duplicate_rate=0.0,
                       out_of_order_rate=0.0, late_rate=0.0, sensors=sensors)


def _asset_blocks(values: list[bytes], nows: list[int]):
    """``(asset_id, ReadingBlock)`` of a batch of messages, as the Beam pipeline hands them
    to its twins (:func:`~transforms.normalize.normalize_batch`, then per asset)."""
    from transforms.normalize import normalize_batch

    blocks, _ = normalize_batch(values, nows)
    for block in blocks.values():
        yield from block.by_asset().items()


def write_workload(path: Path, assets: int, duration_s: float, interval_s: float,
                   seed: int = 7, chunk: int = 50_000, sensors: int | None = None
                   ) -> dict[str, Any]:
    """The simulator's messages for a clean fleet, pickled in chunks of ``chunk`` tuples
    ``(topic, key, value, arrival_ms)``; returns counts. ``sensors``: per asset, the first
    that many of its type's sensors (default all)."""
    import pickle

    from transforms.catalog import sensors_of
    from transforms.simulator import Fleet

    cfg = _clean_fleet(assets, duration_s, interval_s, seed, sensors)
    from dataclasses import asdict

    Path(str(path) + ".fleet.json").write_text(json.dumps(asdict(cfg)))  # for Flink's source
    fleet = Fleet(cfg)
    n = values = 0
    sent = {a.asset_id: len(sensors_of(a.asset_type)[:sensors]) for a in fleet.assets}
    with open(path, "wb") as fh:
        batch: list[tuple] = []
        for m in fleet.messages():
            batch.append((m.topic, m.key, m.value, m.arrival_ms))
            values += sent[m.key.decode()]
            if len(batch) == chunk:
                pickle.dump(batch, fh, protocol=5)
                n += len(batch)
                batch = []
        if batch:
            pickle.dump(batch, fh, protocol=5)
            n += len(batch)
    return {"messages": n, "values": values, "assets": assets,
            "sensors_per_asset": round(values / max(n, 1), 2)}


def read_chunks(path: str):
    """The workload file's chunks (lists of messages), in order."""
    import pickle

    with open(path, "rb") as fh:
        while True:
            try:
                yield pickle.load(fh)
            except EOFError:
                return


def read_workload(path: str):
    """Every message of a workload file, one by one (a Beam ``FlatMap`` source)."""
    for chunk in read_chunks(path):
        yield from chunk


def _stage_decode(workload: str, out: str) -> dict[str, Any]:
    import time

    from schemas import wire

    msgs = [m[2] for m in read_workload(workload)]
    t0 = time.perf_counter()
    for v in msgs:
        wire.decode(v)
    return {"seconds": time.perf_counter() - t0}


def _run_beam(workload: str, out: str, transform, batched: bool = False) -> dict[str, Any]:
    import time

    import apache_beam as beam

    from pipelines.beam.runner import apply_state_cache, direct_options

    opts = direct_options()  # (b) and (c) alike
    apply_state_cache(opts)
    t0 = time.perf_counter()
    with beam.Pipeline(options=opts) as p:
        read = read_chunks if batched else read_workload  # lists, as the twin's sources give
        preds = (p | beam.Impulse() | "Read" >> beam.FlatMap(lambda _: read(workload))
                 | transform)
        (preds | beam.Map(lambda r: json.dumps(
            [r["asset_id"], r["window_end_ms"], r["anomaly_score"], r["is_anomaly"]]))
               | beam.io.WriteToText(out, shard_name_template=""))
    return {"seconds": time.perf_counter() - t0}


def _stage_naive(workload: str, out: str) -> dict[str, Any]:
    from pipelines.beam.naive import NaiveTwin

    return _run_beam(workload, out, "Naive" >> NaiveTwin(BENCH_WINDOW_S, BENCH_DETECTOR))


def _stage_twinstream(workload: str, out: str) -> dict[str, Any]:
    import apache_beam as beam

    from pipelines.beam.pipeline import ProcessMessages

    class Twin(beam.PTransform):
        def expand(self, msgs):
            outs = msgs | ProcessMessages(twin_kwargs={
                "window_ms": int(BENCH_WINDOW_S * 1000), "detector": BENCH_DETECTOR})
            return outs["predictions"]

    return _run_beam(workload, out, "Twin" >> Twin(), batched=True)


_FIRST_ELEMENT: dict[str, float] = {}


def _timed_chunks():
    """:class:`~pipelines.flink.sources.RecordedChunks` that notes when the job asked for
    its first chunk: the mini-cluster runs its Python workers in this process, so the
    stage can time the job from its first element (task deployment and the Python
    workers' start are start-up, as (c)'s imports are)."""
    import time

    from pipelines.flink.sources import RecordedChunks

    class TimedChunks(RecordedChunks):
        def flat_map(self, c: int):
            from jobs import bench  # (this class travels by value; the module does not)

            if "t" not in bench._FIRST_ELEMENT:
                bench._FIRST_ELEMENT.update(t=time.perf_counter(), cpu=bench._cpu_seconds())
            yield from super().flat_map(c)

    return TimedChunks


def _stage_flink(workload: str, out: str) -> dict[str, Any]:
    """The Flink job on a local mini-cluster (parallelism 1; its JVM and Python workers
    inherit this process's one core), reading the workload file's chunks as (c) reads them
    (:class:`~pipelines.flink.sources.RecordedChunks`: the simulator source would also
    generate the fleet, work (c) does not do) into the file sink."""
    import shutil
    import time

    from pipelines.flink.job import FlinkJobOptions, run
    from pipelines.flink.sinks import read_json_outputs
    from pipelines.flink.sources import chunk_source
    from transforms.simulator import Fleet, FleetConfig

    fleet = json.loads(Path(workload + ".fleet.json").read_text())
    chunks = sum(1 for _ in read_chunks(workload))
    assets = [a.asset_id for a in Fleet(FleetConfig(**fleet)).assets]

    def source(env):
        return chunk_source(env, _timed_chunks()(workload, chunks, assets), chunks,
                            name="recorded workload")

    out_dir = Path(out).with_suffix(".flink")
    shutil.rmtree(out_dir, ignore_errors=True)
    opts = FlinkJobOptions(source="simulator", fleet=fleet, sinks=["files"],
                           file_outputs=["predictions"],  # what (b) and (c) write
                           out_dir=str(out_dir), parallelism=1,
                           checkpoint_dir=str(out_dir / "_checkpoints"),
                           twin_kwargs={"window_ms": int(BENCH_WINDOW_S * 1000),
                                        "detector": BENCH_DETECTOR})
    _FIRST_ELEMENT.clear()
    t0 = time.perf_counter()
    result = run(opts, source=source)
    end = time.perf_counter()
    wall = end - t0
    # from the first element to the job's end (its last checkpoint and the files'
    # commit included): the JVM's launch, the job's submission, task deployment and the
    # Python workers' start before it are start-up, as (c)'s imports are
    seconds = end - _FIRST_ELEMENT.get("t", t0)
    first = _FIRST_ELEMENT.get("cpu", {})
    cpu = {k: round(v - first.get(k, 0.0), 2) for k, v in _cpu_seconds().items()}
    with open(out, "w") as fh:
        for r in read_json_outputs(out_dir, "predictions"):
            fh.write(json.dumps([r["asset_id"], r["window_end_ms"], r["anomaly_score"],
                                 r["is_anomaly"]]) + "\n")
    return {"seconds": seconds, "wall_s": round(wall, 2),
            "job_net_runtime_s": result.get_net_runtime() / 1000,
            "cpu_s": cpu}  # CPU seconds from the first element: python (workers), jvm


STAGES = {"decode": _stage_decode, "naive": _stage_naive, "twinstream": _stage_twinstream,
          "flink": _stage_flink}


def _warm(workload: str) -> None:
    """What a long-running worker has done once before it sees data: import the engines
    and transforms, and build the schema and unit tables (pint's registry takes ~1 s).
    Stages are timed from here, so the figures are throughput, not process start-up."""
    import apache_beam  # noqa: F401

    import pipelines.beam.naive  # noqa: F401
    import pipelines.beam.pipeline  # noqa: F401
    from transforms.normalize import normalize_batch

    first = next(iter(read_chunks(workload)))[:50]
    normalize_batch([m[2] for m in first], [m[3] for m in first])


def _cpu_seconds() -> dict[str, float]:
    """CPU seconds (user + system) so far of this process (``python``: the mini-cluster's
    Python workers run in it) and of its descendants' JVMs (``jvm``); ``{}`` without
    ``/proc``."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    out: dict[str, float] = {}
    for pid in (os.getpid(), *_descendants()):
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        kind = "python" if pid == os.getpid() else "jvm" if comm == "java" else None
        if kind is not None:
            out[kind] = out.get(kind, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def _descendants() -> set[int]:
    """This process's live descendants' pids (empty without ``/proc``)."""
    return _descendants_of(os.getpid())


def _descendants_of(root: int) -> set[int]:
    """``root``'s live descendants' pids (empty without ``/proc``)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            parents[int(stat.parent.name)] = int(fields[1])
        except (OSError, ValueError, IndexError):
            continue
    tree, frontier = set(), {root}
    while frontier:
        frontier = {pid for pid, ppid in parents.items() if ppid in frontier} - tree
        tree |= frontier
    return tree


def _descendants_peak_kb() -> int:
    """Summed peak RSS (``VmHWM``) of this process's live descendants (Flink's JVM and
    Python workers); 0 where ``/proc`` is not there."""
    total = 0
    for pid in _descendants():
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return total


def _child(name: str, workload: str, out: str, q) -> None:
    import resource

    try:
        _warm(workload)
        cpu0 = _cpu_seconds()
        result = STAGES[name](workload, out)
        result.setdefault("cpu_s", {k: round(v - cpu0.get(k, 0.0), 2)
                                    for k, v in _cpu_seconds().items()})
        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss + _descendants_peak_kb()
        result["peak_rss_mb"] = round(kb / 1024)
        q.put(result)
    except BaseException as exc:  # the parent reports it; never hang the queue
        q.put({"error": f"{type(exc).__name__}: {exc}"})


def run_stage(name: str, workload: Path, out: Path) -> dict[str, Any]:
    """One stage in a fresh child process pinned to one core; its time and peak RSS."""
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    proc = ctx.Process(target=_child, args=(name, str(workload), str(out), q))
    proc.start()
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(proc.pid, {min(os.sched_getaffinity(0))})
        except OSError:
            pass
    import queue

    result = None
    while result is None:  # a child killed outright (OOM, signal) never answers
        try:
            result = q.get(timeout=1.0)
        except queue.Empty:
            if not proc.is_alive():
                raise BenchError(f"stage {name} died (exit code {proc.exitcode}) "
                                 "without a result") from None
    proc.join()
    if "error" in result:
        raise BenchError(f"stage {name} failed: {result['error']}")
    return result


def _predictions(path: Path) -> dict[tuple[str, int], tuple[float, bool]]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    return {(a, int(e)): (float(s), bool(x)) for a, e, s, x in rows}


def state_bytes_per_asset(workload: Path, assets: int = 20) -> int:
    """Mean pickled size of :class:`~transforms.twin.AssetTwin` (what the engines store per
    asset: model state plus the open windows' readings) after the workload, for the
    first ``assets`` assets, fed as the Beam pipeline feeds them (column blocks)."""
    from transforms.twin import AssetTwin

    twins: dict[str, AssetTwin] = {}
    for chunk in read_chunks(str(workload)):
        for asset, b in _asset_blocks([m[2] for m in chunk], [m[3] for m in chunk]):
            twin = twins.get(asset)
            if twin is None:
                if len(twins) >= assets:
                    continue
                twin = twins[asset] = AssetTwin(asset, b.asset_type, window_ms=int(
                    BENCH_WINDOW_S * 1000), detector=BENCH_DETECTOR)
            twin.add_block(b)
    return _mean_pickle(twins.values())


def run_throughput(out: Path, assets: int, duration_s: float, interval_s: float,
                   stages: tuple[str, ...] = tuple(STAGES)) -> dict[str, Any]:
    out.mkdir(parents=True, exist_ok=True)
    workload = out / "workload.pkl"
    report: dict[str, Any] = {"workload": write_workload(workload, assets, duration_s,
                                                         interval_s),
                              "window_s": BENCH_WINDOW_S, "stages": {}}
    n, values = report["workload"]["messages"], report["workload"]["values"]
    for name in stages:
        r = run_stage(name, workload, out / f"{name}.predictions.jsonl")
        r["messages_per_s"] = round(n / r["seconds"])
        cpu = sum(r.get("cpu_s", {}).values())
        if cpu > 0:  # what a core does when it is not shared (the machine may be busy)
            r["messages_per_cpu_s"] = round(n / cpu)
        r["values_per_s"] = round(values / r["seconds"])
        r["seconds"] = round(r["seconds"], 2)
        report["stages"][name] = r
    st = report["stages"]
    if "naive" in st and "twinstream" in st:
        report["speedup_vs_naive"] = round(st["twinstream"]["messages_per_s"]
                                           / st["naive"]["messages_per_s"], 2)
        a = _predictions(out / "naive.predictions.jsonl")
        c = _predictions(out / "twinstream.predictions.jsonl")
        same = a.keys() == c.keys() and all(
            abs(a[k][0] - c[k][0]) <= 1e-9 and a[k][1] == c[k][1] for k in a)
        report["predictions"] = {"naive": len(a), "twinstream": len(c), "same": same}
    if "flink" in st:
        base = "naive" if "naive" in st else "twinstream" if "twinstream" in st else None
        if base is not None:
            a = _predictions(out / f"{base}.predictions.jsonl")
            f = _predictions(out / "flink.predictions.jsonl")
            report.setdefault("predictions", {})["flink"] = len(f)
            report["predictions"]["flink_same_as_" + base] = a.keys() == f.keys() and all(
                abs(a[k][0] - f[k][0]) <= 1e-9 and a[k][1] == f[k][1] for k in a)
    if "flink" in st and "twinstream" in st:  # the Flink job against (c), per core
        report["flink_vs_beam"] = round(st["flink"]["messages_per_s"]
                                        / st["twinstream"]["messages_per_s"], 3)
        if "messages_per_cpu_s" in st["flink"] and "messages_per_cpu_s" in st["twinstream"]:
            report["flink_vs_beam_per_cpu_s"] = round(
                st["flink"]["messages_per_cpu_s"] / st["twinstream"]["messages_per_cpu_s"], 3)
    if "decode" in st and "twinstream" in st:
        report["fraction_of_decode_limit"] = round(st["twinstream"]["messages_per_s"]
                                                   / st["decode"]["messages_per_s"], 3)
    report["state_bytes_per_asset"] = state_bytes_per_asset(workload)
    workload.unlink()
    Path(str(workload) + ".fleet.json").unlink()
    return report


def print_throughput(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    w = report["workload"]
    table = Table(title=f"throughput, one core per stage: {w['assets']} assets, "
                        f"{w['messages']:,} messages ({w['sensors_per_asset']} sensors each), "
                        f"{report['window_s']:g} s windows")
    for col in ("stage", "messages/s", "values/s", "seconds", "peak RSS MB"):
        table.add_column(col, justify="left" if col == "stage" else "right")
    labels = {"decode": "(a) fastavro decode alone", "naive": "(b) per-element Beam",
              "twinstream": "(c) twinstream Beam", "flink": "(d) twinstream Flink (mini)"}
    for name, r in report["stages"].items():
        table.add_row(labels[name], f"{r['messages_per_s']:,}", f"{r['values_per_s']:,}",
                      f"{r['seconds']}", f"{r['peak_rss_mb']:,}")
    console = Console()
    console.print(table)
    for key in ("speedup_vs_naive", "fraction_of_decode_limit", "flink_vs_beam",
                "flink_vs_beam_per_cpu_s", "state_bytes_per_asset"):
        if key in report:
            console.print(f"{key}: {report[key]}")
    if "predictions" in report:
        p = report["predictions"]
        if "same" in p:
            console.print(f"predictions (b) {p['naive']:,} vs (c) {p['twinstream']:,}: "
                          + ("identical" if p["same"] else "[red]DIFFERENT[/red]"))
        for key, same in p.items():
            if key.startswith("flink_same_as_"):
                console.print(f"predictions (d) {p['flink']:,} vs {key[14:]}: "
                              + ("identical" if same else "[red]DIFFERENT[/red]"))


# -- scale ---------------------------------------------------------------------------------
def run_scale(out: Path, sizes: list[int], duration_s: float, interval_s: float,
              sensors: list[int] | None = None) -> dict[str, Any]:
    """The twinstream stage for each fleet size and sensors per asset (default: all the
    catalog's): messages/s, µs per message, peak RSS, state per asset; writes
    ``scale.json`` and ``scale.png`` (against assets, and against sensors when more than
    one count is given)."""
    from transforms.simulator.scenario import MAX_SENSORS

    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for k in sensors or [MAX_SENSORS]:
        for assets in sizes:
            workload = out / "workload.pkl"
            w = write_workload(workload, assets, duration_s, interval_s, sensors=k)
            r = run_stage("twinstream", workload, out / "twinstream.predictions.jsonl")
            runs.append({"assets": assets, "sensors": k, "messages": w["messages"],
                         "values": w["values"], "seconds": round(r["seconds"], 2),
                         "messages_per_s": round(w["messages"] / r["seconds"]),
                         "values_per_s": round(w["values"] / r["seconds"]),
                         "us_per_message": round(r["seconds"] / w["messages"] * 1e6, 1),
                         "peak_rss_mb": r["peak_rss_mb"],
                         "state_bytes_per_asset": state_bytes_per_asset(workload)})
            workload.unlink()
            Path(str(workload) + ".fleet.json").unlink()
    report = {"duration_s": duration_s, "interval_s": interval_s, "window_s": BENCH_WINDOW_S,
              "runs": runs, "plot": str(out / "scale.png")}
    (out / "scale.json").write_text(json.dumps(report, indent=1))
    plot_scale(report, out / "scale.png")
    return report


def plot_scale(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    runs = report["runs"]
    counts = sorted({r["sensors"] for r in runs})
    sizes = sorted({r["assets"] for r in runs})
    panels = [p for p, n in (("assets", len(sizes)), ("sensors", len(counts))) if n > 1]
    panels = panels or ["assets"]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 3.6), dpi=110,
                             squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "assets":  # messages/s and peak RSS against assets, a line per count
            ax2 = ax.twinx()
            for k in counts:
                rs = [r for r in runs if r["sensors"] == k]
                x = [r["assets"] for r in rs]
                label = f"{k} sensors" if len(counts) > 1 else "messages/s (one core)"
                line, = ax.plot(x, [r["messages_per_s"] for r in rs], "o-", label=label)
                ax2.plot(x, [r["peak_rss_mb"] for r in rs], "s--", color=line.get_color(),
                         alpha=0.6)
            ax.set_xlabel("assets")
            ax.set_ylabel("messages/s (solid)")
            ax2.set_ylabel("peak RSS, MB (dashed)")
            ax2.set_ylim(bottom=0)
        else:  # cost per message against sensors per asset, at the smallest fleet
            rs = [r for r in runs if r["assets"] == sizes[0]]
            ax.plot([r["sensors"] for r in rs], [r["us_per_message"] for r in rs], "o-",
                    color="tab:green", label=f"{sizes[0]:,} assets")
            ax.set_xlabel("sensors per asset")
            ax.set_ylabel("µs per message (one core)")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"twinstream Beam pipeline, DirectRunner: {report['duration_s']:g} s of "
                 f"event time at {report['interval_s']:g} s", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def print_scale(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"twinstream on one core: {report['duration_s']:g} s of event time, "
                        f"samples every {report['interval_s']:g} s, "
                        f"{report['window_s']:g} s windows")
    for col in ("assets", "sensors", "messages", "msg/s", "values/s", "µs/msg", "RSS MB",
                "state B/asset"):
        table.add_column(col, justify="right")
    for r in report["runs"]:
        table.add_row(f"{r['assets']:,}", str(r["sensors"]), f"{r['messages']:,}",
                      f"{r['messages_per_s']:,}", f"{r['values_per_s']:,}",
                      f"{r['us_per_message']:g}", f"{r['peak_rss_mb']:,}",
                      f"{r['state_bytes_per_asset']:,}")
    console = Console()
    console.print(table)
    console.print(f"plot: {report['plot']}", highlight=False)


# -- history -------------------------------------------------------------------------------
HISTORY_MARKS_H = (1, 6, 24, 24 * 7)  # where the summary's spans of event time end (hours)


def run_history(assets: int, duration_s: float, interval_s: float, window_s: float,
                seed: int = 7) -> dict[str, Any]:
    """The twins' cost per window and pickled size per asset as their history grows.

    A clean fleet's messages go through :func:`~transforms.normalize.normalize_batch` and
    :class:`~transforms.twin.AssetTwin` in this process, no engine (a window's work is the
    same in every engine: features, detector, health, policy, records). Each call of a
    twin is timed and its time shared among the windows it closed (a call that closes
    none only buffers: not counted), summarized per span of event time (the first hour,
    up to 6 h, up to a day, ...). A twin's cost per window is not constant: some of its
    models keep statistics of its whole history.
    """
    import time

    from transforms.simulator import Fleet
    from transforms.twin import FEATURES, AssetTwin

    log: list[tuple[int, float]] = []  # (window end, seconds)

    def timed(call, *args):
        t = time.perf_counter()
        outputs = call(*args)
        seconds = time.perf_counter() - t
        ends = [r["window_end_ms"] for tag, r in outputs if tag == FEATURES]
        log.extend((e, seconds / len(ends)) for e in ends)

    cfg = _clean_fleet(assets, duration_s, interval_s, seed)
    ends_s = [h * 3600 for h in HISTORY_MARKS_H if h * 3600 < duration_s] + [duration_s]
    sizes: list[int] = []  # mean pickled twin at each span end
    twins: dict[str, Any] = {}
    window_ms = int(window_s * 1000)
    t0 = time.perf_counter()
    for _, chunk in Fleet(cfg).message_chunks():
        for asset, b in _asset_blocks([m.value for m in chunk], [m.arrival_ms for m in chunk]):
            twin = twins.get(asset)
            if twin is None:
                twin = twins[asset] = AssetTwin(asset, b.asset_type, window_ms=window_ms)
            timed(twin.add_block, b)
        reached_s = (chunk[-1].arrival_ms - cfg.start_ms) / 1000 if chunk else 0
        while len(sizes) < len(ends_s) - 1 and reached_s >= ends_s[len(sizes)]:
            sizes.append(_mean_pickle(twins.values()))
    for twin in twins.values():
        timed(twin.flush)
    while len(sizes) < len(ends_s):  # (marks the last messages did not quite reach)
        sizes.append(_mean_pickle(twins.values()))
    seconds = time.perf_counter() - t0
    spans, start = [], 0.0
    for end, size in zip(ends_s, sizes, strict=True):
        lo, hi = cfg.start_ms + start * 1000, cfg.start_ms + end * 1000
        cost = [s for e, s in log if lo < e <= hi]
        spans.append({"from_h": round(start / 3600, 2), "to_h": round(end / 3600, 2),
                      "windows": len(cost),
                      "us_per_window": round(sum(cost) / len(cost) * 1e6, 1) if cost else None,
                      "state_bytes_per_asset": size})
        start = end
    return {"assets": assets, "duration_s": duration_s, "interval_s": interval_s,
            "window_s": window_s, "windows": len(log), "seconds": round(seconds, 1),
            "spans": spans}


def _mean_pickle(twins) -> int:
    """Mean pickled size of the twins (what an engine stores per asset)."""
    import pickle

    twins = list(twins)
    return int(sum(len(pickle.dumps(t)) for t in twins) / max(len(twins), 1))


def print_history(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"the twins' work per window as history grows: {report['assets']} "
                        f"assets, {report['interval_s']:g} s samples, "
                        f"{report['window_s']:g} s windows, one process, no engine")
    for col in ("event time", "windows", "µs per window", "state per asset (at the end)"):
        table.add_column(col, justify="left" if col == "event time" else "right")
    for s in report["spans"]:
        table.add_row(f"{s['from_h']:g}–{s['to_h']:g} h", f"{s['windows']:,}",
                      "" if s["us_per_window"] is None else f"{s['us_per_window']:,}",
                      f"{s['state_bytes_per_asset']:,} B")
    Console().print(table)

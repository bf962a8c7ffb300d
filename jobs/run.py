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

``--source kafka`` reads the raw topics instead, from where the last run stopped, in
slices each committed with a signed state file (:mod:`jobs.kafka_run`); ``--unbounded``
reads them as a stream.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jobs.kafka_run import DEFAULT_SLICE, DEFAULT_SLICE_BYTES
from jobs.options import (
    add_fleet_args,
    add_plant_args,
    add_twin_args,
    byte_size,
    fleet_config_from,
    non_negative_duration,
    non_negative_int,
    plant_from,
    positive_int,
    twin_kwargs_from,
)
from pipelines import progress
from pipelines.kafka.offsets import ON_OFFSET_RESET
from transforms.shards import DEFAULT_SHARDS

if TYPE_CHECKING:
    from apache_beam.options.pipeline_options import PipelineOptions

COUNTERS = (
    "readings_in", "readings_valid", "dead_letters", "late_readings", "duplicate_readings",
    "windows", "predictions", "anomalies", "drift_events", "evicted_assets",
)


def _shards(args: argparse.Namespace) -> int:
    """``--shards``, or its default: per asset for a stream, else DEFAULT_SHARDS."""
    if args.shards is not None:
        return args.shards
    return 0 if getattr(args, "unbounded", False) else DEFAULT_SHARDS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_fleet_args(parser)
    parser.add_argument("--out", default="out/run", help="output folder (default out/run)")
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    parser.add_argument("--max-dead-share", type=float, default=0.9, metavar="SHARE",
                        help="fail the run (exit 1) when a source's dead letters reach this "
                             "share of its messages: it cannot be read (default 0.9)")
    parser.add_argument("--shards", type=non_negative_int, default=None,
                        help=f"state keys the twins are spread over: a runner runs at "
                             f"most this many twin workers, and each shard's assets are "
                             f"computed together; 0: one key per asset (default "
                             f"{DEFAULT_SHARDS}; with --unbounded 0, since a stream's "
                             f"small bundles would rewrite a whole shard per message). "
                             f"A running --unbounded job keeps its value")
    parser.add_argument("--source", choices=("simulator", "kafka"), default="simulator",
                        help="simulator (default): the built-in fleet; kafka: the raw "
                             "topics up to their end offsets now, continuing from the "
                             "state file")
    add_twin_args(parser)
    add_plant_args(parser)
    from pipelines.kafka.config import add_kafka_args

    add_kafka_args(parser)
    g = parser.add_argument_group("kafka source")
    g.add_argument("--group-id", default="twinstream",
                   help="consumer group whose offsets are committed after each run")
    g.add_argument("--topics", help="comma-separated raw topics (default twin.raw.<vendor>)")
    g.add_argument("--state-file",
                   help="twins + offsets between runs, signed with the HMAC key (default "
                        "OUT/twin-state.pkl)")
    g.add_argument("--hmac-key-file",
                   help="key that signs setpoint commands and the state file")
    g.add_argument("--on-offset-reset", choices=ON_OFFSET_RESET, default="fail",
                   help="when stored offsets do not fit the broker (it was reset, the topic "
                        "recreated, or retention deleted unread data): fail (default: stop "
                        "and say which), earliest (read what the broker has from its "
                        "start) or latest (skip to its end)")
    g.add_argument("--max-messages-per-slice", type=positive_int, default=DEFAULT_SLICE,
                   metavar="N",
                   help=f"read the backlog in slices of at most N messages, each run "
                        f"through the twin and committed with its state; memory follows N, "
                        f"not the backlog (default {DEFAULT_SLICE})")
    g.add_argument("--max-bytes-per-slice", type=byte_size, default=DEFAULT_SLICE_BYTES,
                   metavar="SIZE",
                   help=f"cut a slice shorter when its messages weigh more than this (e.g. "
                        f"64MiB; 0: no limit; default {DEFAULT_SLICE_BYTES >> 20}MiB, about "
                        f"{DEFAULT_SLICE} typical messages)")
    g.add_argument("--max-messages", type=positive_int, default=None, metavar="N",
                   help="read at most N messages in this run, the rest in the next "
                        "(default: everything there is now)")
    g.add_argument("--state-ttl", type=non_negative_duration, default="7d",
                   metavar="DURATION",
                   help="forget the twins of assets not seen for this long in event time "
                        "(their open windows are closed and their last state written "
                        "first); 0: never (default 7d)")
    g.add_argument("--trust-unsigned-state", action="store_true",
                   help="load a state file an older twinstream wrote without a signature "
                        "(it holds pickles: only one you wrote and nobody else could "
                        "change) and store it signed")
    g.add_argument("--unbounded", action="store_true",
                   help="keep reading as a stream (for runners that drive watermarks, e.g. "
                        "--runner=FlinkRunner or DataflowRunner; the runner's checkpoints "
                        "then hold twins and offsets, no state file is used)")


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


def _options(beam_args: list[str]) -> PipelineOptions:
    """The run's pipeline options (the DirectRunner unless ``--runner`` says otherwise),
    its state cache sized from them."""
    from apache_beam.options.pipeline_options import PipelineOptions

    from pipelines.beam.runner import apply_state_cache, direct_options

    if any(a.startswith("--runner") for a in beam_args):
        options = PipelineOptions(beam_args)
    else:
        options = direct_options(*beam_args)
    apply_state_cache(options)
    return options


def _execute(build, options: PipelineOptions, expected: int, show: bool):
    import apache_beam as beam

    def execute():
        p = beam.Pipeline(options=options)
        build(p)
        result = p.run()
        result.wait_until_finish()
        return result

    return _with_progress(expected, execute, enabled=show)


def _summarize(result, out: Path, elapsed: float, extra: dict[str, Any]) -> dict[str, Any]:
    summary = _metrics(result) if result is not None else {
        **dict.fromkeys(COUNTERS, 0), "actions": {}, "dead_letter_reasons": {}}
    summary.update(extra)
    summary.update({
        "elapsed_s": round(elapsed, 2),
        "readings_per_s": round(summary["readings_in"] / elapsed, 1) if elapsed else None,
        "invariant_ok": summary["readings_in"]
        == summary["readings_valid"] + summary["dead_letters"],
        "out": str(out),
    })
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


def run(args: argparse.Namespace, beam_args: list[str]) -> dict[str, Any]:
    """Run the job; returns the summary (also written to ``OUT/summary.json``). The output
    folder is held for the run (another run into it is refused) and the temporary
    folders of killed runs in it are removed first (:func:`~pipelines.beam.sinks.
    claim_out_dir`)."""
    from pipelines.beam.sinks import claim_out_dir

    with claim_out_dir(args.out):
        return _run(args, beam_args)


def _run(args: argparse.Namespace, beam_args: list[str]) -> dict[str, Any]:
    if args.source == "kafka":
        return run_kafka(args, beam_args)
    from pipelines.beam.pipeline import ProcessMessages, WriteOutputs
    from pipelines.beam.sources import ReadSimulator
    from transforms.simulator import Fleet

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    config = fleet_config_from(args)
    fleet = Fleet(config)
    plant = plant_from(args)
    (out / "ground_truth.json").write_text(json.dumps(fleet.ground_truth(), indent=1))
    progress.reset()
    t0 = time.perf_counter()

    def build(p):
        outputs = (
            p
            | "ReadSimulator" >> ReadSimulator(config)
            | "ProcessMessages" >> ProcessMessages(twin_kwargs=twin_kwargs_from(args),
                                                   shards=_shards(args), plant=plant)
        )
        outputs | "WriteOutputs" >> WriteOutputs(str(out))

    expected = int(args.assets * args.duration / args.interval)
    result = _execute(build, _options(beam_args), expected, not args.no_progress)
    return _summarize(result, out, time.perf_counter() - t0, {
        "source": "simulator", "assets": args.assets, "duration_s": args.duration,
        "seed": args.seed})


def run_kafka(args: argparse.Namespace, beam_args: list[str]) -> dict[str, Any]:
    """Read the raw topics up to the end offsets present now, in slices, each committed
    with its state (:mod:`jobs.kafka_run`); ``--unbounded``: as a stream."""
    from jobs.kafka_run import BoundedKafkaRun, run_bounded
    from pipelines.kafka.config import config_from_args, twin_settings
    from pipelines.kafka.secrets import command_signer
    from pipelines.kafka.serde import redact_url, serde_from_args
    from pipelines.kafka.topics import OUTPUT_TOPICS, raw_topics

    out = Path(args.out).resolve()
    cfg = config_from_args(args)
    settings = twin_settings(args.kafka_config, args.kafka_overrides)
    secret = command_signer(args.hmac_key_file, settings)  # key + command validity
    serde = serde_from_args(args, settings)
    for _, schema in OUTPUT_TOPICS.values():  # a registry that cannot answer fails here
        serde.schema_id(schema)
    registry = {"schema_registry": redact_url(serde.url)} if hasattr(serde, "url") else {}
    if args.unbounded:
        out.mkdir(parents=True, exist_ok=True)
        return run_kafka_unbounded(args, beam_args, cfg, secret, out, serde, registry)
    plant = plant_from(args)
    return run_bounded(BoundedKafkaRun(
        out=out, config=cfg, key=secret.secret, signer=secret,
        topics=args.topics.split(",") if args.topics else (
            list(plant.topics) if plant is not None and plant.topics else raw_topics()),
        group_id=args.group_id, state_path=args.state_file,
        on_offset_reset=args.on_offset_reset,
        max_messages_per_slice=args.max_messages_per_slice,
        max_bytes_per_slice=args.max_bytes_per_slice or None, max_messages=args.max_messages,
        state_ttl_ms=int(args.state_ttl * 1000),
        trust_unsigned_state=args.trust_unsigned_state, twin_kwargs=twin_kwargs_from(args),
        shards=_shards(args), serde=serde, plant=plant, show_progress=not args.no_progress,
        extra=registry), beam_args)


def run_kafka_unbounded(args, beam_args, cfg, secret, out: Path, serde,
                        registry: dict[str, str]) -> dict[str, Any]:
    """The same pipeline as a stream: partitions read without end, windows closed by the
    runner's watermark (and each asset's data watermark), outputs to Kafka only. Runs
    until the runner cancels it."""
    import apache_beam as beam
    from apache_beam.options.pipeline_options import StandardOptions

    from pipelines.beam.kafka import ReadFromKafka, plan_reads
    from pipelines.beam.pipeline import ProcessMessages, WriteKafkaOutputs
    from pipelines.kafka.topics import OUTPUT_TOPICS, ensure_topics, raw_topics

    plant = plant_from(args)
    topics = args.topics.split(",") if args.topics else (
        list(plant.topics) if plant is not None and plant.topics else raw_topics())
    ensure_topics(cfg, topics)
    ensure_topics(cfg, [t for t, _ in OUTPUT_TOPICS.values()])
    plan = plan_reads(cfg, topics, args.group_id, on_offset_reset=args.on_offset_reset,
                      bounded=False,
                      source=f"consumer group {args.group_id!r}'s committed offsets").ranges
    options = _options(beam_args)
    options.view_as(StandardOptions).streaming = True
    t0 = time.perf_counter()
    p = beam.Pipeline(options=options)
    outputs = (
        p
        | "ReadKafka" >> ReadFromKafka(cfg, plan, unbounded=True,
                                       max_out_of_orderness_ms=int(args.out_of_orderness * 1000))
        | "ProcessMessages" >> ProcessMessages(twin_kwargs=twin_kwargs_from(args),
                                               normalize_kwargs={"serde": serde},
                                               shards=_shards(args), plant=plant)
    )
    outputs | "WriteKafka" >> WriteKafkaOutputs(cfg, secret, serde)
    result = p.run()
    result.wait_until_finish()
    return _summarize(result, out, time.perf_counter() - t0, {
        "source": "kafka", "unbounded": True, "bootstrap_servers": cfg["bootstrap.servers"],
        **registry})

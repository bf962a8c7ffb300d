"""The PyFlink job's entry point and the flags of ``twin flink run`` / ``twin flink submit``.

``flink run -py jobs/flink_job.py --options OPTIONS.json`` is what a cluster executes
(``twin flink submit`` writes the options file; secrets stay in files, never in argv).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from jobs.options import (
    add_fleet_args,
    add_plant_args,
    add_twin_args,
    fleet_config_from,
    parse_duration,
    plant_from,
    positive_int,
    twin_kwargs_from,
)

ENTRY = Path(__file__).resolve()
PYTHON_MODES = ("process", "thread")  # --python-mode: Flink's default first


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of the job, shared by ``twin flink run`` and ``twin flink submit``."""
    parser.add_argument("--source", choices=("simulator", "kafka"), default="simulator",
                        help="simulator (default): the built-in fleet, bounded; kafka: the "
                             "raw topics, as a stream (or --bounded)")
    parser.add_argument("--sink", default=None,
                        help="comma-separated: files, kafka (default: files for the "
                             "simulator source, kafka for the kafka source)")
    parser.add_argument("--out", default="out/flink",
                        help="folder of the JSON-lines outputs (files sink; default out/flink)")
    add_fleet_args(parser)
    add_twin_args(parser)
    add_plant_args(parser)
    from pipelines.kafka.config import add_kafka_args

    add_kafka_args(parser)
    k = parser.add_argument_group("kafka source")
    k.add_argument("--topics", help="comma-separated raw topics (default twin.raw.<vendor>)")
    k.add_argument("--group-id", default="twinstream-flink",
                   help="consumer group whose committed offsets a new job starts from")
    k.add_argument("--bounded", action="store_true",
                   help="stop at the offsets that are the latest when the job starts")
    k.add_argument("--hmac-key-file", help="key that signs setpoint commands")
    e = parser.add_argument_group("flink")
    e.add_argument("--parallelism", type=positive_int, default=None,
                   help="operator parallelism (default: the cluster's / the machine's)")
    e.add_argument("--checkpoint-interval", type=parse_duration, default="10s",
                   help="how often state and offsets are checkpointed (default 10s)")
    e.add_argument("--aligned-checkpoints", action="store_true",
                   help="checkpoint barriers wait behind the records queued between "
                        "operators (default: unaligned, the barrier overtakes them and they "
                        "are stored with the checkpoint, so a backpressured job still "
                        "checkpoints in about a second)")
    e.add_argument("--watermark-delay", type=parse_duration, default="30s",
                   help="the engine watermark trails arrival time by this much; windows of "
                        "quiet assets close when it passes (default 30s, keep it above "
                        "--out-of-orderness so active assets close windows on their data)")
    e.add_argument("--idleness", type=parse_duration, default="30s",
                   help="a source split quiet this long stops holding back the "
                        "watermark (default 30s)")
    e.add_argument("--state-cache-size", type=positive_int, default=30_000,
                   help="keyed-state values each Python worker keeps unpickled, three per "
                        "asset (default 30000: 10,000 assets a worker; Flink's own default, "
                        "1000, makes every reading fetch its twin from the JVM beyond ~330)")
    e.add_argument("--bundle-size", type=positive_int, default=100_000,
                   help="the most elements a Python worker's bundle holds (a bundle also "
                        "ends after --bundle-time): each ends with a state write per asset "
                        "it touched (default 100000; Flink's own, 1000, halves the job's "
                        "throughput with 1,000 assets)")
    e.add_argument("--bundle-time", type=parse_duration, default="100ms",
                   help="the longest a Python worker's bundle stays open: a Python "
                        "operator passes its outputs and the watermark on when its bundle "
                        "ends, so this bounds the latency each adds (default 100ms; "
                        "Flink's own, 1s, adds seconds to every prediction)")
    e.add_argument("--python-mode", choices=PYTHON_MODES, default="process",
                   help="where the Python functions run: process (default), a Python "
                        "worker fed in bundles (--bundle-time bounds each operator's wait); "
                        "or thread, inside the TaskManager's JVM, each element answered at "
                        "once: far lower latency, but see docs/flink.md before using it")
    e.add_argument("--kafka-jars", default=None,
                   help="the Kafka connector jars, os.pathsep-separated (default: those "
                        "`make setup` fetched)")
    e.add_argument("--job-name", default="twinstream", help="Flink job name")


def options_from_args(args: argparse.Namespace):
    """:class:`~pipelines.flink.job.FlinkJobOptions` of parsed flags (Kafka settings and
    the fleet are resolved here, once, so every worker agrees)."""
    from dataclasses import asdict

    from pipelines.flink.job import FlinkJobOptions

    sinks = (args.sink.split(",") if args.sink else
             ["files"] if args.source == "simulator" else ["kafka"])
    bad = set(sinks) - {"files", "kafka"}
    if bad:
        raise ValueError(f"unknown sink(s) {', '.join(sorted(bad))}: use files and/or kafka")
    opts = FlinkJobOptions(
        source=args.source, sinks=sinks, out_dir=str(Path(args.out).resolve()),
        parallelism=args.parallelism,
        checkpoint_interval_ms=int(args.checkpoint_interval * 1000),
        unaligned_checkpoints=not args.aligned_checkpoints,
        watermark_delay_ms=int(args.watermark_delay * 1000),
        idleness_ms=int(args.idleness * 1000), state_cache_size=args.state_cache_size,
        bundle_size=args.bundle_size, bundle_time_ms=max(1, int(args.bundle_time * 1000)),
        python_mode=args.python_mode,
        twin_kwargs=twin_kwargs_from(args), job_name=args.job_name, group_id=args.group_id)
    plant = plant_from(args)  # validated here: a bad file fails before submitting
    if plant is not None:
        opts.model_files = [str(Path(p).resolve()) for p in args.model or []]
        opts.format_files = [str(Path(p).resolve()) for p in args.format or []]
    if args.source == "simulator":
        opts.fleet = asdict(fleet_config_from(args))
    if args.source == "kafka" or "kafka" in sinks:
        from pipelines.flink.jars import kafka_jars
        from pipelines.kafka.config import config_from_args, twin_settings
        from pipelines.kafka.serde import REGISTRY_PREFIX, registry_conf
        from pipelines.kafka.topics import raw_topics

        opts.kafka = config_from_args(args)
        settings = twin_settings(args.kafka_config, args.kafka_overrides)
        opts.topics = args.topics.split(",") if args.topics else (
            list(plant.topics) if plant is not None and plant.topics else raw_topics())
        if args.source == "kafka" and not args.bounded:
            from pipelines.kafka.topics import ensure_topics

            ensure_topics(opts.kafka, opts.topics)  # a stream waits for data on them
        if args.source == "kafka" and args.bounded:
            from pipelines.beam.kafka import plan_partitions

            plan = plan_partitions(opts.kafka, opts.topics, opts.group_id)
            opts.stop_offsets = {f"{r.topic}/{r.partition}": r.stop for r in plan}
        opts.schema_registry_url = (args.schema_registry_url
                                    or settings.get(REGISTRY_PREFIX + "url"))
        opts.registry_conf = registry_conf(settings)
        opts.jars = [str(p) for p in kafka_jars(
            args.kafka_jars.split(os.pathsep) if args.kafka_jars else None)]
        if "kafka" in sinks:
            from pipelines.kafka.secrets import command_signer

            # the same choice as the Beam path, made once, here: the job signs with it
            # wherever it runs (a key file by path, any other key itself; the options
            # file is private)
            signer = command_signer(args.hmac_key_file, settings)
            opts.command_validity_ms = signer.validity_ms
            if args.hmac_key_file:
                opts.hmac_key_file = str(Path(args.hmac_key_file).resolve())
            else:
                opts.hmac_key = signer.secret.decode()
    return opts


def count_outputs(out_dir: str | Path) -> dict[str, Any]:
    """Records per output of a files-sink run, and the dead letters by reason."""
    from collections import Counter

    from pipelines.flink.job import OUTPUTS
    from pipelines.flink.sinks import read_json_outputs

    counts: dict[str, Any] = {}
    for name in OUTPUTS:
        records = read_json_outputs(out_dir, name)
        counts[name] = len(records)
        if name == "dead_letters":
            counts["dead_letter_reasons"] = dict(sorted(Counter(
                r["reason"] for r in records).items()))
        if name == "actions":
            counts["actions_by_kind"] = dict(sorted(Counter(
                r["kind"] for r in records).items()))
    return counts


def run_local(args: argparse.Namespace) -> dict[str, Any]:
    """``twin flink run``: the job on a local mini-cluster in this process."""
    import json

    from pipelines.flink.job import run

    opts = options_from_args(args)
    out = Path(opts.out_dir)
    if opts.checkpoint_dir is None:  # the mini-cluster's in-memory default caps at 5 MB
        opts.checkpoint_dir = str(out / "_checkpoints")
    if "files" in opts.sinks:
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob("*/*.jsonl"):
            stale.unlink()
    if opts.source == "simulator":
        from transforms.simulator import Fleet, FleetConfig

        out.mkdir(parents=True, exist_ok=True)
        truth = Fleet(FleetConfig(**opts.fleet)).ground_truth()
        (out / "ground_truth.json").write_text(json.dumps(truth, indent=1))
    t0 = time.perf_counter()
    run(opts)
    elapsed = time.perf_counter() - t0
    summary: dict[str, Any] = {"engine": "flink (local mini-cluster)", "source": opts.source,
                               "sinks": opts.sinks, "elapsed_s": round(elapsed, 2)}
    if "files" in opts.sinks:
        summary["out"] = str(out)
        summary.update(count_outputs(out))
    if opts.source == "simulator":
        n = sum(truth["messages"].values())
        summary["messages"] = n
        summary["messages_per_s"] = round(n / elapsed, 1)
    if "files" in opts.sinks:
        (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return summary


if __name__ == "__main__":  # what `flink run -py jobs/flink_job.py --options F` executes
    from pipelines.flink.job import main

    sys.exit(main())

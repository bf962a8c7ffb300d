"""``twin flink ...``: the twin on a real Flink cluster.

``twin flink cluster start|stop|status`` runs a standalone Flink cluster (a JobManager and
one TaskManager, from the pip-installed ``apache-flink``) on 127.0.0.1, in the background,
with its configuration, logs and checkpoints under ``<state dir>/flink`` (``--run-dir``).
``start`` prints the REST URL (the web UI too). See :mod:`pipelines.flink.cluster`.

Each ``twin flink`` action is one sub-parser here whose ``flink_func`` default is called
by :func:`main`; adding ``twin flink submit`` is one ``add_parser`` plus its function.
Errors are one red line on stderr and exit code 2; ``status`` of no cluster exits 1.
"""

from __future__ import annotations

import argparse
import json
import time

from rich.console import Console
from rich.markup import escape

from jobs import hints
from pipelines.flink import cluster as flink_cluster


def _fail(message: str) -> int:
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    err.print(f"[red]twin flink: {escape(hints.rewrite(message))}[/red]")
    return 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="flink_command", required=True)
    p_cluster = sub.add_parser("cluster", help="a standalone Flink cluster on this machine")
    add_cluster_arguments(p_cluster)
    p_cluster.set_defaults(flink_func=cluster_main)
    from jobs.flink_job import add_job_arguments

    p_run = sub.add_parser("run", help="run the twin job on a local Flink mini-cluster")
    add_job_arguments(p_run)
    p_run.set_defaults(flink_func=run_main)
    p_submit = sub.add_parser(
        "submit", help="submit the twin job to the cluster of `twin flink cluster start`")
    add_job_arguments(p_submit)
    p_submit.add_argument("--wait", action="store_true",
                          help="wait until the job ends (bounded sources) and print counts")
    p_submit.add_argument("--timeout", type=float, default=3600.0,
                          help="seconds --wait waits (default 3600)")
    p_submit.set_defaults(flink_func=submit_main)
    p_cancel = sub.add_parser("cancel", help="cancel a job on the cluster (a streaming job "
                                             "runs until cancelled)")
    p_cancel.add_argument("job_id", help="the id `twin flink submit` printed")
    p_cancel.set_defaults(flink_func=cancel_main)


def main(args: argparse.Namespace) -> int:
    return args.flink_func(args)


# -- twin flink cluster start|stop|status -----------------------------------------------

def add_cluster_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="cluster_command", required=True)
    p_start = sub.add_parser("start", help="start a JobManager and a TaskManager (background)")
    p_start.add_argument("--slots", type=int, default=flink_cluster.DEFAULT_SLOTS,
                         help="task slots of the TaskManager (default "
                              f"{flink_cluster.DEFAULT_SLOTS})")
    p_start.add_argument("--rest-port", type=int, default=None,
                         help=f"REST/web UI port (default {flink_cluster.DEFAULT_REST_PORT} "
                              "if free, else any free port)")
    p_start.add_argument("--run-dir", default=None,
                         help="folder for conf, logs, pid files and checkpoints "
                              "(default <state dir>/flink)")
    p_start.add_argument("--timeout", type=float, default=90.0,
                         help="seconds to wait for the TaskManager to register (default 90)")
    sub.add_parser("stop", help="stop the cluster started by `twin flink cluster start`")
    p_status = sub.add_parser("status", help="REST URL, TaskManagers, slots and jobs")
    p_status.add_argument("--json", action="store_true", help="print JSON")


def cluster_main(args: argparse.Namespace) -> int:
    console = Console(highlight=False, soft_wrap=True)
    try:
        if args.cluster_command == "start":
            if args.slots < 1:
                return _fail("--slots must be at least 1")
            t0 = time.monotonic()
            record, already = flink_cluster.start_background(
                args.run_dir, slots=args.slots, rest_port=args.rest_port,
                timeout_s=args.timeout)
            if already:
                console.print(f"Flink cluster already running (run dir {record['run_dir']})")
            else:
                console.print(
                    f"Flink cluster started in {time.monotonic() - t0:.1f} s: 1 TaskManager, "
                    f"{record['slots']} slots (run dir {record['run_dir']}, logs "
                    f"{record['log_dir']})")
            print(record["rest_url"])
            return 0
        if args.cluster_command == "stop":
            record = flink_cluster.stop_background()
            if record is None:
                console.print("no Flink cluster running")
            else:
                pids = ", ".join(map(str, record["stopped_pids"])) or "none left"
                console.print(f"Flink cluster stopped (pids {pids})")
            return 0
        return _status(args, console)
    except flink_cluster.FlinkClusterError as exc:
        return _fail(str(exc))


def _status(args: argparse.Namespace, console: Console) -> int:
    cluster = flink_cluster.running()
    if cluster is None:
        if args.json:
            print(json.dumps({"running": False}))
        else:
            console.print(hints.rewrite(
                "no Flink cluster running (start one: `twin flink cluster start`)"))
        return 1
    info = {"running": True, **cluster.status()}
    if args.json:
        print(json.dumps(info, indent=1))
        return 0 if info["reachable"] else 1
    if not info["reachable"]:
        return _fail(f"cluster processes run but the REST API does not answer: {info['error']}")
    jobs = [j for j in info["jobs"] if j["state"] == "RUNNING"]
    console.print(f"Flink {info['flink_version']} at {info['rest_url']}: "
                  f"{info['taskmanagers']} TaskManager(s), slots {info['slots_available']}"
                  f"/{info['slots_total']} available, {len(jobs)} running job(s)")
    for job in jobs:
        console.print(f"  {job['id']}  {job['name']}")
    console.print(f"run dir {info['run_dir']}")
    print(info["rest_url"])
    return 0


# -- twin flink run | submit --------------------------------------------------------------

def _job_errors():
    from pipelines.flink.jars import JarsUnavailable
    from pipelines.kafka.broker import BrokerUnavailable
    from pipelines.kafka.config import KafkaConfigError
    from pipelines.kafka.serde import RegistryError

    return (BrokerUnavailable, KafkaConfigError, RegistryError, JarsUnavailable, ValueError,
            OSError)


def _print_counts(summary: dict, console: Console) -> None:
    from rich.table import Table

    table = Table(show_header=False, title="twin on flink")
    for key, value in summary.items():
        if isinstance(value, dict):
            value = ", ".join(f"{k} {v}" for k, v in value.items()) or "-"
        elif isinstance(value, list):
            value = ", ".join(map(str, value))
        table.add_row(key, str(value))
    console.print(table)


def run_main(args: argparse.Namespace) -> int:
    from jobs.flink_job import run_local

    console = Console(highlight=False, soft_wrap=True)
    try:
        summary = run_local(args)
    except _job_errors() as exc:
        return _fail(str(exc))
    _print_counts(summary, console)
    if "out" in summary:
        console.print(f"outputs in [bold]{summary['out']}[/bold] (JSON lines per output, "
                      "summary.json)")
    return 0


def private_jobs_dir(run_dir):
    """``run_dir/jobs``, where job options files (Kafka passwords, the signing key) are
    written: mode 0700, and any older options file in it made 0600."""
    import stat

    from pipelines.private_files import private_dir

    jobs_dir = private_dir(run_dir / "jobs")
    for old in jobs_dir.glob("*.json"):
        if stat.S_IMODE(old.stat().st_mode) & 0o077:
            old.chmod(0o600)
    return jobs_dir


def submit_main(args: argparse.Namespace) -> int:
    """Write the job's options into the cluster's run folder and ``flink run -py`` it."""
    import dataclasses

    from jobs.flink_job import ENTRY, count_outputs, options_from_args

    console = Console(highlight=False, soft_wrap=True)
    cluster = flink_cluster.running()
    if cluster is None:
        return _fail("no Flink cluster running: start one with `twin flink cluster start`")
    try:
        opts = options_from_args(args)
    except _job_errors() as exc:
        return _fail(str(exc))
    # the connector jars go to `flink run -C` (the client JVM already runs: pipeline.jars
    # set from inside the program would come too late for it)
    jars, opts = opts.jars, dataclasses.replace(opts, jars=[])
    jobs_dir = private_jobs_dir(cluster.run_dir)
    options_file = opts.dump(jobs_dir / f"{opts.job_name}-{int(time.time() * 1000)}.json")
    try:
        job_id = cluster.submit(ENTRY, ["--options", str(options_file)], jars=jars,
                                parallelism=opts.parallelism)
    except flink_cluster.FlinkClusterError as exc:
        return _fail(str(exc))
    console.print(f"submitted job {job_id} ({opts.source} -> {', '.join(opts.sinks)}) to "
                  f"{cluster.rest_url}; watch it at {cluster.rest_url}/#/job/running/{job_id}")
    print(job_id)
    if not args.wait:
        return 0
    t0 = time.monotonic()
    try:
        state = cluster.wait_for_job(job_id, "FINISHED", timeout_s=args.timeout)
    except flink_cluster.FlinkClusterError as exc:
        return _fail(str(exc))
    summary = {"job_id": job_id, "job_state": state,
               "elapsed_s": round(time.monotonic() - t0, 1)}
    if "files" in opts.sinks:
        summary.update({"out": opts.out_dir, **count_outputs(opts.out_dir)})
    _print_counts(summary, console)
    return 0


def cancel_main(args: argparse.Namespace) -> int:
    cluster = flink_cluster.running()
    if cluster is None:
        return _fail("no Flink cluster running")
    try:
        cluster.cancel(args.job_id)
        state = cluster.wait_for_job(args.job_id, ("CANCELED", "FINISHED", "FAILED"),
                                     timeout_s=60)
    except flink_cluster.FlinkClusterError as exc:
        return _fail(str(exc))
    Console(highlight=False).print(f"job {args.job_id}: {state}")
    return 0

"""``twin bench flink-slots``: the Flink job on a standalone cluster with Kafka, at 1 and 2
slots, and where the machine's cores go.

On a fresh embedded broker (its own free loopback port) ``--assets`` simulated assets send
``--duration`` of readings into the raw topics (``--partitions`` each, so two source
subtasks have a partition each); a fresh standalone cluster (JobManager and one
TaskManager with as many slots as the largest parallelism, loopback, its own run folder)
then runs the twin job bounded over that backlog (``twin flink submit --source kafka
--bounded``, Kafka sinks) once per parallelism in ``--slots``, ``--rounds`` times,
interleaved, each run with its own consumer group so it reads the whole backlog.

Per run: the job's duration as Flink reports it (start to FINISHED) and messages/s; its
checkpoints (count, end-to-end duration p50/max, state size: Flink's REST figures); and
the CPU seconds the broker, the JobManager and the TaskManager with its Python workers
took during the run, as shares of the machine's cores, so "2 slots against 1" is read
against what was left for them, and messages per CPU second of the TaskManager with its
Python workers (what a slot's core gives when it has it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import time
from collections import Counter
from pathlib import Path
from typing import Any


class BenchFlinkError(RuntimeError):
    pass


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jobs.flink_job import PYTHON_MODES
    from jobs.options import parse_duration, positive_int

    p.add_argument("--assets", type=positive_int, default=1000,
                   help="simulated assets (default 1000)")
    p.add_argument("--duration", type=parse_duration, default="3m",
                   help="event time of the backlog, one reading per asset and second "
                        "(default 3m)")
    p.add_argument("--slots", default="1,2",
                   help="comma-separated parallelisms to run (default 1,2)")
    p.add_argument("--rounds", type=positive_int, default=1,
                   help="runs per parallelism, interleaved (default 1)")
    p.add_argument("--partitions", type=positive_int, default=2,
                   help="partitions of each raw topic (default 2)")
    p.add_argument("--checkpoint-interval", type=parse_duration, default="10s",
                   help="the job's checkpoint interval (default 10s, the job's default)")
    p.add_argument("--bundle-size", type=positive_int, default=None,
                   help="the job's --bundle-size (default: the job's default)")
    p.add_argument("--bundle-time", type=parse_duration, default=None,
                   help="the job's --bundle-time (default: the job's default)")
    p.add_argument("--python-mode", choices=PYTHON_MODES, default=None,
                   help="the job's --python-mode (default: the job's default)")
    p.add_argument("--out", type=Path, default=Path("out") / "bench-flink-slots",
                   help="work folder: broker log, cluster run folder (default "
                        "out/bench-flink-slots)")


def _cpu_s(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants: the live ones', each
    with its children that have ended (the Python workers of a finished job)."""
    from jobs.bench import _descendants_of

    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for p in (pid, *_descendants_of(pid)):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(f) for f in fields[11:15]) / tick
        except (OSError, IndexError, ValueError):
            continue
    return total


def _machine_cpu_s() -> float:
    """CPU seconds every process of the machine has used (``/proc/stat``, all cores)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    busy = sum(int(f) for f in fields[:3]) + sum(int(f) for f in fields[5:8])
    return busy / os.sysconf("SC_CLK_TCK")


def _processes(broker, cluster) -> dict[str, list[int]]:
    return {"broker": [broker.process.pid], "jobmanager": cluster.jobmanager_pids(),
            "taskmanager": cluster.taskmanager_pids()}


def _cpu(procs: dict[str, list[int]]) -> dict[str, float]:
    out = {name: sum(_cpu_s(p) for p in pids) for name, pids in procs.items()}
    out["machine"] = _machine_cpu_s()  # (everything: the lead's other work too)
    return out


def _checkpoints(cluster, job_id: str) -> dict[str, Any]:
    info = cluster.get(f"/jobs/{job_id}/checkpoints")
    history = [c for c in info.get("history", []) if c.get("status") == "COMPLETED"]
    durations = sorted(c["end_to_end_duration"] for c in history)
    sizes = [c.get("checkpointed_size", c.get("state_size", 0)) for c in history]
    out = {"completed": info["counts"]["completed"], "failed": info["counts"]["failed"]}
    reasons = Counter((c.get("failure_message") or "no reason given").splitlines()[0][:200]
                      for c in info.get("history", []) if c.get("status") == "FAILED")
    if reasons:  # (the history holds the latest checkpoints only)
        out["failed_reasons"] = dict(reasons.most_common(3))
    if durations:
        out.update(duration_p50_ms=int(statistics.median(durations)),
                   duration_max_ms=int(durations[-1]),
                   state_mb_max=round(max(sizes) / 1e6, 1))
    return out


def _submit(cluster, bootstrap: str, parallelism: int, group: str,
            checkpoint_interval_s: float, bundle_size: int | None = None,
            bundle_time_s: float | None = None, python_mode: str | None = None) -> str:
    from jobs.flink import private_jobs_dir
    from jobs.flink_job import ENTRY, add_job_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_job_arguments(parser)
    args = parser.parse_args(["--source", "kafka", "--bounded", "--bootstrap-servers",
                              bootstrap, "--parallelism", str(parallelism), "--group-id",
                              group, "--checkpoint-interval", f"{checkpoint_interval_s}s",
                              "--job-name", group,
                              *(["--bundle-size", str(bundle_size)] if bundle_size else []),
                              *(["--bundle-time", f"{bundle_time_s}s"] if bundle_time_s
                                else []),
                              *(["--python-mode", python_mode] if python_mode else [])])
    opts = options_from_args(args)
    jars = opts.jars
    opts.jars = []
    options_file = opts.dump(private_jobs_dir(cluster.run_dir) / f"{group}.json")
    return cluster.submit(ENTRY, ["--options", str(options_file)], jars=jars,
                          parallelism=parallelism)


def run(assets: int, duration_s: float, slots: list[int], rounds: int, partitions: int,
        checkpoint_interval_s: float, out: Path, bundle_size: int | None = None,
        bundle_time_s: float | None = None, python_mode: str | None = None
        ) -> dict[str, Any]:
    from jobs.cli import main as twin
    from pipelines.flink.cluster import FlinkCluster, FlinkClusterError
    from pipelines.kafka.broker import EmbeddedBroker
    from pipelines.kafka.topics import ensure_topics, raw_topics

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    broker = EmbeddedBroker(log_path=out / "broker.log").start()
    cluster = None
    try:
        bs = broker.bootstrap_servers
        ensure_topics({"bootstrap.servers": bs}, raw_topics(), partitions=partitions)
        fleet = ["--assets", str(assets), "--duration", f"{duration_s}s", "--seed", "11",
                 "--interval", "1", "--malformed-rate", "0"]
        t0 = time.perf_counter()
        import contextlib
        import io

        with contextlib.redirect_stdout(io.StringIO()):  # (its table is not this report)
            published = twin(["simulate", "--bootstrap-servers", bs, *fleet, "--no-actions",
                              "--partitions", str(partitions)])
        if published != 0:
            raise BenchFlinkError("twin simulate failed")
        publish_s = time.perf_counter() - t0
        from pipelines.beam.kafka import plan_partitions

        plan = plan_partitions({"bootstrap.servers": bs}, raw_topics(), "bench-count")
        messages = sum(r.stop - r.start for r in plan)
        cluster = FlinkCluster(out / "flink", slots=max(slots)).start()
        runs = []
        for r in range(rounds):
            for p in slots:
                procs = _processes(broker, cluster)
                cpu0, w0 = _cpu(procs), time.perf_counter()
                job_id = _submit(cluster, bs, p, f"bench-p{p}-r{r}", checkpoint_interval_s,
                                 bundle_size, bundle_time_s, python_mode)
                try:
                    cluster.wait_for_job(job_id, "FINISHED", timeout_s=3600)
                except FlinkClusterError as exc:
                    raise BenchFlinkError(str(exc)) from exc
                wall = time.perf_counter() - w0
                procs = _processes(broker, cluster)  # (Python workers come and go)
                cpu = {k: round(v - cpu0.get(k, 0.0), 1) for k, v in _cpu(procs).items()}
                job = cluster.get(f"/jobs/{job_id}")
                seconds = job["duration"] / 1000
                vertices = {v["name"][:60]: round(v["duration"] / 1000, 1)
                            for v in job.get("vertices", [])}
                cores = os.cpu_count() or 1
                runs.append({
                    "parallelism": p, "round": r, "seconds": round(seconds, 2),
                    "messages_per_s": round(messages / seconds),
                    # what a core gives when the job has it (the machine may be busy)
                    "messages_per_cpu_s": round(messages / max(cpu["taskmanager"], 0.1)),
                    "submit_to_finished_s": round(wall, 1),
                    "vertex_seconds": vertices,
                    "checkpoints": _checkpoints(cluster, job_id), "cpu_s": cpu,
                    "core_share": {k: round(v / (wall * cores), 3) for k, v in cpu.items()},
                })
    finally:
        if cluster is not None:
            cluster.stop()
        broker.stop()
    by_p = {p: [x["messages_per_s"] for x in runs if x["parallelism"] == p] for p in slots}
    report: dict[str, Any] = {
        "assets": assets, "messages": messages, "partitions": partitions,
        "publish_s": round(publish_s, 1), "cores": os.cpu_count(), "runs": runs,
        "messages_per_s": {str(p): round(statistics.median(v)) for p, v in by_p.items()},
    }
    if 1 in by_p and len(slots) > 1:
        top = max(slots)
        report["speedup"] = round(statistics.median(by_p[top]) / statistics.median(by_p[1]),
                                  2)
    return report


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Flink standalone cluster with Kafka: {report['assets']} assets, "
                        f"{report['messages']:,} messages, {report['partitions']} partitions "
                        f"a topic, {report['cores']} cores")
    for col in ("slots", "seconds", "messages/s", "per TM CPU s", "checkpoints",
                "p50 / max ms",
                "state MB", "broker", "JobManager", "TaskManager + Python", "machine"):
        table.add_column(col, justify="right")
    for r in report["runs"]:
        c, share = r["checkpoints"], r["core_share"]
        table.add_row(str(r["parallelism"]), f"{r['seconds']}", f"{r['messages_per_s']:,}",
                      f"{r.get('messages_per_cpu_s', 0):,}", str(c["completed"]),
                      f"{c.get('duration_p50_ms', '-')} / {c.get('duration_max_ms', '-')}",
                      str(c.get("state_mb_max", "-")),
                      *(f"{100 * share[k]:.0f} %" for k in ("broker", "jobmanager",
                                                            "taskmanager", "machine")))
    console = Console()
    console.print(table)
    console.print("broker, JobManager, TaskManager + Python, machine: shares of all the "
                  "cores during the run (machine: every process, other work included)")
    if "speedup" in report:
        console.print(f"speedup (most slots vs 1): {report['speedup']}x")

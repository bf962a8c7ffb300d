"""``twin bench kafka-backlog``: peak memory and time of ``twin run --source kafka`` against
the size of the backlog it finds.

For each backlog size, a fresh embedded broker gets the simulator's messages (``--assets``
assets at ``--interval``, with the usual transport defects) on its raw topics, then one
``twin run --source kafka`` reads them all, as a child process whose peak resident memory
(``wait4``'s ``ru_maxrss``: the run is in-process on the DirectRunner) and wall time are
reported beside its summary's counts. A run reads its backlog in slices
(``--max-messages-per-slice``), so its peak should follow the slice, not the backlog:
``peak_ratio`` (largest over smallest peak) says how flat it is.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def publish_fleet(bootstrap: str, messages: int, assets: int, interval_s: float,
                  seed: int = 1) -> int:
    """About ``messages`` simulator messages on the raw topics; returns how many exactly."""
    from pipelines.kafka.testing import publish
    from pipelines.kafka.topics import DEFAULT_PARTITIONS
    from transforms.simulator import Fleet, FleetConfig

    fleet = Fleet(FleetConfig(assets=assets, duration_s=messages / assets * interval_s,
                              interval_s=interval_s, seed=seed))
    return publish(bootstrap, fleet.messages(), partitions=DEFAULT_PARTITIONS, flush_s=120,
                   producer={"linger.ms": 50, "batch.num.messages": 10_000,
                             "queue.buffering.max.messages": 500_000})


def measure_run(args: list[str]) -> tuple[float, float, str]:
    """``(peak RSS MB, wall seconds, stderr tail)`` of ``twin <args>`` in a child."""
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", *args], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    err = proc.stderr.read().decode(errors="replace")  # (a child blocked on a full pipe
    _, status, usage = os.wait4(proc.pid, 0)  # would never exit)
    elapsed = time.perf_counter() - t0
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"twin run failed ({status}): {err[-2000:]}")
    return usage.ru_maxrss / 1024, elapsed, err[-2000:]


def run_backlog(sizes: list[int], assets: int, interval_s: float,
                per_slice: int | None, out: Path) -> dict[str, Any]:
    from pipelines.kafka.broker import EmbeddedBroker

    out.mkdir(parents=True, exist_ok=True)
    key = out / "hmac.key"
    if not key.exists():
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    rows = []
    for size in sizes:
        with EmbeddedBroker(log_path=out / f"broker-{size}.log") as broker:
            t0 = time.perf_counter()
            n = publish_fleet(broker.bootstrap_servers, size, assets, interval_s)
            published_s = time.perf_counter() - t0
            run_out = out / f"run-{size}"
            args = ["run", "--source", "kafka", "--bootstrap-servers",
                    broker.bootstrap_servers, "--out", str(run_out), "--no-progress",
                    "--hmac-key-file", str(key), "--state-file", str(run_out / "state.pkl")]
            if per_slice:
                args += ["--max-messages-per-slice", str(per_slice)]
            for stale in (run_out / "state.pkl", run_out / "summary.json"):
                stale.unlink(missing_ok=True)
            peak_mb, elapsed, _ = measure_run(args)
        summary = json.loads((run_out / "summary.json").read_text())
        rows.append({"backlog": n, "slices": summary.get("slices", 1),
                     "readings_in": summary["readings_in"],
                     "predictions": summary["predictions"], "peak_rss_mb": round(peak_mb),
                     "run_s": round(elapsed, 1), "msg_per_s": round(n / elapsed),
                     "publish_s": round(published_s, 1)})
    peaks = [r["peak_rss_mb"] for r in rows]
    return {"assets": assets, "interval_s": interval_s, "max_messages_per_slice": per_slice,
            "rows": rows, "peak_ratio": round(max(peaks) / min(peaks), 3)}


def print_backlog(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    slice_size = report["max_messages_per_slice"] or "default"
    table = Table(title=f"twin run --source kafka: {report['assets']} assets, "
                        f"slices of {slice_size}")
    cols = ("backlog", "slices", "readings_in", "predictions", "peak_rss_mb", "run_s",
            "msg_per_s")
    for col in cols:
        table.add_column(col, justify="right")
    for r in report["rows"]:
        table.add_row(*(f"{r[c]:,}" if isinstance(r[c], int) else str(r[c]) for c in cols))
    console = Console()
    console.print(table)
    console.print(f"peak memory, largest over smallest backlog: {report['peak_ratio']}")

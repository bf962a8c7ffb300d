"""Benchmark results as data: one JSON record per ``twin bench ... --record`` run.

A record says what was measured (``bench``, ``parameters``, ``figures``), by which code
(``commit``, ``dirty``), on which machine (``machine``: CPU, cores, memory, Python,
package versions), when (``date``, UTC) and how to measure it again (``command``). Records
live in ``infra/bench/results/`` (``$TWIN_BENCH_RESULTS`` elsewhere), one file each, never
rewritten: the history of a figure is its records, and ``docs/benchmarks.md`` is rendered
from the latest record of each bench (:mod:`jobs.benchreport`).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMA = 1
PACKAGES = ("apache-beam", "apache-flink", "river", "numpy", "pyarrow", "fastavro",
            "confluent-kafka")


def results_dir() -> Path:
    """Where records go: ``$TWIN_BENCH_RESULTS``, else ``infra/bench/results``."""
    return Path(os.environ.get("TWIN_BENCH_RESULTS") or REPO / "infra" / "bench" / "results")


def _git(*args: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code_version() -> dict[str, Any]:
    """The commit the code is at, and whether tracked files differ from it."""
    commit = _git("rev-parse", "--short=10", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    return None


_LOAD_AT_START = os.getloadavg() if hasattr(os, "getloadavg") else None


def machine() -> dict[str, Any]:
    """The facts of this machine a figure depends on, with its load average (1, 5, 15
    minutes) when this process started: other work on a small machine moves timings."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "memory_gib": _memory_gib(),
            "os": f"{platform.system()} {platform.release()}", "arch": platform.machine(),
            "python": platform.python_version(), "packages": versions,
            "load_at_start": [round(x, 2) for x in _LOAD_AT_START] if _LOAD_AT_START else None}


def command_line(argv: list[str] | None = None) -> str:
    """The ``twin`` command that was run, as a user would type it to measure it again
    (without the flags that only choose how figures are shown or stored)."""
    import shlex

    argv = sys.argv[1:] if argv is None else argv
    return "twin " + " ".join(shlex.quote(a) for a in argv if a not in ("--json", "--record"))


def make_record(bench: str, parameters: dict[str, Any], figures: dict[str, Any],
                command: str | None = None) -> dict[str, Any]:
    return {"schema": SCHEMA, "bench": bench,
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            **code_version(), "machine": machine(),
            "command": command or command_line(), "parameters": parameters,
            "figures": figures}


def write_record(record: dict[str, Any], folder: Path | None = None) -> Path:
    """Store ``record`` as a new file (``<bench>-<date>-<commit>.json``); returns its path."""
    folder = folder or results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    stamp = record["date"].replace("-", "").replace(":", "")
    base = f"{record['bench']}-{stamp}-{record.get('commit') or 'nogit'}"
    path = folder / f"{base}.json"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"{base}-{n}.json"
    path.write_text(json.dumps(record, indent=1, sort_keys=False) + "\n")
    return path


def read_records(folder: Path | None = None) -> list[dict[str, Any]]:
    """Every record in ``folder``, oldest first; a file that is not a record is an error
    naming it (a results folder is data others rely on)."""
    folder = folder or results_dir()
    records = []
    for path in sorted(folder.glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except ValueError as exc:
            raise ValueError(f"{path} is not JSON: {exc}") from exc
        if not isinstance(record, dict) or record.get("schema") != SCHEMA \
                or "bench" not in record or "figures" not in record:
            raise ValueError(f"{path} is not a benchmark record (schema {SCHEMA})")
        record["_file"] = path.name
        records.append(record)
    records.sort(key=lambda r: (r["date"], r["_file"]))
    return records


def latest(records: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The newest record of each bench."""
    out: dict[str, dict[str, Any]] = {}
    for r in records:
        out[r["bench"]] = r
    return out

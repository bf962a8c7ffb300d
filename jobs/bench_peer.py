"""``twin bench peer``: ``twin run --source kafka`` against a Quix Streams peer, on one
broker and one backlog, runs interleaved.

The peer is ``../shared/bench/peers/quix_peer.py`` beside the repository (its README says
what it does and what it leaves out): decode, units, per-asset 10 s tumbling event-time
windows, mean/std, River HalfSpaceTrees per asset, one JSON topic out. It runs in its own
virtual environment, made as the peer's ``run_bench.sh setup`` makes it (quixstreams,
fastavro, river, numpy from the package index); a venv that cannot be made stops the
bench (exit 2, with pip's reason).

Runbook
-------
1. A fresh embedded broker on a free loopback port gets the workload from ``twin
   simulate`` (default the peer README's: 200 assets x 2 h at 1 s, ``--malformed-rate
   0``, the simulator's transport defects on: duplicates, late and out-of-order messages).
2. ``--pairs`` times: the twin, then the peer, each from the beginning of the backlog with
   a fresh consumer group, a fresh output folder and no state file, each a child process
   watched from outside: wall time (start to exit, imports included), peak memory of the
   whole process tree (resident memory of the process and every descendant, summed, sampled
   every 0.1 s: the twin's slices run in forked children), CPU time (user + system, the
   process and its descendants, from ``wait4``).
3. Figures: messages/s of each run (messages / wall), the means of each side and their
   ratio (twin / peer), the ratio within each pair, peak memories, windows of each side.

Both sides close 10 s windows with the same lateness (the peer's 80 s grace is the twin's
20 s out-of-orderness plus 60 s allowed lateness), so they should count the same windows.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
PEER_PACKAGES = ("quixstreams", "fastavro", "river", "numpy")
GRACE_S = 80.0  # the twin's default out-of-orderness (20 s) + allowed lateness (60 s)


class PeerUnavailable(RuntimeError):
    """The peer cannot be run here (missing script, venv that cannot be made)."""


# -- pure parts ---------------------------------------------------------------------------


def process_tree(root: int, proc: Path = Path("/proc")) -> list[int]:
    """``root`` and all its living descendants (from each process's ``stat`` parent)."""
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = parse_ppid(stat)
        if ppid is not None:
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, ()))
    return out


def parse_ppid(stat: str) -> int | None:
    """The parent pid in a ``/proc/<pid>/stat`` line (the name in parentheses may hold
    spaces and parentheses itself)."""
    try:
        return int(stat[stat.rindex(")") + 2:].split()[1])
    except (ValueError, IndexError):
        return None


def rss_kib(status: str) -> int:
    """``VmRSS`` in KiB from a ``/proc/<pid>/status`` text (0 if absent: a zombie)."""
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def pss_kib(rollup: str) -> int:
    """``Pss`` in KiB from a ``/proc/<pid>/smaps_rollup`` text (0 if absent)."""
    for line in rollup.splitlines():
        if line.startswith("Pss:"):
            return int(line.split()[1])
    return 0


def tree_rss_mb(root: int, proc: Path = Path("/proc")) -> float:
    """Resident memory of ``root`` and its descendants, summed, in MB (2**20 bytes)."""
    return tree_memory_mb(root, proc)[0]


def tree_memory_mb(root: int, proc: Path = Path("/proc")) -> tuple[float, float]:
    """``(RSS, PSS)`` of ``root`` and its descendants, each summed, in MB. RSS counts a
    page every process of the tree maps (a forked child's copy-on-write pages shared with
    its parent) once per process; PSS splits it between them, so its sum is what the tree
    holds."""
    rss = pss = 0
    for pid in process_tree(root, proc):
        try:
            rss += rss_kib((proc / str(pid) / "status").read_text())
            pss += pss_kib((proc / str(pid) / "smaps_rollup").read_text())
        except OSError:
            continue
    return rss / 1024, pss / 1024


def summarize(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """Means, ratio and per-pair ratios of interleaved ``runs`` (each with ``side`` 'twin'
    or 'peer', ``pair``, ``msg_per_s``, ``peak_rss_mb``, ``windows``)."""
    twins = [r for r in runs if r["side"] == "twin"]
    peers = [r for r in runs if r["side"] == "peer"]
    if not twins or not peers:
        raise ValueError("a comparison needs runs of both sides")

    def mean(rows, key):
        return sum(r[key] for r in rows) / len(rows)

    by_pair: dict[int, dict[str, dict[str, Any]]] = {}
    for r in runs:
        by_pair.setdefault(r["pair"], {})[r["side"]] = r
    pair_ratios = [round(p["twin"]["msg_per_s"] / p["peer"]["msg_per_s"], 2)
                   for _, p in sorted(by_pair.items()) if "twin" in p and "peer" in p]
    twin_rate, peer_rate = mean(twins, "msg_per_s"), mean(peers, "msg_per_s")
    twin_mem = max(r["peak_rss_mb"] for r in twins)
    peer_mem = max(r["peak_rss_mb"] for r in peers)
    extra: dict[str, Any] = {}
    if all("msg_per_cpu_s" in r for r in twins + peers):  # CPU: what a busy machine
        twin_cpu, peer_cpu = mean(twins, "msg_per_cpu_s"), mean(peers, "msg_per_cpu_s")
        extra.update(twin_msg_per_cpu_s=round(twin_cpu), peer_msg_per_cpu_s=round(peer_cpu),
                     cpu_ratio=round(twin_cpu / peer_cpu, 2))  # does not move
    if all("peak_pss_mb" in r for r in twins + peers):
        extra.update(twin_peak_pss_mb=max(r["peak_pss_mb"] for r in twins),
                     peer_peak_pss_mb=max(r["peak_pss_mb"] for r in peers))
    return {**extra,
        "twin_msg_per_s": round(twin_rate), "peer_msg_per_s": round(peer_rate),
        "ratio": round(twin_rate / peer_rate, 2), "pair_ratios": pair_ratios,
        "twin_peak_rss_mb": round(twin_mem), "peer_peak_rss_mb": round(peer_mem),
        "memory_ratio": round(twin_mem / peer_mem, 2),
        "twin_windows": sorted({r["windows"] for r in twins}),
        "peer_windows": sorted({r["windows"] for r in peers}),
    }


# -- the peer's environment ---------------------------------------------------------------


def peer_script(peers: Path) -> Path:
    script = peers / "quix_peer.py"
    if not script.is_file():
        raise PeerUnavailable(f"the peer is not at {script}: --peers names the folder of "
                              f"quix_peer.py (the shared bench's peers/ beside the "
                              f"repository)")
    return script


def ensure_peer_venv(venv: Path, timeout_s: float = 900,
                     base_python: str | None = None) -> Path:
    """The peer venv's python, made as ``run_bench.sh setup`` makes it if it is not there
    (``python -m venv``, then pip install of the peer's packages); ``base_python`` makes
    the venv (default this interpreter)."""
    python = venv / "bin" / "python"
    check = [str(python), "-c", "import " + ", ".join(PEER_PACKAGES)]
    if python.exists() and subprocess.run(check, capture_output=True).returncode == 0:
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    for step in ([base_python or sys.executable, "-m", "venv", str(venv)],
                 [str(venv / "bin" / "pip"), "install", "-q", *PEER_PACKAGES]):
        try:
            proc = subprocess.run(step, capture_output=True, text=True, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise PeerUnavailable(f"making the peer's venv {venv} ({' '.join(step[1:3])}) "
                                  f"took more than {timeout_s:.0f} s") from None
        except OSError as exc:
            raise PeerUnavailable(f"the peer's venv {venv} cannot be made here: {exc}") \
                from None
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-2:]
            raise PeerUnavailable(
                f"the peer's venv {venv} cannot be made here ({Path(step[0]).name} "
                f"{' '.join(step[1:3])} ...: exit {proc.returncode}: {' | '.join(tail)}); "
                f"it needs {', '.join(PEER_PACKAGES)} from the package index once, or "
                f"--peer-venv naming a venv that has them")
    if subprocess.run(check, capture_output=True).returncode != 0:
        raise PeerUnavailable(f"the peer's venv {venv} lacks some of "
                              f"{', '.join(PEER_PACKAGES)} after pip install")
    return python


def peer_versions(python: Path) -> dict[str, str | None]:
    code = ("import json\nfrom importlib import metadata as m\nout={}\n"
            "for n in ('quixstreams','river','fastavro','numpy','confluent-kafka'):\n"
            "    try: out[n]=m.version(n)\n    except Exception: out[n]=None\n"
            "print(json.dumps(out))")
    proc = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
    return json.loads(proc.stdout) if proc.returncode == 0 else {}


# -- running ------------------------------------------------------------------------------


def measure(cmd: list[str], log: Path, env: dict[str, str] | None = None,
            cwd: Path | None = None, interval_s: float = 0.1) -> dict[str, Any]:
    """Run ``cmd``; its wall time, peak tree memory, CPU time and exit code."""
    with log.open("wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        peak = [0.0, 0.0]
        done = threading.Event()

        def sample():
            while not done.is_set():
                try:
                    rss, pss = tree_memory_mb(proc.pid)
                except OSError:
                    rss = pss = 0.0
                peak[0], peak[1] = max(peak[0], rss), max(peak[1], pss)
                done.wait(interval_s)

        watcher = threading.Thread(target=sample, daemon=True)
        watcher.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        except BaseException:  # the bench was stopped: so is what it measures
            proc.kill()
            proc.wait()
            raise
        finally:
            done.set()
            watcher.join()
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return {"wall_s": round(wall, 2), "peak_rss_mb": round(peak[0]),
            "peak_pss_mb": round(peak[1]),
            "max_process_rss_mb": round(usage.ru_maxrss / 1024),
            "cpu_s": round(cpu, 1), "cpu_pct": round(100 * cpu / wall) if wall else None,
            "exit": proc.returncode}


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def publish(bootstrap: str, assets: int, duration_s: float, interval_s: float,
            log: Path) -> None:
    """The workload on the raw topics, as the peer's ``run_bench.sh setup`` publishes it."""
    cmd = [sys.executable, "-m", "jobs.cli", "simulate", "--bootstrap-servers", bootstrap,
           "--assets", str(assets), "--duration", f"{duration_s:g}s",
           "--interval", f"{interval_s:g}", "--malformed-rate", "0",
           "--as-fast-as-possible", "--no-actions"]
    with log.open("wb") as out:
        proc = subprocess.run(cmd, cwd=REPO, stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        raise RuntimeError(f"twin simulate failed (exit {proc.returncode}): {_tail(log)}")


def backlog_size(bootstrap: str) -> int:
    """Messages on the raw topics now (the end offsets, confirmed by reading past them)."""
    from confluent_kafka import TopicPartition

    from pipelines.beam.kafka import _consumer, end_offsets
    from pipelines.kafka.topics import raw_topics

    consumer = _consumer({"bootstrap.servers": bootstrap}, partition_eof=True)
    try:
        meta = consumer.list_topics(timeout=15)
        tps = [TopicPartition(t, p) for t in raw_topics() for p in meta.topics[t].partitions]
        return sum(end_offsets(consumer, tps).values())
    finally:
        consumer.close()


def run_twin(bootstrap: str, work: Path, n: int, window_s: float, key: Path,
             extra: list[str], repo: Path = REPO, side: str = "twin") -> dict[str, Any]:
    """One ``twin run --source kafka`` of the checkout ``repo`` (its ``jobs`` package
    imported from there: ``python -m`` puts the working folder first on the path)."""
    out = work / f"{side}-{n}"
    if out.exists():
        import shutil

        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "jobs.cli", "run", "--source", "kafka",
           "--bootstrap-servers", bootstrap, "--out", str(out), "--window", f"{window_s:g}s",
           "--group-id", f"bench-peer-twin-{uuid.uuid4().hex[:8]}", "--no-progress",
           "--hmac-key-file", str(key), *extra]
    log = work / f"{side}-{n}.log"
    m = measure(cmd, log, cwd=repo)
    if m["exit"] != 0:
        raise RuntimeError(f"twin run ({side}) failed (exit {m['exit']}): {_tail(log)}")
    s = json.loads((out / "summary.json").read_text())
    return {**m, "side": side, "messages": s["readings_in"], "windows": s["windows"],
            "late": s["late_readings"], "elapsed_in_process_s": s["elapsed_s"],
            "slices": s.get("slices")}


def run_peer(python: Path, script: Path, bootstrap: str, work: Path, n: int,
             window_s: float) -> dict[str, Any]:
    import shutil

    stats = work / f"peer-{n}.json"
    state = work / "quix-state"
    cmd = [str(python), str(script), "--bootstrap-servers", bootstrap,
           "--schemas", str(REPO / "schemas" / "avro" / "vendor"), "--window-s", f"{window_s:g}",
           "--grace-s", f"{GRACE_S:g}", "--state-dir", str(state), "--stats", str(stats)]
    m = measure(cmd, work / f"peer-{n}.log", cwd=work)
    shutil.rmtree(state, ignore_errors=True)  # a finished run's RocksDB: not reused
    if m["exit"] != 0:
        raise RuntimeError(f"the peer failed (exit {m['exit']}): {_tail(work / f'peer-{n}.log')}")
    s = json.loads(stats.read_text())
    return {**m, "side": "peer", "messages": s["consumed"], "windows": s["windows"],
            "late": s["late"], "elapsed_in_process_s": s["wall_in_process_s"]}


def run_peer_bench(assets: int, duration_s: float, interval_s: float, window_s: float,
                   pairs: int, peers: Path, venv: Path, work: Path,
                   twin_args: list[str] | None = None,
                   baseline: Path | None = None) -> dict[str, Any]:
    """The whole comparison (see the module doc); the report. ``baseline``: another
    checkout of twinstream whose ``twin run`` joins each round (before the twin, with this
    interpreter), to compare a change with the code before it on the same backlog."""
    from pipelines.kafka.broker import EmbeddedBroker

    script = peer_script(peers)
    if baseline is not None and not (baseline / "jobs" / "cli.py").is_file():
        raise PeerUnavailable(f"--baseline {baseline} is not a checkout of twinstream "
                              "(no jobs/cli.py)")
    python = ensure_peer_venv(venv)
    work = work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    key = work / "hmac.key"
    if not key.exists():
        fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32))
    runs: list[dict[str, Any]] = []
    _exit_on_sigterm()  # a terminated bench stops its run and its broker too
    with EmbeddedBroker(log_path=work / "broker.log") as broker:
        bs = broker.bootstrap_servers
        t0 = time.perf_counter()
        publish(bs, assets, duration_s, interval_s, work / "simulate.log")
        published_s = time.perf_counter() - t0
        backlog = backlog_size(bs)
        sides = ("baseline", "twin", "peer") if baseline is not None else ("twin", "peer")
        for pair in range(1, pairs + 1):
            for side in sides:
                load = os.getloadavg()[0]
                if side == "baseline":
                    r = run_twin(bs, work, pair, window_s, key, twin_args or [],
                                 repo=baseline.resolve(), side="baseline")
                elif side == "twin":
                    r = run_twin(bs, work, pair, window_s, key, twin_args or [])
                else:
                    r = run_peer(python, script, bs, work, pair, window_s)
                if r["messages"] != backlog:
                    raise RuntimeError(f"{side} #{pair} read {r['messages']:,} of the "
                                       f"{backlog:,} messages on the raw topics")
                r.update(pair=pair, load_at_start=round(load, 2),
                         msg_per_s=round(r["messages"] / r["wall_s"]),
                         msg_per_cpu_s=round(r["messages"] / r["cpu_s"]))
                runs.append(r)
                print(f"  {side} #{pair}: {r['messages']:,} messages in {r['wall_s']} s "
                      f"({r['msg_per_s']:,}/s), peak {r['peak_rss_mb']:,} MB, "
                      f"CPU {r['cpu_s']} s", file=sys.stderr, flush=True)
    return {"assets": assets, "duration_s": duration_s, "interval_s": interval_s,
            "window_s": window_s, "grace_s": GRACE_S, "pairs": pairs,
            "messages": backlog, "published_s": round(published_s, 1),
            "twin_args": twin_args or [], "peer_packages": peer_versions(python),
            "runs": runs, **summarize(runs), **_baseline(runs, baseline)}


def _exit_on_sigterm() -> None:
    """SIGTERM unwinds the bench as Ctrl-C does (its broker stopped, the run it measures
    killed), rather than leaving them behind."""
    import signal

    def stop(signum, _frame):
        raise SystemExit(128 + signum)

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def _baseline(runs: list[dict[str, Any]], baseline: Path | None) -> dict[str, Any]:
    base = [r for r in runs if r["side"] == "baseline"]
    if not base:
        return {}
    twins = [r for r in runs if r["side"] == "twin"]
    rate = sum(r["msg_per_s"] for r in base) / len(base)
    twin_rate = sum(r["msg_per_s"] for r in twins) / len(twins)
    return {"baseline": str(baseline), "baseline_msg_per_s": round(rate),
            "baseline_peak_rss_mb": max(r["peak_rss_mb"] for r in base),
            "twin_over_baseline": round(twin_rate / rate, 2)}


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"twin run --source kafka vs the Quix Streams peer: "
                        f"{report['messages']:,} messages ({report['assets']} assets), "
                        f"{report['window_s']:g} s windows")
    cols = ("run", "wall s", "messages/s", "messages/CPU s", "peak RSS MB (tree)",
            "peak PSS MB (tree)", "CPU s", "CPU %", "windows", "late", "load")
    for col in cols:
        table.add_column(col, justify="right")
    for r in report["runs"]:
        table.add_row(f"{r['side']} #{r['pair']}", f"{r['wall_s']:.1f}", f"{r['msg_per_s']:,}",
                      f"{r['msg_per_cpu_s']:,}", f"{r['peak_rss_mb']:,}",
                      f"{r['peak_pss_mb']:,}", f"{r['cpu_s']:.1f}", str(r["cpu_pct"]),
                      f"{r['windows']:,}", f"{r['late']:,}", str(r["load_at_start"]))
    console = Console()
    console.print(table)
    console.print(f"messages/s: twinstream {report['twin_msg_per_s']:,}, peer "
                  f"{report['peer_msg_per_s']:,}: ratio {report['ratio']} (per pair "
                  f"{', '.join(str(x) for x in report['pair_ratios'])})", highlight=False)
    if "baseline_msg_per_s" in report:
        console.print(f"baseline ({report['baseline']}): {report['baseline_msg_per_s']:,} "
                      f"messages/s, peak {report['baseline_peak_rss_mb']:,} MB; twinstream "
                      f"/ baseline {report['twin_over_baseline']}", highlight=False)
    console.print(f"messages per CPU second: twinstream {report['twin_msg_per_cpu_s']:,}, "
                  f"peer {report['peer_msg_per_cpu_s']:,}: ratio {report['cpu_ratio']}",
                  highlight=False)
    console.print(f"peak memory (RSS, tree): twinstream {report['twin_peak_rss_mb']:,} MB, "
                  f"peer {report['peer_peak_rss_mb']:,} MB ({report['memory_ratio']}x); "
                  f"PSS {report['twin_peak_pss_mb']:,} MB against "
                  f"{report['peer_peak_pss_mb']:,} MB", highlight=False)

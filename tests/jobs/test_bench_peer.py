"""``twin bench peer``: the pure parts (process tree and its memory, the ratios, the page
section, the peer that cannot be run) fast; the whole comparison at a tiny size, slow."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs.bench_peer import (
    PeerUnavailable,
    ensure_peer_venv,
    parse_ppid,
    peer_script,
    process_tree,
    pss_kib,
    rss_kib,
    summarize,
    tree_memory_mb,
    tree_rss_mb,
)
from jobs.benchrecord import read_records
from jobs.benchreport import render
from jobs.cli import main

REPO = Path(__file__).resolve().parents[2]


def _run(side, pair, rate, mem, windows=1000, cpu_rate=None):
    return {"side": side, "pair": pair, "msg_per_s": rate, "peak_rss_mb": mem,
            "peak_pss_mb": mem - 100, "msg_per_cpu_s": cpu_rate or rate,
            "windows": windows, "wall_s": 10.0, "cpu_s": 9.0, "cpu_pct": 90, "late": 3,
            "messages": rate * 10, "load_at_start": 0.5}


def test_ratio_is_of_the_mean_rates_and_each_pair_has_its_own():
    runs = [_run("twin", 1, 30_000, 900, cpu_rate=40_000),
            _run("peer", 1, 10_000, 780, cpu_rate=10_000),
            _run("twin", 2, 26_000, 950, cpu_rate=44_000),
            _run("peer", 2, 13_000, 770, cpu_rate=11_000)]
    s = summarize(runs)
    # per CPU second: what other work on a shared machine does not move
    assert (s["twin_msg_per_cpu_s"], s["peer_msg_per_cpu_s"], s["cpu_ratio"]) == (
        42_000, 10_500, 4.0)
    assert (s["twin_peak_pss_mb"], s["peer_peak_pss_mb"]) == (850, 680)
    assert s["twin_msg_per_s"] == 28_000 and s["peer_msg_per_s"] == 11_500
    assert s["ratio"] == 2.43  # 28,000 / 11,500
    assert s["pair_ratios"] == [3.0, 2.0]
    assert s["twin_peak_rss_mb"] == 950 and s["peer_peak_rss_mb"] == 780  # the worst run
    assert s["memory_ratio"] == 1.22
    assert s["twin_windows"] == [1000] and s["peer_windows"] == [1000]
    with pytest.raises(ValueError, match="both sides"):
        summarize(runs[:1])


def test_proc_parsing():
    # a command name with spaces and a parenthesis does not shift the fields
    assert parse_ppid("1234 (twin (slice) x) S 987 1234 1234 0 -1") == 987
    assert parse_ppid("garbage") is None
    assert rss_kib("Name:\tpython\nVmPeak:\t 9 kB\nVmRSS:\t  2048 kB\n") == 2048
    assert rss_kib("Name:\tzombie\nState:\tZ\n") == 0


def test_pss_parsing():
    assert pss_kib("Rss:   9000 kB\nPss:   4500 kB\nPss_Anon: 100 kB\n") == 4500
    assert pss_kib("") == 0


def test_tree_memory_sums_a_process_and_its_descendants():
    """A child that forks a grandchild which holds ~200 MB: the tree's memory counts it,
    the child's own does not."""
    code = ("import os, time\n"
            "if os.fork() == 0:\n"
            "    b = bytearray(200 << 20)\n"
            "    b[::4096] = b'x' * len(b[::4096])\n"
            "    time.sleep(30)\n    os._exit(0)\n"
            "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pids = process_tree(proc.pid)
            if len(pids) == 2 and tree_rss_mb(proc.pid) > 200:
                break
            time.sleep(0.1)
        assert len(pids) == 2 and pids[0] == proc.pid
        own = rss_kib(Path(f"/proc/{proc.pid}/status").read_text()) / 1024
        assert own < 100 and tree_rss_mb(proc.pid) > 200
        rss, pss = tree_memory_mb(proc.pid)
        assert pss > 200 and pss <= rss + 1  # the grandchild's pages are its own
    finally:
        for pid in reversed(process_tree(proc.pid)):
            os.kill(pid, 9)
        proc.wait()


def test_a_peer_that_cannot_be_run_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(PeerUnavailable, match="the peer is not at"):
        peer_script(tmp_path)
    # a venv whose pip cannot install: the reason, not a traceback
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    pip = venv / "bin" / "pip"
    pip.write_text("#!/bin/sh\necho 'ERROR: No matching distribution found for "
                   "quixstreams' >&2\nexit 1\n")
    pip.chmod(0o755)
    python = venv / "bin" / "python"
    python.write_text("#!/bin/sh\nexit 1\n")  # imports nothing
    # (/bin/true as the base python: "-m venv" succeeds and leaves the fake pip)
    python.chmod(0o755)
    with pytest.raises(PeerUnavailable, match="No matching distribution found") as e:
        ensure_peer_venv(venv, timeout_s=30, base_python="/bin/true")
    assert "--peer-venv" in str(e.value)
    assert main(["bench", "peer", "--peers", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "o")]) == 2
    assert "the peer is not at" in capsys.readouterr().err


def _figures():
    runs = [_run("twin", 1, 30_000, 900), _run("peer", 1, 10_000, 780)]
    return {"assets": 200, "duration_s": 7200.0, "interval_s": 1.0, "window_s": 10.0,
            "grace_s": 80.0, "pairs": 1, "messages": 300_000, "published_s": 80.0,
            "twin_args": [], "peer_packages": {"quixstreams": "3.28.1", "river": None},
            "runs": runs, **summarize(runs)}


def test_the_page_has_a_peer_section(tmp_path):
    record = {"schema": 1, "bench": "peer", "date": "2026-12-07T19:00:00Z",
              "commit": "abc1234567", "dirty": False,
              "machine": {"cpu": "CPU", "cores": 2, "memory_gib": 8.0, "python": "3.11.7",
                          "os": "Linux", "arch": "x86_64", "packages": {}},
              "command": "twin bench peer", "parameters": {}, "figures": _figures()}
    (tmp_path / "p.json").write_text(json.dumps(record))
    page = render(read_records(tmp_path))
    assert "### The Kafka path against a Quix Streams peer (`twin bench peer`)" in page
    assert "| twin #1 | 10.0 s | 30,000 | 30,000 | 900 MB | 800 MB | 9 s (90 %) | 1,000 |" \
        in page
    assert "30,000 against 10,000, **3.0x**." in page  # per CPU second
    assert "800 MB against 680 MB" in page  # PSS
    assert "**twinstream / peer: 3.0x** messages/s (30,000 against\n10,000" in page
    assert "quixstreams 3.28.1" in page and "river None" not in page
    assert "## Other benchmarks" not in page


@pytest.mark.slow
def test_bench_peer_compares_both_sides_on_a_tiny_backlog(tmp_path, monkeypatch, capsys):
    """The whole command on 12 assets x 2 min: both sides read every message, count the
    same windows, and the record holds both rates and their ratio. Needs the peer's venv
    (made from the package index on first use): skipped where it cannot be made."""
    peers = REPO.parent / "shared" / "bench" / "peers"
    venv = Path(os.environ.get("TMPDIR") or "/tmp") / "peers" / "venv"
    try:
        peer_script(peers)
        ensure_peer_venv(venv)
    except PeerUnavailable as exc:
        pytest.skip(str(exc))
    monkeypatch.setenv("TWIN_BENCH_RESULTS", str(tmp_path / "results"))
    assert main(["bench", "peer", "--assets", "12", "--duration", "2m", "--pairs", "1",
                 "--out", str(tmp_path / "o"), "--json", "--record"]) == 0
    report = json.loads(capsys.readouterr().out)
    # the simulator's transport defects: duplicates added, some messages lost on the way
    assert 12 * 120 * 0.95 < report["messages"] < 12 * 120 * 1.05
    [twin, peer] = report["runs"]
    assert (twin["side"], peer["side"]) == ("twin", "peer")
    assert twin["messages"] == peer["messages"] == report["messages"]
    assert report["twin_windows"] == report["peer_windows"]
    assert twin["peak_rss_mb"] > 100 and peer["peak_rss_mb"] > 50
    assert report["ratio"] == round(report["twin_msg_per_s"] / report["peer_msg_per_s"], 2)
    [record] = read_records(tmp_path / "results")
    assert record["bench"] == "peer" and record["figures"]["ratio"] == report["ratio"]

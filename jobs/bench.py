"""``twin bench nab``: the detector on the Numenta Anomaly Benchmark, scored by NAB's rules.

Every NAB data file is replayed with ``twin replay``'s one configuration (the detector
never sees the labels), then ``../shared/bench/nab_score.py`` (beside the repository)
scores the results with NAB's three profiles. The table puts the scores beside the
published ones.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_BENCH = REPO.parent / "shared" / "bench"

# NAB's published scoreboard (standard, reward low FP, reward low FN); NAB README.
PUBLISHED = {
    "ARTime": (74.9, 65.1, 80.4),
    "Numenta HTM": (70.5, 62.6, 75.2),
    "CAD OSE": (69.9, 67.0, 73.2),
    "KNN CAD": (58.0, 43.4, 64.8),
    "Relative Entropy": (54.6, 47.6, 58.8),
    "Random Cut Forest": (51.7, 38.4, 59.7),
    "Twitter ADVec": (47.1, 33.6, 53.5),
    "Windowed Gaussian": (39.6, 20.9, 47.4),
    "Random": (11.0, 1.2, 19.5),
}
PROFILES = ("standard", "reward_low_FP_rate", "reward_low_FN_rate")


class BenchError(RuntimeError):
    pass


def run_nab(nab_root: Path, scorer: Path, out: Path, workers: int = 2) -> dict:
    """Replay the corpus into ``out/results`` and score it; returns the scorer's report
    plus ``rows`` and ``detector_s`` (time in replay, all files, summed over workers)."""
    from jobs.replay import replay

    data = nab_root / "data"
    if not data.is_dir() or not scorer.is_file():
        raise BenchError(f"NAB corpus or scorer not found ({data}, {scorer}); they live in "
                         "../shared/bench beside the repository (see its README), or pass "
                         "--nab-root / --scorer")
    results = out / "results"
    reports, errors = replay(data, results, workers, timestamp_column="timestamp",
                             columns=["value"])
    if errors:
        raise BenchError("replay failed: " + "; ".join(errors))
    proc = subprocess.run([sys.executable, str(scorer), str(results), "--nab-root",
                           str(nab_root), "--json"], capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"scorer failed: {proc.stderr.strip()[-2000:]}")
    report = json.loads(proc.stdout)
    report["files"] = len(reports)
    report["rows"] = sum(r.rows for r in reports)
    report["detector_s"] = round(sum(r.elapsed_s for r in reports), 2)
    (out / "scores.json").write_text(json.dumps(report, indent=1))
    return report


def add_arguments(p: argparse.ArgumentParser) -> None:
    sub = p.add_subparsers(dest="bench", required=True)
    nab = sub.add_parser("nab", help="replay and score the Numenta Anomaly Benchmark")
    nab.add_argument("--nab-root", type=Path, default=SHARED_BENCH / "nab",
                     help="folder with data/ and labels/ (default ../shared/bench/nab)")
    nab.add_argument("--scorer", type=Path, default=SHARED_BENCH / "nab_score.py",
                     help="NAB scorer script (default ../shared/bench/nab_score.py)")
    nab.add_argument("--out", type=Path, default=Path("out") / "nab",
                     help="where results and scores.json go (default out/nab)")
    nab.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    nab.add_argument("--json", action="store_true", help="print the scorer's report as JSON")


def main(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    try:
        report = run_nab(args.nab_root, args.scorer, args.out, args.workers)
    except BenchError as exc:
        Console(stderr=True).print(f"[red]twin bench nab: {exc}[/red]", highlight=False)
        return 2
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    table = Table(title="NAB v1.1 (58 files, one configuration, labels never read)")
    for col in ("detector", "standard", "low FP", "low FN"):
        table.add_column(col, justify="left" if col == "detector" else "right")
    ours = [report[p]["score"] for p in PROFILES]
    rows = sorted([("twinstream DriftAwareDetector", ours), *PUBLISHED.items()],
                  key=lambda r: -r[1][0])
    for name, scores in rows:
        style = "bold" if name.startswith("twinstream") else None
        table.add_row(name, *(f"{s:.1f}" for s in scores), style=style)
    console = Console()
    console.print(table)
    per_row = report["detector_s"] / max(report["rows"], 1) * 1e6
    console.print(f"{report['rows']:,} rows in {report['files']} files; replay incl. I/O "
                  f"{per_row:.0f} us per row; results in {args.out / 'results'}, scores in "
                  f"{args.out / 'scores.json'}", highlight=False)
    return 0

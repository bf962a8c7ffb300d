"""Benchmark results as data: records written by ``--record``, the page rendered from the
latest of them, and the repository's page kept in step with its records."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from jobs.benchrecord import command_line, make_record, read_records, write_record
from jobs.benchreport import HEADLINE_BEGIN, HEADLINE_END, render, with_headline
from jobs.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_a_record_says_what_which_code_which_machine_and_how(tmp_path):
    record = make_record("history", {"assets": 4}, {"windows": 480},
                         command=command_line(["bench", "history", "--assets", "4",
                                               "--json", "--record"]))
    path = write_record(record, tmp_path)
    stored = json.loads(path.read_text())
    assert stored["bench"] == "history" and stored["figures"] == {"windows": 480}
    assert stored["command"] == "twin bench history --assets 4"  # how to measure it again
    assert len(stored["commit"]) == 10 and isinstance(stored["dirty"], bool)
    m = stored["machine"]
    assert m["cores"] >= 1 and m["memory_gib"] > 0 and m["python"].startswith("3.11")
    assert m["packages"]["apache-beam"].startswith("2.61")
    assert stored["date"].endswith("Z")
    # a second record of the same second is a new file, never an overwrite
    again = write_record(record, tmp_path)
    assert again != path and len(list(tmp_path.glob("*.json"))) == 2


def test_history_bench_records_its_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWIN_BENCH_RESULTS", str(tmp_path))
    assert main(["bench", "history", "--assets", "2", "--duration", "20m", "--json",
                 "--record"]) == 0
    printed = json.loads(capsys.readouterr().out)
    [record] = read_records(tmp_path)
    assert record["bench"] == "history" and record["figures"] == printed
    assert record["parameters"] == {"assets": 2, "duration_s": 1200.0, "interval_s": 10.0,
                                    "window_s": 60.0}


def _record(bench, date, figures, parameters=None):
    return {"schema": 1, "bench": bench, "date": date, "commit": "abc1234567", "dirty": False,
            "machine": {"cpu": "CPU", "cores": 2, "memory_gib": 8.0, "python": "3.11.7",
                        "os": "Linux", "arch": "x86_64", "packages": {"apache-beam": "2.61.0"}},
            "command": f"twin bench {bench}", "parameters": parameters or {},
            "figures": figures}


def test_the_page_shows_the_latest_record_of_each_bench(tmp_path):
    spans = [{"from_h": 0, "to_h": 1, "windows": 10, "us_per_window": 150.0,
              "state_bytes_per_asset": 9000}]
    old = {"assets": 2, "interval_s": 10.0, "window_s": 60.0, "duration_s": 3600,
           "spans": spans}
    new = {**old, "spans": [{**spans[0], "us_per_window": 123.4}]}
    for name, rec in (("a.json", _record("history", "2026-01-01T00:00:00Z", old)),
                      ("b.json", _record("history", "2026-02-01T00:00:00Z", new)),
                      ("c.json", _record("mystery", "2026-02-01T00:00:00Z", {"x": 1}))):
        (tmp_path / name).write_text(json.dumps(rec))
    page = render(read_records(tmp_path))
    assert "| 0-1 h | 10 | 123 | 9,000 B |" in page and "150" not in page
    assert "Record `b.json`: 2026-02-01, commit `abc1234567`" in page
    assert "### mystery" in page and '"x": 1' in page  # an unknown bench is still shown
    assert ".venv/bin/twin bench history" in page


def test_the_flink_slots_bench_has_its_section_with_checkpoints_and_core_shares(tmp_path):
    def run(p, seconds, rate):
        return {"parallelism": p, "round": 0, "seconds": seconds, "messages_per_s": rate,
                "messages_per_cpu_s": 2 * rate,
                "checkpoints": {"completed": 4, "failed": 0, "duration_p50_ms": 310,
                                "duration_max_ms": 820, "state_mb_max": 21.5},
                "cpu_s": {}, "core_share": {"broker": 0.081, "jobmanager": 0.04,
                                            "taskmanager": 0.62, "machine": 0.97}}

    figures = {"assets": 1000, "messages": 180000, "partitions": 2, "cores": 2,
               "runs": [run(1, 36.0, 5000), run(2, 24.0, 7500)],
               "messages_per_s": {"1": 5000, "2": 7500}, "speedup": 1.5}
    (tmp_path / "f.json").write_text(json.dumps(
        _record("flink-slots", "2026-02-01T00:00:00Z", figures)))
    page = render(read_records(tmp_path))
    assert "## Throughput" in page and "(`twin bench flink-slots`)" in page
    assert ("| 2 | 24.0 | 7,500 | 15,000 | 4 | 310 / 820 ms | 21.5 MB | 8 % | 4 % | 62 % "
            "| 97 % |") in page
    assert "2 slots against 1: **1.5x**" in page


def test_report_writes_the_page_and_check_says_whether_it_matches(tmp_path, capsys):
    results = tmp_path / "results"
    results.mkdir()
    (results / "r.json").write_text(json.dumps(_record(
        "sweep", "2026-01-01T00:00:00Z",
        {"seeds": 2, "fault_episodes": 4, "detected_episodes": 4, "recall": 1.0, "alerts": 4,
         "precision": 1.0, "false_alarms_per_asset_day": 0.0, "regime_changes": 3,
         "regime_change_alerts": 0, "median_of_median_lead_time_s": 3600},
        {"seeds": [1, 2], "assets": 12, "duration_s": 21600})))
    page = tmp_path / "benchmarks.md"
    argv = ["bench", "report", "--results", str(results), "--output", str(page), "--readme",
            str(tmp_path / "no-readme.md")]
    assert main([*argv, "--check"]) == 1  # no page yet
    assert main(argv) == 0
    assert "| 1-2 | 4 | 4 | 1.0 | 4 | 1.0 | 0.0 | 3 | 0 | 60 min |" in page.read_text()
    assert main([*argv, "--check"]) == 0
    page.write_text(page.read_text() + "hand edit\n")
    assert main([*argv, "--check"]) == 1
    (results / "bad.json").write_text("{}")
    capsys.readouterr()
    assert main(argv) == 2
    assert "bad.json is not a benchmark record" in capsys.readouterr().err


def test_the_repositorys_benchmark_page_and_readme_match_its_latest_records():
    """docs/benchmarks.md and the README's headline figures are what `twin bench report`
    makes of infra/bench/results/."""
    records = read_records(REPO / "infra" / "bench" / "results")
    assert (REPO / "docs" / "benchmarks.md").read_text() == render(records)
    readme = (REPO / "README.md").read_text()
    assert HEADLINE_BEGIN in readme and readme == with_headline(readme, records)
    assert "| Detection: NAB v1.1" in readme


def test_report_rewrites_only_the_readmes_headline_block(tmp_path):
    records = [_record("nab", "2026-01-01T00:00:00Z", {
        p: {"score": x, "threshold": 0.9} for p, x in
        zip(("standard", "reward_low_FP_rate", "reward_low_FN_rate"), (70.0, 60.0, 80.0))})]
    readme = f"# x\n\nintro\n\n{HEADLINE_BEGIN}\nold table\n{HEADLINE_END}\n\nafter\n"
    new = with_headline(readme, records)
    assert new.startswith("# x\n\nintro\n\n") and new.endswith(f"{HEADLINE_END}\n\nafter\n")
    assert "old table" not in new and "70.0 / 60.0 / 80.0" in new
    assert with_headline("no block here", records) == "no block here"


def test_nab_without_its_corpus_says_where_to_get_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWIN_NAB_DATA", str(tmp_path / "nab"))
    assert main(["bench", "nab", "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"no NAB corpus at {tmp_path / 'nab'}" in err
    assert "github.com/numenta/NAB" in err and "--data DIR" in err
    (tmp_path / "nab" / "data").mkdir(parents=True)
    (tmp_path / "nab" / "labels").mkdir()
    (tmp_path / "nab" / "labels" / "combined_windows.json").write_text("{}")
    assert main(["bench", "nab", "--data", str(tmp_path / "nab"), "--scorer",
                 str(tmp_path / "none.py"), "--out", str(tmp_path / "o")]) == 2
    assert "no NAB scorer at" in capsys.readouterr().err


@pytest.mark.slow
def test_bench_fleet_times_counts_and_evaluates_the_main_job(tmp_path, monkeypatch):
    """Run on a small fleet through the same code path: the child process is twin run."""
    from jobs import bench

    calls = {}
    real_run = bench.subprocess.run

    def small_run(cmd, **kw):
        calls["cmd"] = cmd
        return real_run([*cmd, "--assets", "2", "--duration", "2h", "--seed", "3"], **kw)

    monkeypatch.setattr(bench.subprocess, "run", small_run)
    report = bench.run_fleet(tmp_path)
    assert calls["cmd"][2:5] == ["jobs.cli", "run", "--no-progress"]
    s = report["summary"]
    assert s["invariant_ok"] and s["assets"] == 2
    assert report["evaluation"]["fault_episodes"] >= 0 and report["peak_rss_mb"] > 100
    assert report["wall_s"] >= s["elapsed_s"]


def test_the_what_if_sections_render_their_records():
    from jobs.benchreport import headline
    from jobs.fidelity import summarize, summarize_optimize

    def row(group, horizon, kind, rel, inside, flagged=False, sensor="vibration"):
        return {"group": group, "horizon": horizon, "kind": kind, "sensor": sensor,
                "unit": "meter / second", "relative_error": rel, "inside_90": inside,
                "extrapolating": flagged, "error": rel * 0.003}

    rows = ([row("healthy", "1h", "speed", 0.02, True), row("healthy", "1h", "load", 0.04, False,
                                                             True),
             row("healthy", "1h", "none", 0.01, True), row("faulty", "15m", "none", 0.1, False)])
    figures = summarize(rows)
    h1 = figures["healthy_1h"]
    assert (h1["n"], h1["median_relative_error"], h1["coverage_90"]) == (3, 0.02, 0.667)
    assert h1["not_extrapolated"] == {"n": 2, "median_relative_error": 0.015,
                                      "coverage_90": 1.0}
    assert figures["healthy_6h"] == {"n": 0, "median_relative_error": None,
                                     "coverage_90": None}
    figures.update(questions=4, comparisons=4, elapsed_s=1.0)
    params = {"seeds": [1, 2], "assets": 4, "step_test": True, "horizons": ["15m", "1h", "6h"],
              "healthy_at_h": [4.0, 5.0], "speed_changes": [-0.1], "load_changes": [0.1],
              "fleet_hours": 12.0}
    cases = [{"fault": "bearing_wear", "fraction": 0.85, "gain": 1.7, "throughput_cost": 0.15,
              "predicted_gain": 2.0},
             {"fault": "stuck_sensor", "fraction": 1.0, "gain": 1.0, "throughput_cost": 0.0,
              "predicted_gain": None}]
    opt = summarize_optimize(cases, 2.0)
    assert opt["wear_faults"]["median_gain"] == 1.7 and opt["target_met"] is False
    fid = {**_record("fidelity", "2026-12-07T00:00:00Z", figures, params), "_file": "f.json"}
    page = render([fid, {**_record("optimize", "2026-12-07T00:00:00Z", opt,
                                   {"seeds": [1], "assets": 4, "life_factor": 2.0}),
                         "_file": "o.json"}])
    assert "## What-if" in page and "### What-if fidelity (`twin bench fidelity`)" in page
    assert "median relative error **2.0 %**" in page and "covering **67 %**" in page
    assert "median gain **1.7x**" in page and "does not meet the target" in page
    assert "| 2.0 % / 100 % |" in page  # the answers not flagged as extrapolation
    assert "2.0 %, 67 %" in headline([fid])

"""``twin bench dashboard``: its figures, its page section, and a small run in the browser."""

from __future__ import annotations

import json
import os

import pytest

from jobs.benchrecord import make_record, read_records, write_record
from jobs.benchreport import render
from jobs.cli import main

FIGURES = {"assets": 10000, "windows": 3, "server_rss_empty_mb": 235.4,
           "backlog_records": 60400, "publish_s": 3.1, "ingest_s": 5.77,
           "ingest_records_per_s": 10468, "api_assets": {"ms": 250.0, "bytes": 9_000_000},
           "api_fleet_fields": {"ms": 192.0, "bytes": 4_100_000},
           "render_ms": {"median": 356.2, "max": 720.4, "runs": [356.2, 300.1, 720.4]},
           "updates_published": 14946, "updates_published_per_s": 996.4,
           "rows_applied": 14568, "rows_applied_per_s": 971.2,
           "lag_ms": {"p50": 319.0, "p95": 720.0, "max": 900.0},
           "redraw_ms": {"p50": 11.6, "p95": 24.8, "count": 60},
           "server_rss_mb": 381.3, "server_peak_rss_mb": 386.2, "server_records": 90292}


def test_the_benchmark_page_has_a_dashboard_section(tmp_path):
    write_record(make_record("dashboard", {"assets": 10000, "windows": 3, "rate": 1000.0,
                                           "seconds": 15.0, "renders": 3}, FIGURES,
                             command="twin bench dashboard"), tmp_path)
    page = render(read_records(tmp_path))
    assert "## Dashboard" in page and "### The dashboard's fleet page" in page
    assert "| 10,000 | 356 / 720 ms | 971/s of 996/s published | 319 / 720 ms |" in page
    assert "235 / 381 MB" in page and "60,400 records in 5.77 s" in page


@pytest.mark.slow
def test_bench_dashboard_measures_a_small_fleet(tmp_path, capsys, monkeypatch):
    browser = os.environ.get("TWIN_BROWSER", "/usr/bin/chromium")
    if not os.access(browser, os.X_OK):
        if os.environ.get("TWIN_BROWSER_REQUIRED"):
            pytest.fail(f"no Chromium at {browser}")
        pytest.skip(f"no Chromium at {browser} (.ci/run installs Debian's chromium)")
    monkeypatch.setenv("TWIN_BENCH_RESULTS", str(tmp_path / "results"))
    out = tmp_path / "bench"
    code = main(["bench", "dashboard", "--assets", "300", "--seconds", "3", "--rate", "200",
                 "--renders", "1", "--out", str(out), "--json", "--record"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["assets"] == 300 and report["backlog_records"] == 300 * 3 * 2 + 6 + 200
    assert report["server_records"] >= report["backlog_records"] + 2 * report[
        "updates_published"]
    assert 0 < report["render_ms"]["median"] < 60_000
    assert report["rows_applied"] > 0 and report["lag_ms"]["p50"] is not None
    assert report["server_rss_mb"] > report["server_rss_empty_mb"] > 0
    (record,) = read_records(tmp_path / "results")
    assert record["bench"] == "dashboard" and record["parameters"]["assets"] == 300

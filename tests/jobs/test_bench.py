"""``twin bench`` (throughput): every stage runs, and the naive and twinstream pipelines
agree on every prediction of the workload."""

from __future__ import annotations

import json

import pytest

from jobs.bench import read_workload, write_workload
from jobs.cli import main


def test_workload_round_trips_clean_messages(tmp_path):
    path = tmp_path / "w.pkl"
    counts = write_workload(path, assets=3, duration_s=60, interval_s=1.0, chunk=50)
    msgs = list(read_workload(str(path)))
    assert counts["messages"] == len(msgs) == 3 * 60
    assert counts["sensors_per_asset"] == 8.0 and counts["values"] == 8 * len(msgs)
    assert {m[0] for m in msgs} <= {"twin.raw.helios", "twin.raw.kestrel", "twin.raw.orca"}
    assert all(m[2][0] == 0 for m in msgs)  # Confluent framing: magic byte 0, no defects


@pytest.mark.slow
def test_bench_runs_every_stage_and_the_pipelines_agree(tmp_path, capsys):
    rc = main(["bench", "--assets", "4", "--duration", "4m", "--out", str(tmp_path),
               "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert report["workload"]["messages"] == 4 * 240
    assert set(report["stages"]) == {"decode", "naive", "twinstream", "flink"}
    for stage in report["stages"].values():
        assert stage["messages_per_s"] > 0 and stage["peak_rss_mb"] > 0
    p = report["predictions"]
    # 4 assets x 24 windows of 10 s (all with >= 4 readings), past the 12-window warm-up
    assert p == {"naive": 96, "twinstream": 96, "same": True, "flink": 96,
                 "flink_same_as_naive": True}
    assert 0 < report["fraction_of_decode_limit"] < 1
    assert report["speedup_vs_naive"] > 0 and report["state_bytes_per_asset"] > 1000
    assert json.loads((tmp_path / "throughput.json").read_text()) == report


def test_unknown_stage_is_an_error(tmp_path, capsys):
    assert main(["bench", "--stages", "decode,warp", "--out", str(tmp_path)]) == 2
    assert "unknown stage(s) ['warp']" in capsys.readouterr().err


def test_workload_sends_the_first_sensors_of_each_asset_when_asked(tmp_path):
    from transforms.normalize import normalize_message

    path = tmp_path / "w.pkl"
    counts = write_workload(path, assets=3, duration_s=10, interval_s=1.0, sensors=3)
    msgs = list(read_workload(str(path)))
    assert counts["sensors_per_asset"] == 3.0 and counts["values"] == 3 * len(msgs) == 90
    for m in msgs:
        r = normalize_message(m[2], now_ms=m[3])
        first = {"pump": ["flow", "discharge_pressure", "suction_pressure"],
                 "motor": ["speed", "current", "voltage"]}[r["asset_type"]]
        assert sorted(r["values"]) == sorted(first)


def test_bench_scale_writes_table_and_plot(tmp_path, capsys):
    rc = main(["bench", "scale", "--assets", "2,4", "--sensors", "2,8", "--duration", "3m",
               "--out", str(tmp_path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert [(r["sensors"], r["assets"]) for r in report["runs"]] == [(2, 2), (2, 4), (8, 2),
                                                                    (8, 4)]
    assert [r["messages"] for r in report["runs"]] == [2 * 180, 4 * 180] * 2
    assert [r["values"] for r in report["runs"]] == [2 * 360, 2 * 720, 8 * 360, 8 * 720]
    assert all(r["messages_per_s"] > 0 and r["peak_rss_mb"] > 0 for r in report["runs"])
    assert all(r["us_per_message"] == pytest.approx(1e6 / r["messages_per_s"], rel=0.01)
               for r in report["runs"])
    # fewer sensors, smaller twins (fewer models and window columns)
    assert report["runs"][0]["state_bytes_per_asset"] < report["runs"][2]["state_bytes_per_asset"]
    png = (tmp_path / "scale.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5_000
    assert json.loads((tmp_path / "scale.json").read_text()) == report


def test_bench_scale_rejects_bad_sizes(tmp_path, capsys):
    assert main(["bench", "scale", "--assets", "ten", "--out", str(tmp_path)]) == 2
    assert "positive integers" in capsys.readouterr().err
    assert main(["bench", "scale", "--assets", "5,0", "--out", str(tmp_path)]) == 2
    assert "positive integers" in capsys.readouterr().err
    assert main(["bench", "scale", "--sensors", "4,9", "--out", str(tmp_path)]) == 2
    assert "integers from 1 to 8" in capsys.readouterr().err


@pytest.mark.slow
def test_flink_closes_every_window_of_a_thousand_assets_at_end_of_input(tmp_path, capsys):
    # with ~1,000 assets the windows closed by the final watermark's timers used to be
    # lost (PyFlink stopped its Python worker first); the source now ends each asset
    rc = main(["bench", "--stages", "naive,flink", "--assets", "1000", "--duration", "2m",
               "--out", str(tmp_path), "--json"])
    report = json.loads(capsys.readouterr().out)
    assert rc == 0
    assert report["predictions"] == {"flink": 12_000, "flink_same_as_naive": True}


def test_bench_history_times_every_window_once_per_span_of_event_time(capsys):
    assert main(["bench", "history", "--assets", "2", "--duration", "2h", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    spans = report["spans"]
    assert [(s["from_h"], s["to_h"]) for s in spans] == [(0, 1), (1, 2)]
    # 60 s windows: an hour is 60 windows per asset, each timed once (the last one, at
    # 2 h, closed by the flush at the end)
    assert [s["windows"] for s in spans] == [120, 120]
    assert report["windows"] == 240
    assert all(s["us_per_window"] > 0 for s in spans)
    # a twin holds its models and open windows: kilobytes, not bytes or megabytes
    assert all(2_000 < s["state_bytes_per_asset"] < 100_000 for s in spans)

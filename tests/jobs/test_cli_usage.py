"""The CLI refuses what it cannot do: unknown flags, Beam options in the wrong place,
files it cannot score; one exit-code convention; hints that run as printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jobs import hints
from jobs.cli import EXIT_CODES, build_parser, main, summary_rows

REPO = Path(__file__).resolve().parents[2]


def _usage_error(argv, capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    return capsys.readouterr().err


def test_a_misspelt_flag_is_an_error_with_the_nearest_flag(capsys):
    err = _usage_error(["run", "--asets", "6"], capsys)
    assert "unrecognized arguments: --asets 6" in err
    assert "did you mean --assets?" in err


@pytest.mark.parametrize("argv, flag, suggestion", [
    (["flink", "run", "--asset", "3"], "--asset", "--assets"),
    (["bench", "nab", "--dta", "x"], "--dta", "--data"),
    (["simulate", "--bootstrap-server", "x:1"], "--bootstrap-server", "--bootstrap-servers"),
    (["replay", "x.csv", "--column", "a"], "--column", "--columns"),
])
def test_every_subcommand_takes_flags_only_as_spelt(argv, flag, suggestion, capsys):
    """No prefix abbreviations either: --asset must not silently mean --assets."""
    err = _usage_error(argv, capsys)
    assert f"{flag}: did you mean {suggestion}?" in err


def test_beam_options_are_taken_only_after_the_double_dash(capsys):
    err = _usage_error(["run", "--runner=FlinkRunner"], capsys)
    assert "--runner is a Beam pipeline option" in err
    assert "twin run -- --runner=FlinkRunner" in err


def test_unknown_beam_options_after_the_double_dash_are_errors_too(capsys):
    err = _usage_error(["run", "--", "--runer=DirectRunner"], capsys)
    assert "unknown Beam pipeline options after `--`: --runer: did you mean --runner?" in err


def test_only_twin_run_takes_beam_options(capsys):
    err = _usage_error(["evaluate", "out/run", "--", "--runner=DirectRunner"], capsys)
    assert "only `twin run` takes them" in err


def test_beam_options_after_the_double_dash_reach_the_run(monkeypatch):
    seen = {}

    def fake_run(args, beam_args):
        seen["beam"] = beam_args
        raise FileNotFoundError("stop here")

    monkeypatch.setattr("jobs.run.run", fake_run)
    assert main(["run", "--assets", "2", "--", "--max_cache_memory_usage_mb=50"]) == 2
    assert seen["beam"] == ["--max_cache_memory_usage_mb=50"]


def test_help_speaks_to_users_and_states_the_exit_codes():
    text = build_parser().format_help()
    assert "Each subcommand lives in its own module" not in text  # no developer docstring
    assert "start here:" in text and "twin run" in text and "twin evaluate out/run" in text
    for code in EXIT_CODES:
        assert f"  {code} " in text
    assert set(EXIT_CODES) == {0, 1, 2, 130}


def test_evaluate_says_why_a_folder_cannot_be_scored(tmp_path, capsys):
    assert main(["evaluate", str(tmp_path / "nowhere")]) == 2
    assert "nowhere is not a folder" in capsys.readouterr().err
    assert main(["evaluate", str(tmp_path)]) == 2
    assert "ground_truth.json is missing" in capsys.readouterr().err
    # a Kafka run: its ground truth is the file twin simulate wrote
    (tmp_path / "summary.json").write_text(json.dumps({"source": "kafka"}))
    assert main(["evaluate", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "twin simulate --ground-truth FILE" in err and "--ground-truth" in err
    truth = tmp_path / "truth.json"
    truth.write_text(json.dumps({"assets": [{"asset_id": "pump-000"}], "fault_episodes": []}))
    assert main(["evaluate", str(tmp_path), "--ground-truth", str(truth)]) == 2
    assert "has no actions (actions.avro or actions/)" in capsys.readouterr().err
    truth.write_text("{not json")
    assert main(["evaluate", str(tmp_path), "--ground-truth", str(truth)]) == 2
    assert "is not readable JSON" in capsys.readouterr().err


def test_evaluate_reads_flink_json_lines_and_refuses_a_foreign_ground_truth(tmp_path, capsys):
    """twin flink run writes its actions as JSON lines under actions/; the ground truth of
    another fleet is refused rather than scored."""
    acts = tmp_path / "actions" / "2026-12-07--14"
    acts.mkdir(parents=True)
    action = {"action_id": "pump-000:1000:ALERT", "asset_id": "pump-000", "kind": "ALERT",
              "ts_ms": 1000, "severity": "warning", "reason": "r", "anomaly_score": 1.0,
              "health_index": 0.5, "rul_s": None, "setpoint_name": None,
              "setpoint_value": None, "setpoint_previous": None, "dry_run": False}
    (acts / "actions-0.jsonl").write_text(json.dumps(action) + "\n")
    truth = {"assets": [{"asset_id": "pump-000"}], "fault_episodes": [],
             "regime_changes": [], "config": {"duration_s": 3600, "start_ms": 0}}
    (tmp_path / "ground_truth.json").write_text(json.dumps(truth))
    assert main(["evaluate", str(tmp_path), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert metrics["alerts"] == 1 and metrics["false_alarms"] == 1
    other = tmp_path / "other.json"
    other.write_text(json.dumps({**truth, "assets": [{"asset_id": "motor-001"}]}))
    assert main(["evaluate", str(tmp_path), "--ground-truth", str(other)]) == 2
    assert "actions of 1 assets the ground truth does not know (pump-000)" in \
        capsys.readouterr().err


def test_hints_name_the_program_as_it_can_be_run_from_here(tmp_path, monkeypatch):
    script = tmp_path / ".venv" / "bin" / "twin"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    assert hints.command("evaluate", "out/run", argv0=str(script)) == \
        ".venv/bin/twin evaluate out/run"
    monkeypatch.setenv("PATH", f"{script.parent}:/usr/bin:/bin")
    assert hints.command("evaluate", "out/my run", argv0=str(script)) == \
        "twin evaluate 'out/my run'"
    assert hints.path(tmp_path / "out" / "run") == "out/run"


def test_run_summary_says_how_to_read_each_number(tmp_path):
    truth = {"expected_dead_letters": {"bad_magic": 2}}
    (tmp_path / "ground_truth.json").write_text(json.dumps(truth))
    summary = {"source": "simulator", "assets": 2, "duration_s": 7200, "seed": 1,
               "readings_in": 100, "readings_valid": 98, "dead_letters": 2,
               "dead_letter_reasons": {"bad_magic": 2}, "late_readings": 1,
               "duplicate_readings": 3, "windows": 20, "predictions": 19, "anomalies": 5,
               "drift_events": 1, "actions": {"ALERT": 1, "SETPOINT": 2}, "invariant_ok": True,
               "elapsed_s": 1.0, "readings_per_s": 100.0}
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({
        "kind": ["ALERT", "SETPOINT", "SETPOINT"], "setpoint_name": [None, "speed", "speed"],
        "setpoint_value": [None, 140.0, 130.0], "setpoint_previous": [None, 150.0, 140.0],
        "dry_run": [False, False, True]}), tmp_path / "actions.parquet")
    rows = dict(summary_rows(summary, tmp_path))
    assert "one per window, not per incident" in rows["anomalies"]
    assert "1 alerts (one per episode" in rows["alerts"]
    assert "2 x speed [radian / second]: 130 to 140 (2 lowered, 1 dry run)" in rows["setpoints"]
    texts = [text for _, text in summary_rows(summary, tmp_path)]
    assert any("2 of them broken on purpose by the simulator (--malformed-rate), each for "
               "the reason its defect calls for" in t for t in texts)


@pytest.mark.slow
def test_the_installed_twin_refuses_a_typo_without_running_anything(tmp_path):
    """As a user meets it: the console script, exit 2, nothing written."""
    twin = Path(sys.executable).with_name("twin")
    proc = subprocess.run([str(twin), "run", "--asets", "6", "--out", str(tmp_path / "o")],
                          capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "COLUMNS": "100"})
    assert proc.returncode == 2
    assert "did you mean --assets?" in proc.stderr
    assert not (tmp_path / "o").exists()


def test_library_errors_name_the_program_as_it_can_be_run(tmp_path, monkeypatch):
    script = tmp_path / ".venv" / "bin" / "twin"
    script.parent.mkdir(parents=True)
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    monkeypatch.setattr(sys, "argv", [str(script), "broker", "status"])
    assert hints.rewrite("is the broker running? (`twin broker start` starts one)") == \
        "is the broker running? (`.venv/bin/twin broker start` starts one)"
    assert hints.rewrite("no `twin`-less text, twin run stays") == \
        "no `twin`-less text, twin run stays"


def test_status_of_nothing_running_is_a_failed_check(capsys):
    assert main(["broker", "status"]) == 1
    assert main(["flink", "cluster", "status"]) == 1
    out = capsys.readouterr().out
    assert "broker start`" in out and "flink cluster start`" in out

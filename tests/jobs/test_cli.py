"""The twin CLI end to end: a small simulated fleet through the whole pipeline."""

from __future__ import annotations

import json

import fastavro
import pyarrow.parquet as pq
import pytest

from jobs.cli import build_parser, main
from jobs.options import parse_duration
from schemas import load

START_MS = 1_795_800_000_000  # fixed event time: the run is reproducible byte for byte


def read(path):
    with open(path, "rb") as f:
        return list(fastavro.reader(f))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    rc = main(["run", "--assets", "3", "--duration", "3h", "--seed", "1", "--out", str(out),
               "--start-ms", str(START_MS), "--malformed-rate", "0.02", "--no-progress"])
    assert rc == 0
    return out


@pytest.mark.slow
def test_summary_accounts_for_every_message(run_dir):
    s = json.loads((run_dir / "summary.json").read_text())
    truth = json.loads((run_dir / "ground_truth.json").read_text())
    assert s["readings_in"] == sum(truth["messages"].values())  # every emitted message
    assert s["readings_in"] == s["readings_valid"] + s["dead_letters"]
    assert s["invariant_ok"] is True
    # each malformed message is rejected, and for the reason its defect calls for
    assert s["dead_letter_reasons"] == truth["expected_dead_letters"]
    assert s["dead_letters"] == sum(truth["expected_dead_letters"].values()) > 0
    dead = read(run_dir / "dead_letters.avro")
    assert len(dead) == s["dead_letters"]
    assert all(d["payload"] is not None and d["reason"] for d in dead)
    # late messages (3-10 min behind) miss their window and land in the late output
    assert 0 < s["late_readings"] <= truth["messages"].get("late", 0)  # the last may fit
    assert s["duplicate_readings"] == truth["messages"].get("duplicate", 0) // 2


@pytest.mark.slow
def test_outputs_decode_and_agree_with_counters(run_dir):
    s = json.loads((run_dir / "summary.json").read_text())
    preds = read(run_dir / "predictions.avro")
    assert len(preds) == s["predictions"] > 0
    assert all(0.0 <= p["anomaly_score"] <= 1.0 for p in preds)
    assert len({p["prediction_id"] for p in preds}) == len(preds)
    assert sum(p["is_anomaly"] for p in preds) == s["anomalies"]
    actions = read(run_dir / "actions.avro")
    assert sum(s["actions"].values()) == len(actions)
    late = read(run_dir / "late.avro")
    assert len(late) == s["late_readings"]
    features = read(run_dir / "features.avro")
    assert len(features) == s["windows"]
    table = pq.read_table(run_dir / "predictions.parquet")
    assert table.num_rows == len(preds)
    assert set(table.column_names) == {f["name"] for f in load("twin/prediction.v1")["fields"]}


@pytest.mark.slow
def test_evaluate_reports_metrics(run_dir, capsys):
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    m = json.loads(capsys.readouterr().out)
    truth = json.loads((run_dir / "ground_truth.json").read_text())
    assert m["fault_episodes"] == len(truth["fault_episodes"])
    for key in ("detected_episodes", "recall", "precision", "false_alarms_per_asset_day",
                "median_lead_time_s", "regime_change_alerts"):
        assert key in m


def test_duration_parsing_and_errors():
    assert parse_duration("1h30m") == 5400.0
    with pytest.raises(Exception, match="not a duration"):
        parse_duration("soon")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["evaluate"])  # a missing argument is a usage error


@pytest.mark.parametrize("argv", [["run"], ["sweep"], ["bench", "history"]])
def test_a_window_under_a_millisecond_is_a_usage_error_not_a_traceback(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--window", "0.0001"])
    assert exc.value.code == 2
    assert "a window must be at least 1 ms: '0.0001'" in capsys.readouterr().err


@pytest.mark.slow
def test_beam_pipeline_agrees_with_the_in_process_reference(run_dir):
    """Same fleet through Beam and through pipelines.local: same predictions and actions."""
    from pipelines.local import run_messages
    from transforms.simulator import Fleet, FleetConfig

    fleet = Fleet(FleetConfig(assets=3, duration_s=3 * 3600, seed=1, start_ms=START_MS,
                              malformed_rate=0.02))
    outputs, counts = run_messages((m.topic, m.key, m.value, m.arrival_ms)
                                   for m in fleet.messages())
    s = json.loads((run_dir / "summary.json").read_text())
    assert counts["readings_valid"] == s["readings_valid"]
    beam_preds = {p["prediction_id"]: p for p in read(run_dir / "predictions.avro")}
    local_preds = {p["prediction_id"]: p for p in outputs["prediction"]}
    assert beam_preds.keys() == local_preds.keys()
    for pid, p in local_preds.items():
        assert beam_preds[pid]["anomaly_score"] == pytest.approx(p["anomaly_score"], abs=1e-9)
    beam_actions = sorted(a["action_id"] for a in read(run_dir / "actions.avro"))
    assert beam_actions == sorted(a["action_id"] for a in outputs["action"])


def test_sweep_scores_several_seeds(capsys):
    assert main(["sweep", "--seeds", "3-4", "--assets", "2", "--duration", "150m",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert [m["seed"] for m in result["per_seed"]] == [3, 4]
    total = result["total"]
    assert total["fault_episodes"] == sum(m["fault_episodes"] for m in result["per_seed"])
    assert total["false_alarms"] == sum(m["false_alarms"] for m in result["per_seed"])
    assert 0.0 <= (total["recall"] or 0.0) <= 1.0


def test_shards_default_per_asset_for_streams_and_to_64_for_bounded_runs():
    import argparse

    from jobs.run import _shards, add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    assert _shards(parser.parse_args([])) == 64
    assert _shards(parser.parse_args(["--unbounded"])) == 0
    assert _shards(parser.parse_args(["--unbounded", "--shards", "8"])) == 8
    assert _shards(parser.parse_args(["--shards", "0"])) == 0
    with pytest.raises(SystemExit):
        parser.parse_args(["--shards", "-1"])


def test_the_default_history_ends_at_the_last_midnight_so_runs_repeat_all_day():
    """Without --start-ms the simulated history ends at the last midnight UTC: the
    weather follows the time of day, and a history ending at the wall clock gave every
    run other results. Any hour of one day gives the same fleet; the next day's fleet
    is the same day of weather a day later; an explicit --start-ms wins."""
    import argparse

    from jobs.options import DAY_MS, add_fleet_args, fleet_config_from

    parser = argparse.ArgumentParser()
    add_fleet_args(parser, assets=4, duration="12h")
    args = parser.parse_args([])
    day = 20_416 * DAY_MS  # 2025-11-24 00:00 UTC
    starts = {fleet_config_from(args, now_ms=day + h * 3_600_000 + 1234).start_ms
              for h in range(24)}
    assert starts == {day - 12 * 3_600_000}
    assert fleet_config_from(args, now_ms=day + DAY_MS).start_ms == day + DAY_MS - 43_200_000
    assert fleet_config_from(args, now_ms=day - 1).start_ms == day - DAY_MS - 43_200_000
    pinned = parser.parse_args(["--start-ms", "1795860000000"])
    assert fleet_config_from(pinned, now_ms=day).start_ms == 1_795_860_000_000


def test_kafka_run_flags_and_their_defaults():
    import argparse

    from jobs.run import add_arguments

    parser = argparse.ArgumentParser()
    add_arguments(parser)
    a = parser.parse_args([])
    assert (a.on_offset_reset, a.max_messages_per_slice, a.max_bytes_per_slice,
            a.max_messages, a.state_ttl, a.trust_unsigned_state) == (
        "fail", 250_000, 128 << 20, None, 7 * 86_400.0, False)
    assert parser.parse_args(["--max-bytes-per-slice", "4MiB"]).max_bytes_per_slice == 4 << 20
    a = parser.parse_args(["--state-ttl", "0", "--on-offset-reset", "latest",
                           "--max-messages", "5", "--max-messages-per-slice", "2"])
    assert (a.state_ttl, a.on_offset_reset, a.max_messages, a.max_messages_per_slice) == (
        0.0, "latest", 5, 2)
    assert parser.parse_args(["--state-ttl", "36h"]).state_ttl == 129_600.0
    for bad in (["--on-offset-reset", "smallest"], ["--max-messages-per-slice", "0"],
                ["--max-bytes-per-slice", "lots"],
                ["--state-ttl", "-1d"], ["--max-messages", "0"]):
        with pytest.raises(SystemExit):
            parser.parse_args(bad)


def test_the_cli_parses_every_command_without_importing_an_engine_or_a_model():
    """`twin --help`, `twin dashboard` or `twin tail` must not pay for Beam, Flink or River
    (hundreds of MB and seconds at start-up): each command imports what it runs."""
    import subprocess
    import sys

    code = ("import sys; from jobs.cli import build_parser; build_parser(); "
            "print(','.join(m for m in ('apache_beam', 'pyflink', 'river', 'scipy') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == ""

"""``twin dashboard``: flags, where the data comes from, secrets, and the command end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from jobs.cli import main
from jobs.dashboard import DashboardError, read_asset_info, read_token
from pipelines.kafka.broker import free_port
from tests.pipelines.dashboard.test_feeds import avro_folder

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "a-long-enough-dashboard-token"


def run_cli(args: list[str], capsys) -> tuple[int, str]:
    code = main(["dashboard", *args])
    return code, capsys.readouterr().err


def test_binding_beyond_loopback_needs_a_token(tmp_path, capsys):
    avro_folder(tmp_path / "run")
    code, err = run_cli([str(tmp_path / "run"), "--host", "0.0.0.0"], capsys)
    assert code == 2 and "needs a token" in err and "TWIN_DASHBOARD_TOKEN" in err


def test_there_is_no_token_flag(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["dashboard", "--token", TOKEN])
    assert exc.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err


def test_a_token_file_others_can_read_is_refused(tmp_path):
    f = tmp_path / "token"
    f.write_text(TOKEN + "\n")
    f.chmod(0o644)
    with pytest.raises(DashboardError, match="chmod 600"):
        read_token(f)
    f.chmod(0o600)
    assert read_token(f) == TOKEN


def test_a_short_token_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TWIN_DASHBOARD_TOKEN", "short")
    with pytest.raises(DashboardError, match="at least 16"):
        read_token(None)
    monkeypatch.setenv("TWIN_DASHBOARD_TOKEN", TOKEN)
    assert read_token(None) == TOKEN
    monkeypatch.delenv("TWIN_DASHBOARD_TOKEN")
    assert read_token(None) is None


def test_without_a_run_folder_it_says_what_to_do(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, err = run_cli([], capsys)
    assert code == 2 and "no run folder out/run" in err and "--bootstrap-servers" in err
    code, err = run_cli([str(tmp_path)], capsys)
    assert code == 2 and "no twin outputs" in err


def test_a_run_folder_and_kafka_together_are_refused(tmp_path, capsys):
    avro_folder(tmp_path / "run")
    code, err = run_cli([str(tmp_path / "run"), "--bootstrap-servers", "127.0.0.1:1"], capsys)
    assert code == 2 and "not both" in err


def test_an_unreachable_broker_is_one_line_and_exit_2(capsys):
    code, err = run_cli(["--bootstrap-servers", f"127.0.0.1:{free_port()}"], capsys)
    assert code == 2 and "127.0.0.1" in err and len(err.strip().splitlines()) <= 2


def test_bad_lookback(tmp_path, capsys):
    avro_folder(tmp_path / "run")
    code, err = run_cli([str(tmp_path / "run"), "--lookback", "soon"], capsys)
    assert code == 2 and "--lookback" in err


def test_asset_info_from_csv_and_json(tmp_path):
    csv_file = tmp_path / "assets.csv"
    csv_file.write_text("asset_id,site,name\npump-000,north,Feed pump\nmotor-001,south,\n")
    assert read_asset_info(csv_file) == {"pump-000": {"site": "north", "name": "Feed pump"},
                                         "motor-001": {"site": "south"}}
    js = tmp_path / "assets.json"
    js.write_text(json.dumps({"pump-000": {"site": "north"}}))
    assert read_asset_info(js) == {"pump-000": {"site": "north"}}
    js.write_text(json.dumps([{"site": "north"}]))
    with pytest.raises(DashboardError, match="entry 1 has no asset_id"):
        read_asset_info(js)
    js.write_text("[1, 2]")
    with pytest.raises(DashboardError, match="want a list of objects"):
        read_asset_info(js)


def test_the_command_serves_a_run_folder_and_keeps_the_token_out_of_its_output(tmp_path):
    out = avro_folder(tmp_path / "run")
    port = free_port()
    env = {**os.environ, "TWIN_DASHBOARD_TOKEN": TOKEN, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "jobs.cli", "dashboard", str(out),
                             "--port", str(port)], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = proc.stdout.readline()
        assert f"http://127.0.0.1:{port}/" in first and "run folder" in first
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/assets",
                                     headers={"Authorization": f"Bearer {TOKEN}"})
        body = json.loads(urllib.request.urlopen(req, timeout=10).read())
        assert [a["asset_id"] for a in body["assets"]] == ["pump-000"]
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=20)
    assert proc.returncode == 130
    assert TOKEN not in first + stdout + stderr

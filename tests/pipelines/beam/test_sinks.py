"""The output folder a run claims: Beam temp folders of killed runs are removed, a folder
another run is writing to is refused."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from pipelines.beam.sinks import LOCK_FILE, OutputFolderBusy, claim_out_dir

UUID = "7fef644cf24a11f1a4cd02fc00000001"


def test_stale_beam_temp_folders_go_and_nothing_else(tmp_path):
    out = tmp_path / "out"
    stale = [out / f"beam-temp-predictions-{UUID}", out / f"beam-temp-.checkpoint-{UUID}",
             out / f"beam-temp-dead_letters-{UUID[:-1]}2"]
    keep = [out / "beam-temp-notes", out / f"beam-temp-predictions-{UUID}.avro",
            out / "predictions.avro", out / "sub" / f"beam-temp-x-{UUID}"]
    for d in stale:
        (d / "part").mkdir(parents=True)
        (d / "part" / "f.avro").write_bytes(b"x")
    for k in keep:
        k.parent.mkdir(parents=True, exist_ok=True)
        if k.name.endswith(UUID):
            k.mkdir()
        else:
            k.write_bytes(b"y")
    with claim_out_dir(out) as held:
        assert held == out
        assert not any(d.exists() for d in stale)
        assert all(k.exists() for k in keep)
        assert (out / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        assert (out / LOCK_FILE).stat().st_mode & 0o777 == 0o600


def test_a_folder_another_run_holds_is_refused_and_its_temp_folders_kept(tmp_path):
    out = tmp_path / "out"
    busy = out / f"beam-temp-state-{UUID}"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\n"
         "from pipelines.beam.sinks import claim_out_dir\n"
         f"with claim_out_dir({str(out)!r}):\n"
         "    print('held', flush=True)\n"
         "    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert holder.stdout.readline().strip() == "held"
        busy.mkdir()  # the holder's sink writing
        with pytest.raises(OutputFolderBusy, match=f"another run \\(pid {holder.pid}\\) is "
                                                   f"writing to {out}"):
            with claim_out_dir(out):
                pass
        assert busy.exists()
    finally:
        holder.kill()
        holder.wait()
    with claim_out_dir(out):  # a killed holder's lock is gone with it
        assert not busy.exists()

"""Engine parity: the Flink job and the Beam pipeline on the same bounded input produce the
same predictions (same ids, equal scores), actions, state and dead letters."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import fastavro
import pytest

from jobs.tail import jsonable
from pipelines.flink.sinks import read_json_outputs

ROOT = Path(__file__).resolve().parents[3]
FLEET = ["--assets", "3", "--duration", "4h", "--seed", "4", "--start-ms", "1795800000000",
         "--malformed-rate", "0.02"]


def twin(*argv: str) -> None:
    bin_dir = str(Path(sys.executable).parent)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "HOME": str(Path.home())}
    subprocess.run([sys.executable, "-m", "jobs.cli", *argv], cwd=ROOT, env=env, check=True,
                   timeout=600, capture_output=True)


def beam_records(out: Path, name: str) -> list[dict]:
    with (out / f"{name}.avro").open("rb") as f:
        return [jsonable(r) for r in fastavro.reader(f)]


def assert_same(beam: dict, flink: dict, path: str = "") -> None:
    """Equal, floats within 1e-9 relative (both engines run the same Python, so the only
    freedom is summation order, and there is none in the twin)."""
    assert beam.keys() == flink.keys(), path
    for k, b in beam.items():
        f = flink[k]
        if isinstance(b, float) and isinstance(f, float):
            assert math.isclose(b, f, rel_tol=1e-9, abs_tol=1e-12), (path, k, b, f)
        elif isinstance(b, dict):
            assert_same(b, f, f"{path}.{k}")
        else:
            assert b == f, (path, k, b, f)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    base = tmp_path_factory.mktemp("parity")
    twin("run", *FLEET, "--out", str(base / "beam"), "--no-progress")
    twin("flink", "run", *FLEET, "--out", str(base / "flink"), "--parallelism", "2",
         "--checkpoint-interval", "2s")
    return base / "beam", base / "flink"


@pytest.mark.slow
@pytest.mark.parametrize("name,id_field", [("predictions", "prediction_id"),
                                           ("actions", "action_id")])
def test_same_predictions_and_actions(outputs, name, id_field):
    beam_dir, flink_dir = outputs
    beam = {r[id_field]: r for r in beam_records(beam_dir, name)}
    flink_list = read_json_outputs(flink_dir, name)
    flink = {r[id_field]: r for r in flink_list}
    assert len(flink) == len(flink_list)  # no duplicates in an undisturbed run
    assert set(beam) == set(flink) and len(beam) > 0
    for key, record in beam.items():
        assert_same(record, flink[key], key)
    if name == "actions":
        assert {r["kind"] for r in beam.values()} >= {"ALERT", "WORK_ORDER"}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["state", "features", "late", "dead_letters"])
def test_same_state_features_late_and_dead_letters(outputs, name):
    beam_dir, flink_dir = outputs

    def canonical(records):
        return sorted(json.dumps(r, sort_keys=True) for r in records)

    beam = canonical(beam_records(beam_dir, name))
    assert beam == canonical(read_json_outputs(flink_dir, name))
    assert name == "late" or len(beam) > 0


@pytest.mark.slow
def test_flink_summary_accounts_for_dead_letters(outputs):
    beam_dir, flink_dir = outputs
    beam = json.loads((beam_dir / "summary.json").read_text())
    flink = json.loads((flink_dir / "summary.json").read_text())
    assert flink["messages"] == beam["readings_in"]
    assert flink["dead_letter_reasons"] == beam["dead_letter_reasons"]
    assert flink["predictions"] == beam["predictions"]


@pytest.mark.slow
def test_twin_evaluate_scores_a_flink_run_folder_as_it_scores_beams(outputs):
    """`twin evaluate` reads Flink's JSON-lines actions: same metrics as the Beam run."""
    from jobs.evaluate import evaluate_dir

    beam_dir, flink_dir = outputs
    beam, flink = evaluate_dir(beam_dir), evaluate_dir(flink_dir)
    assert flink == beam and beam["alerts"] > 0

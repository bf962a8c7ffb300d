"""``twin bench faults`` at CI's size: a Kafka run SIGKILLed before and after a commit over
hostile input, rerun each time, loses nothing and adds nothing against an undisturbed run."""

from __future__ import annotations

import json

import pytest

from jobs.cli import main

pytestmark = pytest.mark.slow


def test_killed_and_rerun_over_hostile_input_nothing_lost_added_or_rescored(tmp_path,
                                                                            capsys):
    rc = main(["bench", "faults", "--assets", "3", "--hours", "0.75",
               "--max-messages-per-slice", "300", "--kills", "2", "--seed", "1",
               "--out", str(tmp_path), "--json"])
    f = json.loads(capsys.readouterr().out)
    assert rc == 0, f["failed"]
    assert f["failed"] == []
    assert f["kills"] == 2 and f["reruns"] == 2 and len(f["runs"]) == 3
    assert f["kills_before_commit"] == 1 and f["kills_after_commit"] == 1
    assert f["lost"] == f["extra"] == f["score_mismatch"] == f["file_duplicates"] == 0
    assert f["messages"]["hostile"] == {"tombstone": 3, "garbage": 3, "oversize": 1,
                                        "empty": 2, "year_2100": 1, "unknown_asset": 1}
    s = f["summary"]
    assert s["readings_in"] == f["messages"]["published"] == s["readings_valid"] \
        + s["dead_letters"]
    assert s["dead_letter_reasons"] == f["expected_dead_letters"]
    assert s["dead_letter_reasons"]["null_value"] == 3
    assert s["dead_letter_reasons"]["timestamp_in_future"] >= 1
    # every run's committed messages add up to the backlog: nothing read twice into state
    assert sum(r["messages_committed"] for r in f["runs"]) == f["messages"]["published"]
    for where in ("topics", "files"):
        assert f[where]["prediction"]["reference"] == s["predictions"] > 0
        assert f[where]["dead_letter"]["reference"] == s["dead_letters"]
    assert json.loads((tmp_path / "faults.json").read_text()) == f

"""``twin bench faults``' pure pieces: the hostile messages, the kill plan, the counting of
lost, extra and duplicated ids, the checks and the page's section."""

from __future__ import annotations

import copy

import pytest

from jobs.bench_faults import (
    HOSTILE,
    compare,
    expected_dead_letters,
    failed_checks,
    hostile_messages,
    kill_plan,
    left_behind,
    with_hostile,
)
from jobs.benchreport import faults, render
from transforms.errors import InvalidReading
from transforms.normalize import normalize_message
from transforms.simulator import Fleet, FleetConfig


@pytest.fixture(scope="module")
def messages():
    return list(Fleet(FleetConfig(assets=4, duration_s=1800, seed=3)).messages())


def test_each_hostile_message_gets_its_reason_and_the_unknown_asset_is_a_reading(messages):
    hostile = hostile_messages(messages, seed=3)
    assert hostile == hostile_messages(messages, seed=3)  # seeded
    assert {k: sum(1 for _, m in hostile if m.kind == k) for k in HOSTILE} == \
        {k: n for k, (n, _) in HOSTILE.items()}
    for at, m in hostile:
        like = messages[at]
        assert m.topic == like.topic
        if m.value is None:
            assert m.kind == "tombstone" and m.key == like.key
            continue
        expected = HOSTILE[m.kind][1]
        if expected is None:  # a well-formed reading of an asset the fleet does not have
            r = normalize_message(m.value, now_ms=like.arrival_ms)
            assert r["asset_id"].endswith("-999") and m.key == r["asset_id"].encode()
            continue
        with pytest.raises(InvalidReading) as err:
            normalize_message(m.value, now_ms=like.arrival_ms)
        assert err.value.reason == expected, m.kind
    (year_2100,) = [m for _, m in hostile if m.kind == "year_2100"]
    assert year_2100.arrival_ms == 4_102_444_800_000  # its Kafka timestamp forged too


def test_hostile_messages_go_before_their_index_and_nothing_else_moves(messages):
    hostile = hostile_messages(messages, seed=3)
    out = with_hostile(messages, hostile)
    assert len(out) == len(messages) + len(hostile)
    assert [m for m in out if m in messages] == messages
    for at, m in hostile:
        i = out.index(messages[at])
        assert m in out[:i] and m not in out[i + 1:]


def test_left_behind_counts_work_folders_and_temporary_entries(tmp_path):
    out, tmp = tmp_path / "out", tmp_path / "tmp"
    for d in (out / ".slice-000001", out / "beam-temp-x-0", tmp / "beam-pipeline-tempab"):
        d.mkdir(parents=True)
    (out / "predictions.avro").write_bytes(b"")
    assert left_behind(out, tmp) == {"out": 2, "tmpdir": 1}
    assert left_behind(out, tmp_path / "none") == {"out": 2, "tmpdir": 0}


def test_expected_dead_letters_add_the_hostile_reasons():
    assert expected_dead_letters({"null_value": 1, "malformed_avro": 2}) == {
        "bad_magic": 3, "empty_payload": 2, "malformed_avro": 2, "null_value": 4,
        "oversize_payload": 1, "timestamp_in_future": 1}


def test_kill_plan_kills_before_and_after_a_commit_each_at_least_once():
    for kills in range(2, 9):
        for seed in range(5):
            plan = kill_plan(kills, seed)
            assert len(plan) == kills and plan[0] == "before" and "after" in plan
            assert plan == kill_plan(kills, seed)
    assert kill_plan(1, 0) == ["after"] and kill_plan(0, 0) == []


def _p(pid: str, score: float) -> dict:
    return {"prediction_id": pid, "anomaly_score": score}


def test_compare_counts_lost_extra_duplicates_and_scores_by_id():
    reference = [_p("a", 0.1), _p("b", 0.2), _p("c", 0.3)]
    got = [_p("a", 0.1), _p("b", 0.2), _p("a", 0.1), _p("a", 0.1), _p("x", 0.9),
           _p("b", 0.2 + 1e-6)]
    assert compare("prediction", reference, got, "anomaly_score") == {
        "reference": 3, "records": 6, "distinct": 3, "lost": 1, "extra": 1,
        "duplicates": 3, "score_mismatch": 1}  # b: one copy of two differs
    assert compare("prediction", reference, reference, "anomaly_score") == {
        "reference": 3, "records": 3, "distinct": 3, "lost": 0, "extra": 0,
        "duplicates": 0, "score_mismatch": 0}


def test_dead_letters_are_compared_by_source_and_reason():
    d = [{"source": "twin.raw.orca/0@5", "reason": "empty_payload"},
         {"source": "twin.raw.orca/0@5", "reason": "empty_payload"},
         {"source": "twin.raw.orca/1@5", "reason": "empty_payload"}]
    c = compare("dead_letter", d[:1], d)
    assert (c["lost"], c["extra"], c["duplicates"]) == (0, 1, 1)


def _counts(**kw) -> dict:
    return {"reference": 10, "records": 10, "distinct": 10, "lost": 0, "extra": 0,
            "duplicates": 0, "score_mismatch": 0, **kw}


REASONS = {"null_value": 3, "bad_magic": 3}
FIGURES = {
    "assets": 3, "hours": 0.5, "interval_s": 5.0, "max_messages_per_slice": 300, "seed": 1,
    "messages": {"published": 100, "fleet": 97,
                 "fleet_defects": {"clean": 90, "duplicate": 4, "malformed": 3},
                 "hostile": {"tombstone": 3}},
    "expected_dead_letters": REASONS,
    "kills": 2, "reruns": 2, "kills_before_commit": 1, "kills_after_commit": 1,
    "runs": [{"run": 0, "planned": "before", "killed": True, "at_s": 9.5,
              "slices_committed": 0, "messages_committed": 0, "outputs_before_kill": 4},
             {"run": 1, "planned": "after", "killed": True, "at_s": 20.1,
              "slices_committed": 2, "messages_committed": 600, "outputs_before_kill": 80},
             {"run": 2, "planned": None, "killed": False, "at_s": 30.0,
              "slices_committed": 1, "messages_committed": 400, "outputs_before_kill": 50}],
    "reference_summary": {"dead_letter_reasons": REASONS, "slices": 1},
    "summary": {"readings_in": 100, "readings_valid": 94, "dead_letters": 6,
                "invariant_ok": True, "dead_letter_reasons": REASONS, "slices": 4},
    "topics": {"prediction": _counts(records=17, duplicates=7), "action": _counts(),
               "dead_letter": _counts()},
    "files": {"prediction": _counts(), "action": _counts(), "dead_letter": _counts()},
    "lost": 0, "extra": 0, "score_mismatch": 0, "topic_duplicates": 7,
    "file_duplicates": 0, "failed": [], "reference_wall_s": 40.5, "crashy_wall_s": 90.1,
    "left_behind": {"out": 0, "tmpdir": 2},
}


def test_copies_on_the_topics_pass_and_everything_else_fails_a_check():
    assert failed_checks(FIGURES) == []
    broken = copy.deepcopy(FIGURES)
    broken["topics"]["prediction"]["lost"] = 2
    broken["files"]["action"]["duplicates"] = 1
    broken["files"]["prediction"]["score_mismatch"] = 1
    broken["summary"]["readings_in"] = 101
    broken["summary"]["dead_letter_reasons"] = {"null_value": 3}
    assert failed_checks(broken) == [
        "topics prediction: lost 2", "files prediction: score_mismatch 1",
        "files action: duplicates 1",
        "summary: readings_in != readings_valid + dead_letters",
        "summary: readings_in 101 != published 100",
        "summary: dead-letter reasons differ from the expected ones"]


def _record(figures: dict) -> dict:
    return {"schema": 1, "bench": "faults", "date": "2026-12-07T18:00:00Z",
            "commit": "abc1234567", "dirty": False, "_file": "faults-x.json",
            "command": "twin bench faults --kills 2",
            "machine": {"cpu": "cpu", "cores": 2, "memory_gib": 23.0, "python": "3.11.9",
                        "packages": {}, "load_at_start": None},
            "parameters": {}, "figures": figures}


def test_the_page_section_gives_kills_reruns_and_the_counts_by_id():
    text = faults(_record(FIGURES))
    assert "SIGKILLed **2** times" in text and "(**2** reruns)" in text
    assert "| topics: prediction | 10 | 17 | 10 | 0 | 0 | 7 | 0 |" in text
    assert "| 1 | after | 20.1 s | 2 | 600 | 80 |" in text
    assert "readings in 100 = valid\n94 + dead letters 6" in text
    assert "Lost **0**, extra **0**" in text and "every check passed" in text
    assert "twin bench faults --kills 2" in text
    assert "took 40.5 s, the killed runs and their reruns\n90.1 s together" in text
    assert "0 work folders in the output folder, 2 entries" in text
    assert "on its defaults\n(1 slice(s)), is the reference" in text
    assert not [line for line in text.splitlines() if line != line.rstrip()]
    failed = copy.deepcopy(FIGURES)
    failed["failed"] = ["topics prediction: lost 2"]
    assert "**failed: topics prediction: lost 2**" in faults(_record(failed))
    assert "## Faults\n\n### Kills and hostile input" in render([_record(FIGURES)])

"""``twin bench latency``'s pure parts: which readings a window took and when the job's
watermark let it close, latency beyond that wait, percentiles, the page's section and the
command's checks of its flags."""

from __future__ import annotations

import json

from jobs.bench_latency import (
    WindowTiming,
    beyond_watermark,
    capacity_from_records,
    percentiles,
    summarize,
    window_timings,
)
from jobs.benchrecord import read_records
from jobs.benchreport import render
from jobs.cli import main

W, LATE, OOO, DELAY = 10_000, 0, 2_000, 30_000


def _second_by_second(asset: str, upto_s: int, transit_ms: int = 100):
    return [(asset, s * 1000, s * 1000 + transit_ms) for s in range(upto_s)]


def test_a_window_can_close_when_a_reading_passes_its_end_plus_the_out_of_orderness():
    readings = _second_by_second("a", 13)  # 0..12 s, each 100 ms in transit
    timings, skipped = window_timings(readings, W, LATE, OOO)
    first = timings[("a", 0)]
    assert first.last_ms == 9_100 and first.readings == 10
    # the data watermark (newest 12 s - 2 s) reaches the window's end with the 12 s reading
    assert first.closable_ms == 12_100 and first.ready_ms == 12_100
    assert timings[("a", 10_000)].closable_ms is None  # nothing past 22 s came
    assert skipped == {"late": 0, "duplicate": 0}


def test_allowed_lateness_adds_to_the_wait_and_assets_have_their_own_watermarks():
    readings = sorted(_second_by_second("a", 20) + _second_by_second("b", 12, 300),
                      key=lambda r: r[2])
    timings, _ = window_timings(readings, W, 5_000, OOO)
    assert timings[("a", 0)].closable_ms == 17_100  # 10 s + 5 s lateness + 2 s
    assert timings[("b", 0)].closable_ms is None  # b's newest is 11 s: not past 17 s


def test_late_readings_and_duplicates_are_not_the_window_s_last_reading():
    readings = _second_by_second("a", 13) + [
        ("a", 5_000, 12_500),  # its window closed at 12.1 s: late
        ("a", 11_000, 13_000),  # a second copy of 11 s: nothing new
    ]
    timings, skipped = window_timings(readings, W, LATE, OOO)
    assert timings[("a", 0)].last_ms == 9_100 and timings[("a", 0)].readings == 10
    assert timings[("a", 10_000)].last_ms == 12_100 and timings[("a", 10_000)].readings == 3
    assert skipped == {"late": 1, "duplicate": 1}


def test_a_reading_that_arrives_after_the_window_could_close_sets_its_ready_time():
    # a reading of 9 s delayed to 11.5 s arrives before 12 s moves the watermark on
    readings = [*_second_by_second("a", 9), ("a", 10_000, 10_100), ("a", 9_000, 11_500),
                ("a", 12_000, 12_100)]
    timings, _ = window_timings(readings, W, LATE, OOO)
    assert timings[("a", 0)].last_ms == 11_500 and timings[("a", 0)].closable_ms == 12_100


def test_the_engine_watermark_closes_a_quiet_asset_s_window():
    timings, _ = window_timings(_second_by_second("a", 10), W, LATE, OOO, DELAY)
    # no later reading: the engine watermark (arrival - 30 s) passes 10 s at 40 s
    assert timings[("a", 0)].closable_ms == 40_000
    # with data flowing, the data watermark closes it first
    timings, _ = window_timings(_second_by_second("a", 13), W, LATE, OOO, DELAY)
    assert timings[("a", 0)].closable_ms == 12_100
    # a reading arriving 31 s after its window's end is late by the engine watermark
    timings, skipped = window_timings([("a", 1_000, 1_100), ("a", 2_000, 41_000)],
                                      W, LATE, OOO, DELAY)
    assert timings[("a", 0)].readings == 1 and skipped["late"] == 1


def test_latency_beyond_the_watermark_is_landing_minus_the_later_of_last_and_closable():
    timings = {("a", 0): WindowTiming(9_100, 12_100, 10),
               ("a", 10_000): WindowTiming(21_800, 20_500, 10),  # last reading came late
               ("b", 0): WindowTiming(9_000, None, 10)}
    matched, unmatched = beyond_watermark(
        [("a", 0, 12_600), ("a", 10_000, 22_000), ("b", 0, 15_000), ("c", 0, 1)], timings)
    assert matched == [("a", 0, 500), ("a", 10_000, 200)]
    assert unmatched == [("b", 0), ("c", 0)]


def test_percentiles_are_nearest_rank_values_that_occurred():
    assert percentiles(range(1, 101)) == {"n": 100, "p50": 50, "p99": 99, "max": 100}
    assert percentiles([7]) == {"n": 1, "p50": 7, "p99": 7, "max": 7}
    assert percentiles([]) == {"n": 0, "p50": None, "p99": None, "max": None}
    assert percentiles([3, 1, 2])["p50"] == 2


def _figures():
    timings, skipped = window_timings(
        sorted(_second_by_second("a", 45) + _second_by_second("b", 45, 250),
               key=lambda r: r[2]), W, LATE, OOO, DELAY)
    rows = [("a", s, s + 12_100 + 400, s + 12_100 + 450) for s in (0, 10_000, 20_000, 30_000)]
    rows += [("b", s, s + 12_250 + 900, s + 12_250 + 1_000) for s in (0, 10_000, 20_000)]
    rows.append(("a", 10_000, 22_100 + 700, 22_100 + 800))  # a copy, written again
    bounds = [("warmup", 100.0, 0, 10_000), ("50", 50.0, 10_000, 25_000),
              ("90", 90.0, 25_000, 45_000)]
    return summarize(rows, timings, skipped, bounds, W, {
        "capacity_msg_per_s": 100.0, "capacity_source": "--capacity", "loads": [0.5, 0.9],
        "assets": 2, "phase_s": 15.0, "warmup_s": 10.0, "window_s": 10.0,
        "allowed_lateness_s": 0.0, "out_of_orderness_s": 2.0, "watermark_delay_s": 30.0,
        "partitions": 2})


def test_summary_counts_per_phase_by_window_start_and_leaves_the_first_window_out():
    f = _figures()
    assert f["predictions"] == 8 and f["matched"] == 8 and f["unmatched"] == 0
    assert f["copies"] == 1 and f["negative"] == 0
    half, most = f["phases"]
    assert half["load"] == 0.5 and most["load"] == 0.9
    # phase 10-25 s: windows starting in [20 s, 25 s): a's and b's at 20 s
    assert half["predictions"] == 2
    assert half["beyond_ms"] == {"n": 2, "p50": 400, "p99": 900, "max": 900}
    assert half["beyond_received_ms"]["p99"] == 1_000
    # phase 25-45 s: window starts in [35 s, 45 s): none; 30 s belongs to neither
    assert most["predictions"] == 0 and most["beyond_ms"]["p99"] is None


def _record(figures):
    return {"schema": 1, "bench": "latency", "date": "2026-02-01T00:00:00Z",
            "commit": "abc1234567", "dirty": False,
            "machine": {"cpu": "x", "cores": 2, "memory_gib": 8, "os": "Linux",
                        "arch": "x86_64", "python": "3.11.7", "packages": {}},
            "command": "twin bench latency --assets 2", "parameters": {},
            "figures": figures}


def test_the_latency_bench_has_its_section_with_percentiles_and_the_target(tmp_path):
    (tmp_path / "l.json").write_text(json.dumps(_record(_figures())))
    page = render(read_records(tmp_path))
    assert "## Latency" in page and "(`twin bench latency`)" in page
    assert "| 50 | 50 % | 2 | 400 ms | 900 ms | 900 ms | 1,000 ms |" in page
    assert "| 90 | 90 % | 0 | - | - | - | - |" in page
    assert "At 50 % of capacity p99 is **900 ms**: within the 1 s target." in page
    assert "8 of\n8 predictions matched" in page or "8 of 8 predictions matched" in page
    assert ".venv/bin/twin bench latency --assets 2" in page


def test_capacity_comes_from_the_latest_flink_slots_record(tmp_path):
    def slots(date, rate):
        return {**_record({"messages_per_s": {"1": rate, "2": rate + 1}}),
                "bench": "flink-slots", "date": date}

    (tmp_path / "a.json").write_text(json.dumps(slots("2026-01-01T00:00:00Z", 1000)))
    (tmp_path / "b.json").write_text(json.dumps(slots("2026-02-01T00:00:00Z", 1722)))
    assert capacity_from_records(read_records(tmp_path)) == (1722.0, "b.json")
    assert capacity_from_records([]) is None


def test_bad_loads_and_no_capacity_are_usage_errors(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TWIN_BENCH_RESULTS", str(tmp_path))  # no records
    assert main(["bench", "latency", "--loads", "half"]) == 2
    assert "--loads wants positive fractions" in capsys.readouterr().err
    assert main(["bench", "latency", "--loads", "0.5,-1"]) == 2
    assert main(["bench", "latency"]) == 2
    assert "no flink-slots record" in capsys.readouterr().err


def test_the_paced_plan_runs_the_phases_back_to_back_at_their_rates_in_due_order():
    from collections import defaultdict

    from jobs.bench_latency import paced_plan

    start = 1_796_000_000_000
    plan, bounds = paced_plan(4, [("warmup", 20.0, 3.0), ("a", 40.0, 5.0)], start)
    assert bounds == [("warmup", 20.0, start, start + 3_000),
                      ("a", 40.0, start + 3_000, start + 8_000)]
    assert [d for d, *_ in plan] == sorted(d for d, *_ in plan)
    events = [e for *_, e in plan]
    # 20/s for 3 s, 40/s for 5 s (samples jitter about their grid: one an asset may fall
    # beyond its phase's end and is left out)
    assert 56 <= sum(start <= e < start + 3_000 for e in events) <= 60
    assert 196 <= sum(start + 3_000 <= e < start + 8_000 for e in events) <= 200
    by_asset = defaultdict(list)
    for due, _, key, _, event in plan:
        assert 20 <= due * 1000 - event <= 400  # due at its arrival: 20-400 ms in transit
        by_asset[key].append(event)
    assert len(by_asset) == 4
    for times in by_asset.values():  # across the phases too: no repeats, and disorder
        assert len(set(times)) == len(times)  # only from transit times (well within the
        newest = times[0]  # bench's out-of-orderness bound)
        for t in times:
            assert t > newest - 400
            newest = max(newest, t)


def test_the_readme_headline_gives_the_latency_at_half_the_capacity():
    from jobs.benchreport import headline

    records = read_records_of([_record(_figures())])
    assert ("| Latency: Flink job, one slot, process mode, 50 % of capacity (beyond the "
            "watermark's wait, p50 / p99) | 400 / 900 ms at 50 messages/s |"
            ) in headline(records)
    thread = _figures()
    thread["python_mode"] = "thread"
    assert "one slot, thread mode, 50 %" in headline(read_records_of([_record(thread)]))


def test_the_page_names_the_python_mode_and_shows_checkpoints_per_phase():
    from jobs.benchreport import latency

    figures = _figures()
    figures.update(python_mode="process", bundle_time_s=0.1, checkpoints={
        p["phase"]: {"completed": 6, "failed": 1, "duration_p50_ms": 410,
                     "duration_max_ms": 1_500} for p in figures["phases"]})
    page = latency({**_record(figures), "_file": "latency.json"})
    assert "Python in `process` mode, bundles of at most 100 ms" in page
    assert "checkpoints p50 / max" in page and "410 / 1,500 ms (1 failed)" in page


def read_records_of(records):
    return [{**r, "_file": f"{i}.json"} for i, r in enumerate(records)]


def test_a_prediction_s_window_start_read_as_a_datetime_is_matched_by_epoch_ms():
    from datetime import UTC, datetime

    from jobs.bench_latency import epoch_ms

    start = datetime(2026, 12, 7, 19, 0, 10, tzinfo=UTC)  # as fastavro reads it
    assert epoch_ms(start) == 1_796_670_010_000 and epoch_ms(1_796_670_010_000) == \
        1_796_670_010_000
    timings = {("a", 1_796_670_010_000): WindowTiming(1_796_670_019_900,
                                                      1_796_670_022_100, 10)}
    matched, unmatched = beyond_watermark([("a", epoch_ms(start), 1_796_670_022_600)],
                                          timings)
    assert matched == [("a", 1_796_670_010_000, 500)] and not unmatched


def test_checkpoints_are_counted_in_the_phase_they_were_triggered_in():
    from jobs.bench_latency import checkpoints_by_phase

    bounds = [("warmup", 10.0, 0, 1_000), ("10", 10.0, 1_000, 3_000)]
    history = [
        {"status": "COMPLETED", "trigger_timestamp": 500, "end_to_end_duration": 9_000},
        {"status": "COMPLETED", "trigger_timestamp": 1_000, "end_to_end_duration": 300},
        {"status": "COMPLETED", "trigger_timestamp": 2_000, "end_to_end_duration": 700},
        {"status": "COMPLETED", "trigger_timestamp": 2_500, "end_to_end_duration": 500},
        {"status": "FAILED", "trigger_timestamp": 2_900},
        {"status": "IN_PROGRESS", "trigger_timestamp": 2_950},
        {"status": "COMPLETED", "trigger_timestamp": 3_000, "end_to_end_duration": 1},
    ]
    got = checkpoints_by_phase(history, bounds)
    assert got["warmup"] == {"completed": 1, "failed": 0, "duration_p50_ms": 9_000,
                             "duration_max_ms": 9_000}
    assert got["10"] == {"completed": 3, "failed": 1, "duration_p50_ms": 500,
                         "duration_max_ms": 700}


def test_the_page_and_headline_keep_the_latest_record_of_each_python_mode():
    from jobs.benchreport import headline, render

    process, thread, later_process = _figures(), _figures(), _figures()
    thread["python_mode"] = "thread"
    later_process["python_mode"] = "process"
    later_process["phases"][0]["beyond_ms"]["p50"] = 123
    records = read_records_of([_record(process), _record(thread), _record(later_process)])
    page, head = render(records), headline(records)
    assert "Latency beyond the watermark, process mode" in page
    assert "Latency beyond the watermark, thread mode" in page
    assert "one slot, process mode, 50 %" in head and "one slot, thread mode, 50 %" in head
    assert "123 ms" in page

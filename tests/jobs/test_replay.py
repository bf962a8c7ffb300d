"""``twin replay`` end to end on files the tests write: formats, folders, errors."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd
import pytest

from jobs.bench import SHARED_BENCH
from jobs.cli import main
from jobs.replay import ReplayError, replay, replay_file, score_rows


def series(n=800, seed=0, spike_at=600):
    rng = random.Random(seed)
    ts = pd.date_range("2024-01-01", periods=n, freq="5min")
    vals = [20 + rng.gauss(0, 1) for _ in range(n)]
    if spike_at is not None:
        vals[spike_at] = 45.0
    return ts, vals


def write_csv(path: Path, n=800, seed=0, spike_at=600) -> Path:
    ts, vals = series(n, seed, spike_at)
    pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "value": vals}).to_csv(
        path, index=False)
    return path


def test_csv_replay_writes_scores_and_flags_the_spike(tmp_path, capsys):
    src = write_csv(tmp_path / "one.csv")
    out = tmp_path / "scored.csv"
    assert main(["replay", str(src), "--output", str(out)]) == 0
    df = pd.read_csv(out)
    assert list(df.columns) == ["timestamp", "value", "anomaly_score", "is_anomaly", "alarm",
                                "contributors", "changepoint"]
    assert len(df) == 800 and df["timestamp"].iloc[0] == "2024-01-01 00:00:00"
    assert df["anomaly_score"].between(0, 1).all()
    assert (df["anomaly_score"].iloc[:150] == 0).all()  # warm-up
    assert df["is_anomaly"].iloc[600] == 1 and df["anomaly_score"].iloc[600] > 0.99
    assert df["alarm"].iloc[600] > 0.5 and df["contributors"].iloc[600].startswith("value")
    assert (df["alarm"].iloc[601:700] == 0).all()  # one episode, one alarm
    assert df["is_anomaly"].iloc[150:590].mean() < 0.03  # the calibrated limit on noise
    out_text = capsys.readouterr().out
    assert f"{df['is_anomaly'].sum()} abnormal rows, {(df['alarm'] > 0).sum()} alarms" \
        in out_text


def test_replay_equals_the_detector_fed_row_by_row(tmp_path):
    src = write_csv(tmp_path / "one.csv", seed=3)
    out = tmp_path / "o.csv"
    replay_file(src, out)
    _, vals = series(seed=3)
    import numpy as np

    scored = score_rows(np.array(vals)[:, None], names=["value"])
    df = pd.read_csv(out)
    assert np.allclose(df["anomaly_score"], scored["anomaly_score"], rtol=0, atol=1e-9)
    assert (df["is_anomaly"].to_numpy() == scored["is_anomaly"]).all()
    assert np.allclose(df["alarm"], scored["alarm"], rtol=0, atol=1e-9)


def test_multivariate_semicolon_log_with_datetime_column(tmp_path):
    rng = random.Random(4)
    n = 700
    rows = []
    for i in range(n):
        load = 0.6 + 0.1 * (i // 300)
        rows.append({"datetime": f"2023-03-{1 + i // 288:02d}T{(i % 288) // 12:02d}:"
                                 f"{(i % 12) * 5:02d}:00",
                     **{f"s{k}": round(load * (k + 1) * 10 + rng.gauss(0, 0.5), 3)
                        for k in range(8)}})
    rows[650]["s5"] = 200.0  # one broken sensor reading
    src = tmp_path / "plant.csv"
    pd.DataFrame(rows).to_csv(src, index=False, sep=";")
    out = tmp_path / "plant_scored.csv"
    assert main(["replay", str(src), "--output", str(out)]) == 0
    df = pd.read_csv(out, sep=";")  # output keeps the input's separator
    assert list(df.columns)[:9] == ["datetime", *[f"s{k}" for k in range(8)]]
    assert df["is_anomaly"].iloc[650] == 1
    assert df["changepoint"].sum() >= 1  # the load step at row 300


def skab_like(n=700, seed=6):
    """SKAB's layout: ``datetime;<8 sensors>;anomaly;changepoint`` (labels last)."""
    rng = random.Random(seed)
    names = ["Accelerometer1RMS", "Accelerometer2RMS", "Current", "Pressure", "Temperature",
             "Thermocouple", "Voltage", "Volume Flow RateRMS"]
    rows = []
    for i in range(n):
        fault = 500 <= i < 560
        row = {"datetime": f"2020-03-09 {10 + i // 3600:02d}:{(i // 60) % 60:02d}:{i % 60:02d}"}
        for k, name in enumerate(names):
            row[name] = round((k + 1) * 2.0 + rng.gauss(0, 0.05) + (3.0 if fault and k == 3
                                                                     else 0.0), 4)
        row["anomaly"], row["changepoint"] = float(fault), float(i in (500, 560))
        rows.append(row)
    return pd.DataFrame(rows)


def test_skab_like_log_labels_are_never_fed_to_the_detector(tmp_path, capsys):
    df = skab_like()
    src = tmp_path / "valve1.csv"
    df.to_csv(src, index=False, sep=";")
    out = tmp_path / "o.csv"
    assert main(["replay", str(src), "--output", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)[0]
    assert len(report["columns"]) == 8 and "anomaly" not in report["columns"]
    got = pd.read_csv(out, sep=";")
    assert list(got.columns)[-7:] == ["anomaly", "input_changepoint", "anomaly_score",
                                      "is_anomaly", "alarm", "contributors", "changepoint"]
    assert (got["input_changepoint"] == df["changepoint"]).all()  # labels carried along
    assert got["is_anomaly"].iloc[500] == 1  # the pressure fault, at its first row
    assert got["is_anomaly"].iloc[500:560].all()  # ... and for as long as it lasts
    assert got["contributors"].iloc[530].startswith("Pressure")
    # same scores as a file without the label columns: the labels were not read
    src2 = tmp_path / "nolabels.csv"
    df.drop(columns=["anomaly", "changepoint"]).to_csv(src2, index=False, sep=";")
    r2 = replay_file(src2, tmp_path / "o2.csv")
    assert (pd.read_csv(tmp_path / "o2.csv", sep=";")["anomaly_score"]
            == got["anomaly_score"]).all() and r2.columns == report["columns"]


def test_decimal_commas_and_day_first_dotted_dates(tmp_path):
    _, vals = series(400, seed=7, spike_at=300)
    ts = pd.date_range("2024-01-01", periods=400, freq="2h")  # 33 days: past the 12th
    src = tmp_path / "eu.csv"
    lines = ["Zeit;Druck"] + [f"{t:%d.%m.%Y %H:%M};" + f"{v:.3f}".replace(".", ",")
                              for t, v in zip(ts, vals, strict=True)]
    src.write_text("\n".join(lines) + "\n")
    assert src.read_text().splitlines()[1].startswith("01.01.2024 00:00;")
    r = replay_file(src, tmp_path / "o.csv", timestamp_column="Zeit")
    assert r.rows == 400 and r.columns == ["Druck"]
    assert any("decimal commas" in n for n in r.notes)
    assert not any("sorted" in n for n in r.notes)  # 13.01 after 12.01: read day first
    got = pd.read_csv(tmp_path / "o.csv", sep=";")
    assert abs(got["Druck"].iloc[5] - vals[5]) < 1e-3 and got["is_anomaly"].iloc[300] == 1


def test_parquet_folder_mirrors_relative_paths(tmp_path):
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    ts, vals = series(400, seed=5, spike_at=350)
    pd.DataFrame({"timestamp": ts, "value": vals}).to_parquet(src / "a" / "x.parquet")
    write_csv(src / "y.csv", n=300, spike_at=250)
    out = tmp_path / "out"
    assert main(["replay", str(src), "--output", str(out), "--json"]) == 0
    x = pd.read_parquet(out / "a" / "x.parquet")
    assert len(x) == 400 and x["is_anomaly"].iloc[350] == 1
    assert len(pd.read_csv(out / "y.csv")) == 300


def test_unsorted_and_duplicate_timestamps_are_sorted_kept_and_reported(tmp_path, capsys):
    src = write_csv(tmp_path / "u.csv", n=300, spike_at=None)
    df = pd.read_csv(src)
    df.iloc[[10, 11]] = df.iloc[[11, 10]].to_numpy()  # two rows swapped
    df = pd.concat([df.iloc[:21], df.iloc[[20]], df.iloc[21:]])  # one repeated timestamp
    df.to_csv(src, index=False)
    out = tmp_path / "o.csv"
    assert main(["replay", str(src), "--output", str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)[0]
    assert report["rows"] == 301
    notes = " ".join(report["notes"])
    assert "1 row(s) were earlier than the row before them: rows sorted" in notes
    assert "1 row(s) repeat the previous timestamp: kept" in notes
    got = pd.read_csv(out)
    assert got["timestamp"].is_monotonic_increasing


def test_true_false_columns_are_replayed_as_one_and_zero(tmp_path):
    src = write_csv(tmp_path / "flags.csv", n=300, spike_at=None)
    df = pd.read_csv(src).assign(running=[i % 2 == 0 for i in range(300)])
    df.to_csv(src, index=False)
    r = replay_file(src, tmp_path / "o.csv")
    assert r.columns == ["value", "running"] and r.rows == 300
    assert not any("NaN" in n for n in r.notes)  # every flag reached the detector as 1/0
    got = pd.read_csv(tmp_path / "o.csv")
    assert got["running"].tolist()[:3] == [True, False, True]  # written as read


def test_empty_cells_are_skipped_and_counted(tmp_path):
    src = write_csv(tmp_path / "m.csv", n=300, spike_at=None)
    df = pd.read_csv(src)
    df.loc[200:204, "value"] = None
    df.to_csv(src, index=False)
    r = replay_file(src, tmp_path / "o.csv")
    assert r.rows == 300 and any("5 empty/NaN cell(s)" in n for n in r.notes)


@pytest.mark.parametrize("mutate, args, message", [
    (lambda df: df, ["--columns", "value,pressure"], "no column(s) 'pressure'"),
    (lambda df: df.rename(columns={"timestamp": "when"}), [], "no timestamp column"),
    (lambda df: df.assign(value=df["value"].astype(object).where(df.index != 7, "high")),
     ["--columns", "value"], "column 'value' row 8: not a number: 'high'"),
    (lambda df: df.assign(timestamp=df["timestamp"].where(df.index != 3, "yesterday")), [],
     "column 'timestamp' row 4: not a timestamp: 'yesterday'"),
])
def test_bad_input_is_a_clear_error(tmp_path, capsys, mutate, args, message):
    src = write_csv(tmp_path / "bad.csv", n=50, spike_at=None)
    mutate(pd.read_csv(src)).to_csv(src, index=False)
    assert main(["replay", str(src), "--output", str(tmp_path / "o.csv"), *args]) == 2
    assert message in capsys.readouterr().err.replace("\n", "")
    assert not (tmp_path / "o.csv").exists()


def test_missing_input_and_empty_folder(tmp_path):
    with pytest.raises(ReplayError, match="nope.csv: no such file or folder"):
        replay(tmp_path / "nope.csv", tmp_path / "o.csv")
    (tmp_path / "empty").mkdir()
    assert main(["replay", str(tmp_path / "empty")]) == 2


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_BENCH / "nab_score.py").is_file(),
                    reason="the NAB corpus lives in ../shared/bench beside the repository")
def test_bench_nab_scores_the_whole_corpus(tmp_path, capsys):
    assert main(["bench", "nab", "--out", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["files"] == 58 and report["rows"] == 365_558
    # regression guard at the figures docs/benchmarks.md quotes
    assert report["standard"]["score"] >= 75.6
    assert report["reward_low_FP_rate"]["score"] >= 65.8
    assert report["reward_low_FN_rate"]["score"] >= 81.05
    assert (tmp_path / "results" / "realKnownCause" / "nyc_taxi.csv").is_file()


def compressor(n=3000, seed=11, fault_from=2500):
    """A compressor's log as a new user has it: pressure, temperature, vibration and
    current following one load, vibration creeping to 2.5 times normal at the end."""
    import numpy as np

    rng = np.random.default_rng(seed)
    load = 0.7 + 0.1 * np.sin(np.arange(n) / 90) + rng.normal(0, 0.02, n)
    creep = np.clip((np.arange(n) - fault_from) / 300, 0, 1)
    df = pd.DataFrame({
        "ts": pd.date_range("2026-12-01", periods=n, freq="1min").strftime(
            "%Y-%m-%dT%H:%M:%SZ"),
        "p_bar": 6 + 2 * load + rng.normal(0, 0.05, n),
        "t_c": 40 + 30 * load + rng.normal(0, 0.4, n),
        "vib": (1.5 + 1.0 * load) * (1 + 1.5 * creep) + rng.normal(0, 0.05, n),
        "amps": 20 + 30 * load + rng.normal(0, 0.3, n),
    })
    return df


def test_a_creeping_fault_is_abnormal_for_as_long_as_it_lasts(tmp_path):
    df = compressor()
    src = tmp_path / "comp7.csv"
    df.to_csv(src, index=False)
    replay_file(src, tmp_path / "o.csv")
    got = pd.read_csv(tmp_path / "o.csv")
    healthy, faulty = got.iloc[200:2500], got.iloc[2700:]
    assert faulty["anomaly_score"].mean() > 0.99 > healthy["anomaly_score"].mean()
    # about the stated 1 %: a slowly cycling load is autocorrelated, a young model unsure
    assert faulty["is_anomaly"].mean() > 0.95 and healthy["is_anomaly"].mean() < 0.05
    assert faulty["contributors"].str.startswith("vib:").mean() > 0.9
    # it pages, and not on every row: a worsening fault breaks its records again only
    # after each refractory period (max(50 rows, 4 % of the rows seen))
    pages = got.index[got["alarm"].iloc[2500:].gt(0).reindex(got.index, fill_value=False)]
    assert 1 <= len(pages) <= 500 // 100
    assert all(b - a >= 0.04 * a for a, b in zip(pages, pages[1:]))


def test_a_change_point_is_marked_where_the_level_changed(tmp_path):
    ts, vals = series(1600, seed=12, spike_at=None)
    vals = [v + (6.0 if i >= 1000 else 0.0) for i, v in enumerate(vals)]
    src = tmp_path / "step.csv"
    pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "value": vals}).to_csv(
        src, index=False)
    replay_file(src, tmp_path / "o.csv")
    marks = pd.read_csv(tmp_path / "o.csv")["changepoint"]
    rows = list(marks[marks == 1].index)
    assert rows and min(abs(r - 1000) for r in rows) <= 30  # dated back, not at detection


def test_entity_column_keeps_one_detector_per_device(tmp_path):
    a, b = compressor(1200, seed=1, fault_from=900), compressor(1200, seed=2, fault_from=5000)
    a["device"], b["device"] = "comp-7", "comp-8"
    both = pd.concat([a, b]).sort_values("ts", kind="stable").reset_index(drop=True)
    src = tmp_path / "fleet.csv"
    both.to_csv(src, index=False)
    report = replay_file(src, tmp_path / "o.csv", entity_column="device")
    assert report.columns == ["p_bar", "t_c", "vib", "amps"]  # the entity is not a value
    got = pd.read_csv(tmp_path / "o.csv")
    for device, alone in (("comp-7", a), ("comp-8", b)):
        alone.drop(columns="device").to_csv(tmp_path / f"{device}.csv", index=False)
        replay_file(tmp_path / f"{device}.csv", tmp_path / f"{device}-o.csv")
        expected = pd.read_csv(tmp_path / f"{device}-o.csv")
        mine = got[got["device"] == device].reset_index(drop=True)
        assert (mine["anomaly_score"] - expected["anomaly_score"]).abs().max() < 1e-12
        assert (mine["is_anomaly"] == expected["is_anomaly"]).all()
    assert got[got["device"] == "comp-7"]["is_anomaly"].iloc[1100:].mean() > 0.9
    with pytest.raises(ReplayError, match="no entity column 'asset'"):
        replay_file(src, tmp_path / "x.csv", entity_column="asset")


def test_with_a_model_history_goes_through_the_twin_one_per_asset(tmp_path, capsys):
    """Asset mode: the model's sensors are read from the columns named after them, each
    device is an asset with its own twin, every row gets its window's verdict."""
    model = Path(__file__).resolve().parents[2] / "docs" / "examples" / "compressor" / \
        "compressor.model.yaml"
    a, b = compressor(3000, seed=1, fault_from=2500), compressor(3000, seed=2, fault_from=10**6)
    a["device"], b["device"] = "comp-7", "comp-8"
    both = pd.concat([a, b]).sort_values("ts", kind="stable").reset_index(drop=True)
    both["extra"] = 1.0
    src = tmp_path / "hist.csv"
    both.to_csv(src, index=False)
    out = tmp_path / "o.csv"
    assert main(["replay", str(src), "--output", str(out), "--model", str(model),
                 "--entity-column", "device", "--window", "10m"]) == 0
    notes = capsys.readouterr().out
    assert "2 asset(s) of model plant-a@1" in notes and "extra are not sensors" in notes
    got = pd.read_csv(out)
    seven, eight = got[got["device"] == "comp-7"], got[got["device"] == "comp-8"]
    assert seven["is_anomaly"].iloc[2700:].mean() > 0.95
    assert seven["is_anomaly"].iloc[:2500].mean() < 0.03 and eight["is_anomaly"].mean() < 0.03
    assert (seven["alarm"] > 0).sum() == 1 and (eight["alarm"] > 0).sum() == 0
    assert seven["contributors"].dropna().iloc[-1].startswith("vib.")

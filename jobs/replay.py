"""``twin replay``: the pipelines' drift-aware detector over a table of history.

One CSV or Parquet file (one or many numeric columns and a timestamp column), or a folder
of them, is replayed row by row in timestamp order through the table detector
(:class:`~transforms.detectors.TableDetector`), exactly as a stream would reach it: each
row is scored, then learned from (``--entity-column``: one detector per device). The
output keeps every input column and adds ``anomaly_score`` (0..1, how abnormal the row is
now), ``is_anomaly`` (abnormal by the detector's calibrated limit), ``alarm`` (the onset
of an episode: 0, or how sure in (0.5, 1]), ``contributors`` (which columns, and their
shares) and ``changepoint`` (the row where a column's level began to change).

Input problems are errors naming the file, column and row, except two that are repaired
and reported: rows out of timestamp order are sorted (stably), and empty or NaN cells are
skipped by the detector (the row is still scored on its other columns and written out).
Duplicate timestamps are kept in file order and counted. Without per-file settings:
the separator is sniffed, decimal commas (``12,5``) and day-first dotted dates
(``31.01.2024 10:00``) are read as such, and label columns of public benchmarks
(``anomaly``, ``changepoint``, ``label``, ...) are carried to the output but never fed to
the detector.
"""

from __future__ import annotations

import argparse
import csv
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from transforms.detectors import Detector


SUFFIXES = {".csv": "csv", ".tsv": "csv", ".txt": "csv", ".parquet": "parquet", ".pq": "parquet"}
TIMESTAMP_NAMES = ("timestamp", "datetime", "date_time", "time", "date", "ts")
OUTPUT_COLUMNS = ("anomaly_score", "is_anomaly", "alarm", "contributors", "changepoint")
DETECTOR = {"kind": "table"}  # replay's one configuration (every setting at its default)
# columns that hold labels in public benchmarks (SKAB: anomaly, changepoint; NAB-style
# label files: label): never fed to the detector unless named with --columns
LABEL_NAMES = frozenset({"anomaly", "anomalies", "label", "labels", "is_anomaly",
                         "anomaly_score", "changepoint", "changepoints", "target", "class",
                         "fault", "faults", "alarm", "alarms"})
DOTTED_DATE = r"^\s*\d{1,2}\.\d{1,2}\.\d{2,4}"  # 31.01.2024: day first wherever written so


class ReplayError(ValueError):
    """An input that cannot be replayed; the message names the file, column and row."""


@dataclass
class ReplayReport:
    input: str
    output: str
    rows: int
    columns: list[str]
    anomalies: int
    alarms: int
    changepoints: int
    elapsed_s: float
    notes: list[str] = field(default_factory=list)


def _sniff_sep(path: Path) -> str:
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:
        head = fh.read(64 * 1024)
    try:
        return csv.Sniffer().sniff(head, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def read_table(path: Path, sep: str | None = None):
    """The file as a pandas DataFrame of strings/numbers, and the CSV separator used."""
    import pandas as pd

    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise ReplayError(f"{path}: not a CSV or Parquet file (suffixes: {', '.join(SUFFIXES)})")
    try:
        if kind == "parquet":
            return pd.read_parquet(path), None
        sep = sep or _sniff_sep(path)
        return pd.read_csv(path, sep=sep, skipinitialspace=True), sep
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise ReplayError(f"{path}: cannot read: {exc}") from exc


def _timestamp_column(df, path: Path, wanted: str | None) -> str:
    if wanted is not None:
        if wanted not in df.columns:
            raise ReplayError(f"{path}: no timestamp column {wanted!r}; columns: "
                              f"{', '.join(map(str, df.columns))}")
        return wanted
    for col in df.columns:
        if str(col).strip().lower() in TIMESTAMP_NAMES:
            return col
    raise ReplayError(f"{path}: no timestamp column (looked for {', '.join(TIMESTAMP_NAMES)}); "
                      f"name it with --timestamp-column; columns: "
                      f"{', '.join(map(str, df.columns))}")


def _parse_times(series, path: Path, col: str) -> np.ndarray:
    """Timestamps as int64 nanoseconds; numbers are taken as Unix seconds."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series):
        if series.isna().any():
            row = int(np.flatnonzero(series.isna().to_numpy())[0])
            raise ReplayError(f"{path}: column {col!r} row {row + 1}: empty timestamp")
        return (series.to_numpy(float) * 1e9).astype(np.int64)
    dayfirst = bool(series.astype(str).str.match(DOTTED_DATE).all())
    parsed = pd.to_datetime(series, errors="coerce", format="mixed", dayfirst=dayfirst)
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise ReplayError(f"{path}: column {col!r} row {row + 1}: not a timestamp: "
                          f"{series.iloc[row]!r} ({int(bad.sum())} such rows)")
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    return parsed.to_numpy("datetime64[ns]").astype(np.int64)


def _value_columns(df, path: Path, ts_col: str, wanted: list[str] | None) -> tuple[list, list]:
    """The columns to replay and notes on any skipped; numbers only, clear errors."""
    import pandas as pd

    notes = []
    if wanted:
        missing = [c for c in wanted if c not in df.columns]
        if missing:
            raise ReplayError(f"{path}: no column(s) {', '.join(map(repr, missing))}; columns: "
                              f"{', '.join(map(str, df.columns))}")
        cols = wanted
    else:
        cols = [c for c in df.columns if c != ts_col]
        labels = [c for c in cols if str(c).strip().lower() in LABEL_NAMES]
        if labels:
            notes.append(f"label-like column(s) {', '.join(map(repr, labels))} not fed to the "
                         "detector (kept in the output; name them in --columns to score them)")
            cols = [c for c in cols if c not in labels]
    out = []
    for c in cols:
        s = df[c]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            num = pd.to_numeric(s, errors="coerce")
            bad = (num.isna() & s.notna()).to_numpy()
            if not bad.any():  # True/False flags, or numbers held as objects: 1/0, values
                out.append(c)
                continue
            if s.dtype == object:  # "12,5": a decimal comma (sep ";" files)
                comma = pd.to_numeric(s.astype(str).str.replace(",", ".", regex=False)
                                      .where(s.notna()), errors="coerce")
                if not (comma.isna() & s.notna()).any():
                    df[c] = comma
                    notes.append(f"column {c!r}: decimal commas read as decimal points")
                    out.append(c)
                    continue
            if bad.all() and not wanted:
                notes.append(f"column {c!r} is not numeric: skipped")
                continue
            row = int(np.flatnonzero(bad)[0])
            raise ReplayError(f"{path}: column {c!r} row {row + 1}: not a number: "
                              f"{s.iloc[row]!r} ({int(bad.sum())} such rows; clean the file "
                              f"or leave the column out with --columns)")
        out.append(c)
    if not out:
        raise ReplayError(f"{path}: no numeric column to replay besides {ts_col!r}")
    return out, notes


def score_rows(values: np.ndarray, detector: Detector | None = None,
               names: list[str] | None = None) -> dict[str, np.ndarray]:
    """Score, then learn, each row of ``values`` (rows x columns; NaN = missing): the
    replay's output columns, one array each.

    ``changepoint`` marks the row where a change began (the detector reports it when it
    is sure, later: the mark is set back to the row it dates the change to)."""
    from transforms.detectors import make

    det = detector if detector is not None else make(**DETECTOR)
    names = names or [f"c{k}" for k in range(values.shape[1])]
    n = len(values)
    score, flag = np.zeros(n), np.zeros(n, np.int8)
    alarm, change = np.zeros(n), np.zeros(n, np.int8)
    contributors = np.empty(n, dtype=object)
    contributors[:] = ""
    strength = getattr(det, "alarm_strength", None)
    for i, row in enumerate(values.tolist()):
        x = dict(zip(names, row, strict=True))
        a = det.assess(x)
        drifted = det.learn_one(x, a)
        score[i], flag[i] = a.score, a.is_anomaly
        if a.alarm or (strength is None and a.is_anomaly):
            alarm[i] = strength(a) if strength is not None else a.score
        if a.is_anomaly or alarm[i]:
            w = a.weights
            contributors[i] = ";".join(f"{c}:{w[k]:.2f}" if k < len(w) else c
                                       for k, c in enumerate(a.contributors))
        started = getattr(det, "change_started", {})
        for col in drifted:
            change[min(max(started.get(col, i), 0), i)] = 1
    return {"anomaly_score": score, "is_anomaly": flag, "alarm": alarm,
            "contributors": contributors, "changepoint": change}


def score_entities(values: np.ndarray, entities: np.ndarray, names: list[str]
                   ) -> dict[str, np.ndarray]:
    """:func:`score_rows` with one detector per entity (rows keep their order)."""
    out: dict[str, np.ndarray] = {}
    for entity in dict.fromkeys(entities.tolist()):
        idx = np.flatnonzero(entities == entity)
        part = score_rows(values[idx], names=names)
        for k, v in part.items():
            if k not in out:
                out[k] = np.empty(len(values), dtype=v.dtype)
                if v.dtype == object:
                    out[k][:] = ""
            out[k][idx] = v
    return out


def score_assets(values: np.ndarray, ts: np.ndarray, entities: np.ndarray | None,
                 names: list[str], model, window_s: float) -> tuple[dict[str, np.ndarray],
                                                                  list[str]]:
    """Asset mode: the rows as readings of the model's assets, through one
    :class:`~transforms.twin.AssetTwin` each (windows, features, the asset detector, health,
    policy), every row given its window's verdict. Returns the output columns and notes."""
    from transforms import catalog
    from transforms.errors import InvalidReading
    from transforms.twin import PREDICTION, AssetTwin
    from transforms.validate import validate

    catalog.use(model)
    n = len(values)
    ids = entities if entities is not None else np.full(n, "asset", dtype=object)
    types: dict[str, str] = {}
    notes: list[str] = []
    for asset in dict.fromkeys(ids.tolist()):
        t = model.type_of(asset) if entities is not None else None
        if t is None and len(model.asset_types) == 1:
            t = next(iter(model.asset_types))
        if t is None:
            raise ReplayError(f"asset {asset!r} matches no asset of model {model.id}: name "
                              f"the asset column (--entity-column) or add an asset rule")
        types[asset] = t
    twins: dict[str, AssetTwin] = {}
    preds: dict[tuple[str, int], dict] = {}
    dead: dict[str, int] = {}
    used: set[str] = set()
    for i in range(n):
        asset, t = ids[i], types[ids[i]]
        sensors = {s.name for s in catalog.sensors_of(t)}
        vals = {c: float(v) for c, v in zip(names, values[i].tolist(), strict=True)
                if c in sensors and v == v}
        used.update(vals)
        reading = {"reading_id": f"replay:{asset}:{int(ts[i])}", "asset_id": asset,
                   "asset_type": t, "vendor": "replay", "ts_ms": int(ts[i]), "values": vals,
                   "bad_quality": []}
        try:
            validate(reading, now_ms=int(ts[i]))
        except InvalidReading as exc:
            dead[exc.reason] = dead.get(exc.reason, 0) + 1
            continue
        twin = twins.get(asset)
        if twin is None:
            twin = twins[asset] = AssetTwin(asset, t, window_ms=int(window_s * 1000))
        for tag, rec in twin.add(reading):
            if tag == PREDICTION:
                preds[(asset, rec["window_end_ms"])] = rec
    for asset, twin in twins.items():
        for tag, rec in twin.flush():
            if tag == PREDICTION:
                preds[(asset, rec["window_end_ms"])] = rec
    ignored = sorted(set(names) - used)
    if ignored:
        notes.append(f"column(s) {', '.join(ignored)} are not sensors of the model: ignored")
    if dead:
        notes.append("rows refused: " + ", ".join(f"{r} {k}" for r, k in sorted(dead.items())))
    window_ms = int(window_s * 1000)
    score, flag, alarm = np.zeros(n), np.zeros(n, np.int8), np.zeros(n)
    contributors = np.empty(n, dtype=object)
    contributors[:] = ""
    paged: set[tuple[str, int]] = set()
    for i in range(n):
        end = (int(ts[i]) // window_ms + 1) * window_ms
        p = preds.get((ids[i], end))
        if p is None:
            continue
        score[i], flag[i] = p["anomaly_score"], p["is_anomaly"]
        if p.get("alarm") and (ids[i], end) not in paged:  # on the window's first row
            paged.add((ids[i], end))
            alarm[i] = p["anomaly_score"]
        if p["is_anomaly"]:
            contributors[i] = ";".join(p["contributors"])
    notes.append(f"{len(twins)} asset(s) of model {model.id}, {len(preds)} windows of "
                 f"{window_s:g} s")
    return {"anomaly_score": score, "is_anomaly": flag, "alarm": alarm,
            "contributors": contributors, "changepoint": np.zeros(n, np.int8)}, notes


def replay_file(src: Path, dst: Path, timestamp_column: str | None = None,
                columns: list[str] | None = None, sep: str | None = None,
                entity_column: str | None = None, model=None,
                window_s: float = 60.0) -> ReplayReport:
    """Replay one file into ``dst`` (same format); returns what was done."""
    import pandas as pd

    t0 = time.perf_counter()
    df, used_sep = read_table(src, sep)
    if df.empty:
        raise ReplayError(f"{src}: no rows")
    ts_col = _timestamp_column(df, src, timestamp_column)
    if entity_column is not None and entity_column not in df.columns:
        raise ReplayError(f"{src}: no entity column {entity_column!r}; columns: "
                          f"{', '.join(map(str, df.columns))}")
    skip = df.drop(columns=[entity_column]) if entity_column is not None else df
    cols, notes = _value_columns(skip, src, ts_col, columns)
    ts = _parse_times(df[ts_col], src, ts_col)
    unsorted = int((np.diff(ts) < 0).sum())
    if unsorted:
        order = np.argsort(ts, kind="stable")
        df, ts = df.iloc[order].reset_index(drop=True), ts[order]
        notes.append(f"{unsorted} row(s) were earlier than the row before them: rows sorted "
                     "by timestamp (stable) before replay; the output is in that order")
    dups = int((np.diff(ts) == 0).sum())
    if dups:
        notes.append(f"{dups} row(s) repeat the previous timestamp: kept, in file order")
    values = df[cols].apply(pd.to_numeric, errors="coerce").astype(float).to_numpy()
    missing = int(np.isnan(values).sum())
    if missing:
        notes.append(f"{missing} empty/NaN cell(s): skipped by the detector, rows still scored")
    names = [str(c) for c in cols]
    if model is not None:
        ents = df[entity_column].astype(str).to_numpy() if entity_column is not None else None
        scored, more = score_assets(values, ts // 1_000_000, ents, names, model, window_s)
        notes.extend(more)
    elif entity_column is not None:
        entities = df[entity_column].astype(str).to_numpy()
        scored = score_entities(values, entities, names)
        notes.append(f"{len(set(entities.tolist()))} entities in column {entity_column!r}: "
                     f"one detector each")
    else:
        scored = score_rows(values, names=names)
    out = df.copy()  # every input column (labels too, for the user's own evaluation)
    clash = [c for c in OUTPUT_COLUMNS if c in out.columns]
    if clash:
        out = out.rename(columns={c: f"input_{c}" for c in clash})
        notes.append(f"input column(s) {', '.join(clash)} renamed input_<name> in the output")
    for name in OUTPUT_COLUMNS:
        out[name] = scored[name]
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    if SUFFIXES[src.suffix.lower()] == "parquet":
        out.to_parquet(tmp, index=False)
    else:
        out.to_csv(tmp, index=False, sep=used_sep or ",", float_format="%.10g")
    os.replace(tmp, dst)  # a crashed replay never leaves a half-written output behind
    return ReplayReport(str(src), str(dst), len(out), names,
                        int(scored["is_anomaly"].sum()), int((scored["alarm"] > 0).sum()),
                        int(scored["changepoint"].sum()), round(time.perf_counter() - t0, 3),
                        notes)


def inputs_of(src: Path) -> list[Path]:
    """``src`` itself, or every CSV/Parquet file under the folder ``src`` (sorted)."""
    if src.is_file():
        return [src]
    if not src.is_dir():
        raise ReplayError(f"{src}: no such file or folder")
    found = sorted(p for p in src.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
    if not found:
        raise ReplayError(f"{src}: no CSV or Parquet files in this folder")
    return found


def _job(args: tuple) -> ReplayReport | str:
    src, dst, kw = args
    try:
        return replay_file(src, dst, **kw)
    except ReplayError as exc:
        return str(exc)


def replay(src: Path, dst: Path, workers: int = 1, **kw: Any) -> tuple[list, list[str]]:
    """Replay a file or a folder (one output per input, same relative paths).

    Returns the reports and the errors; every file is attempted even if others fail.
    """
    files = inputs_of(src)
    jobs = [(f, dst if src.is_file() else dst / f.relative_to(src), kw) for f in files]
    if workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(min(workers, len(jobs))) as pool:
            results = list(pool.map(_job, jobs, chunksize=1))
    else:
        results = [_job(j) for j in jobs]
    return ([r for r in results if isinstance(r, ReplayReport)],
            [r for r in results if isinstance(r, str)])


def add_arguments(p: argparse.ArgumentParser) -> None:
    from jobs.options import window_duration

    p.add_argument("input", type=Path, help="CSV or Parquet file, or a folder of them")
    p.add_argument("--output", type=Path, default=None,
                   help="output file (or folder, for a folder input); default out/replay/<name>")
    p.add_argument("--timestamp-column", default=None,
                   help=f"default: the first column named {', '.join(TIMESTAMP_NAMES)}")
    p.add_argument("--columns", default=None,
                   help="comma-separated value columns (default: every numeric column)")
    p.add_argument("--sep", default=None, help="CSV separator (default: sniffed: , ; tab |)")
    p.add_argument("--model", action="append", metavar="FILE", default=None,
                   help="asset mode: an asset model file (repeatable); the columns named as "
                        "its sensors are read as the assets' readings and go through the "
                        "twin (windows, the asset detector, health), one per asset")
    p.add_argument("--window", type=window_duration, default="60s",
                   help="asset mode: the twin's event-time window (default 60s; at least 4 "
                        "rows must fall in one to score it)")
    p.add_argument("--entity-column", default=None,
                   help="a column naming the device or asset of each row: one detector "
                        "per entity (e.g. --entity-column device)")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="processes for a folder (default: up to 2)")
    p.add_argument("--json", action="store_true", help="print the reports as JSON")


def main(args: argparse.Namespace) -> int:
    import json

    from rich.console import Console

    err = Console(stderr=True)
    src: Path = args.input
    dst = args.output or Path("out") / "replay" / src.name
    cols = [c.strip() for c in args.columns.split(",") if c.strip()] if args.columns else None
    sep = {"\\t": "\t", "tab": "\t"}.get(args.sep, args.sep)
    try:
        model = None
        if args.model:
            from transforms.model import ModelError, load_model

            try:
                model = load_model(*args.model)
            except ModelError as exc:
                raise ReplayError(str(exc)) from None
        reports, errors = replay(src, dst, args.workers, timestamp_column=args.timestamp_column,
                                 columns=cols, sep=sep, entity_column=args.entity_column,
                                 model=model, window_s=args.window)
    except ReplayError as exc:
        err.print(f"[red]twin replay: {exc}[/red]", highlight=False)
        return 2
    for e in errors:
        err.print(f"[red]twin replay: {e}[/red]", highlight=False)
    if args.json:
        print(json.dumps([asdict(r) for r in reports], indent=1))
    else:
        out = Console()
        for r in reports:
            rate = r.rows / r.elapsed_s if r.elapsed_s else 0
            out.print(f"{r.input}: {r.rows} rows x {len(r.columns)} column(s), "
                      f"{r.anomalies} abnormal rows, {r.alarms} alarms, "
                      f"{r.changepoints} change points "
                      f"({r.elapsed_s:.1f} s, {rate:,.0f} rows/s) -> {r.output}", highlight=False)
            for note in r.notes:
                out.print(f"  note: {note}", highlight=False)
        if reports:
            out.print(f"output in [bold]{dst}[/bold]")
    return 2 if errors else 0

"""``twin model check|draft``: connect a plant with files, not code.

``twin model check FILES...`` validates model and format files (each told apart by its
first key, ``model:`` or ``format:``), checks the formats against the model, and prints
what the twin will understand: asset types, sensors with units, ranges and roles, the
setpoint, the asset rules, each format's topics and fields. Exit 2 with the file, line and
field of the first problem.

``twin model draft SAMPLE`` drafts a model and a format from a few sample messages (a file
of JSON lines, or a CSV file whose first line names the columns): the asset and time
fields, the numeric fields as sensors with units guessed from their names (``p_bar``,
``t_c``, ``vib_mm_s``, ``amps``) and roles guessed from what they measure (vibration and
temperatures are condition, pressures, flows, speeds and currents the operating point,
the weather exogenous), ranges widened from the samples. A draft is for a person to edit:
every guess is marked as one.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from rich.console import Console


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="model_command", required=True)
    p_check = sub.add_parser("check", help="validate model and format files and show what "
                                           "the twin will understand")
    p_check.add_argument("files", nargs="+", type=Path, help="model and format files (YAML)")
    p_draft = sub.add_parser("draft", help="draft a model and a format from sample messages "
                                           "(JSON lines, or CSV with a header)")
    p_draft.add_argument("sample", type=Path, help="a file of a few sample messages")
    p_draft.add_argument("--topic", default=None, help="the topic they arrive on")
    p_draft.add_argument("--name", default=None,
                         help="the asset type's name (default: from the file name)")
    p_draft.add_argument("--out", type=Path, default=None,
                         help="write <name>.model.yaml and <name>.format.yaml here "
                              "(default: print them)")


def main(args: argparse.Namespace) -> int:
    from transforms.model import ModelError

    err = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        if args.model_command == "check":
            return check_main(args.files)
        return draft_main(args)
    except ModelError as exc:
        err.print(f"[red]twin model: {exc}[/red]")
        return 2


# -- check ------------------------------------------------------------------------------------

def check_main(files: list[Path]) -> int:
    from transforms.formats import check_against, parse_format
    from transforms.model import BUILTIN, ModelError, load_model, parse_model, read_document

    models, formats = [], []
    for path in files:
        data, where = read_document(path)
        if "format" in data:
            formats.append(parse_format(data, str(path), where))
        elif "model" in data:
            models.append(parse_model(data, str(path), where))
        else:
            raise ModelError(f"{path}: neither a model file (model: ...) nor a format file "
                             f"(format: ...)")
    model = load_model(*[m.source for m in models]) if models else load_model(BUILTIN)
    for fmt in formats:
        check_against(fmt, model)
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"model {model.id} ({model.source})")
    for t in model.asset_types.values():
        console.print(f"  asset type {t.name}" + (f": {t.description}" if t.description else ""))
        for s in t.sensors:
            console.print(f"    {s.name:<20} {s.role:<16} {s.unit} in [{s.low:g}, {s.high:g}]")
        if t.setpoint:
            sp = t.setpoint
            console.print(f"    setpoint {sp.sensor}: {sp.min:g}..{sp.max:g} of nominal, steps "
                          f"of {sp.step:g}, at most one change per {sp.interval_s:g} s")
        else:
            console.print("    no setpoint: the twin commands nothing")
    for r in model.assets:
        where = ", ".join(f"{k} {v}" for k, v in (("site", r.site), ("line", r.line),
                                                   ("parent", r.parent)) if v)
        console.print(f"  assets {r.match} -> {r.type}" + (f" ({where})" if where else ""))
    for f in formats:
        console.print(f"format {f.id} ({f.source}): {f.encoding}, {f.layout}, topics "
                      f"{', '.join(f.topics) or '(none: files only)'}")
        kind = f.asset_type or (f"from {f.asset_type_field!r}" if f.asset_type_field
                                else "from the model")
        console.print(f"  asset from {f.asset!r}, type {kind}, time from {f.time_field!r} "
                      f"({f.time_format}, naive times in {f.zone})")
        for v in f.values:
            console.print(f"  {v.sensor:<20} <- {v.field!r} in "
                          f"{v.unit or 'the unit of ' + repr(v.unit_field)}")
        for tag, (sensor, unit) in f.tags.items():
            console.print(f"  {sensor:<20} <- tag {tag!r}" + (f" in {unit}" if unit else ""))
    console.print("ok")
    return 0


# -- draft ------------------------------------------------------------------------------------

ASSET_NAMES = ("device", "asset", "asset_id", "assetid", "machine", "equipment", "id", "name",
               "thing", "unit")
TIME_NAMES = ("ts", "time", "timestamp", "datetime", "date_time", "t", "date")
# name fragment -> (unit, role, canonical range) of a guess
GUESSES: list[tuple[str, str, str, tuple[float, float]]] = [
    (r"(^|_)(vib|vibration)", "millimeter / second", "condition", (0.0, 100.0)),
    (r"(bearing|winding|oil|motor)_?(temp|t)", "degC", "condition", (-40.0, 250.0)),
    (r"(ambient|outdoor|outside|weather)", "degC", "exogenous", (-60.0, 70.0)),
    (r"(^|_)(t|temp|temperature)(_c|_degc)?$|_c$|_degc$", "degC", "condition", (-40.0, 250.0)),
    (r"_k$|kelvin", "kelvin", "condition", (200.0, 600.0)),
    (r"_kpa$", "kilopascal", "operating_point", (0.0, 10000.0)),
    (r"_pa$", "pascal", "operating_point", (0.0, 1.0e7)),
    (r"_psi$", "psi", "operating_point", (0.0, 2000.0)),
    (r"(^|_)(p|press|pressure)(_bar)?$|_bar$", "bar", "operating_point", (0.0, 200.0)),
    (r"(^|_)(amps|amp|current|i)(_a)?$|_a$", "ampere", "operating_point", (0.0, 5000.0)),
    (r"(^|_)(volt|voltage|v|u)(_v)?$|_v$", "volt", "operating_point", (0.0, 20000.0)),
    (r"rpm|(^|_)speed", "revolution / minute", "operating_point", (0.0, 20000.0)),
    (r"_hz$|freq", "hertz", "operating_point", (0.0, 500.0)),
    (r"_kw$|power", "kilowatt", "operating_point", (0.0, 100000.0)),
    (r"flow|_m3h$", "meter ** 3 / hour", "operating_point", (0.0, 100000.0)),
    (r"load|_pct$|percent", "percent", "operating_point", (0.0, 100.0)),
]


def read_samples(path: Path) -> tuple[list[dict[str, Any]], str, list[str]]:
    """The sample messages as records, their encoding (``json`` or ``csv``) and, for CSV,
    the column names; ``ModelError`` if the file is neither."""
    from transforms.model import ModelError

    text = path.read_text()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ModelError(f"{path}: no sample messages")
    if lines[0].lstrip().startswith("{"):
        try:
            return [json.loads(ln) for ln in lines], "json", []
        except ValueError as exc:
            raise ModelError(f"{path}: a line is not JSON: {exc}") from None
    rows = list(csv.reader(io.StringIO(text)))
    header, body = rows[0], [r for r in rows[1:] if r]
    if len(header) < 2 or not body:
        raise ModelError(f"{path}: neither JSON lines nor a CSV file with a header line "
                         f"and sample lines")
    return [dict(zip(header, (_cell(c) for c in r), strict=False)) for r in body], "csv", header


def _cell(text: str) -> Any:
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            return text


def _flat(record: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _time_format(values: list[Any]) -> str:
    v = values[0]
    if isinstance(v, int | float):
        magnitude = abs(float(v))
        return ("epoch_ns" if magnitude > 1e17 else "epoch_us" if magnitude > 1e14
                else "epoch_ms" if magnitude > 1e11 else "epoch_s")
    return "iso8601"


def guess(field: str) -> tuple[str, str, tuple[float, float]]:
    """(unit, role, range) guessed from a field's name.

    >>> guess("p_bar")[:2], guess("amps")[:2]
    (('bar', 'operating_point'), ('ampere', 'operating_point'))
    >>> guess("vib")[:2]
    ('millimeter / second', 'condition')
    """
    name = field.lower().rsplit(".", 1)[-1]
    for pattern, unit, role, rng in GUESSES:
        if re.search(pattern, name):
            return unit, role, rng
    return "dimensionless", "condition", (-1.0e6, 1.0e6)


def _sensor_name(field: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_]", "_", field.rsplit(".", 1)[-1]).strip("_") or "value"
    return name if name[0].isalpha() else f"s_{name}"


def draft(samples: list[dict[str, Any]], encoding: str, columns: list[str], type_name: str,
          topic: str | None) -> tuple[str, str]:
    """The drafted model and format, as YAML text."""
    from transforms.model import ModelError

    flat = [_flat(s) for s in samples]
    fields = list(dict.fromkeys(k for r in flat for k in r))
    asset = next((f for f in fields if f.rsplit(".", 1)[-1].lower() in ASSET_NAMES), None)
    time = next((f for f in fields if f.rsplit(".", 1)[-1].lower() in TIME_NAMES), None)
    if asset is None or time is None:
        raise ModelError(f"cannot tell the {'asset' if asset is None else 'time'} field from "
                         f"{', '.join(fields)}: write the format by hand "
                         f"(docs/connect-your-plant.md)")
    numeric = [f for f in fields if f not in (asset, time)
               and all(isinstance(r.get(f), int | float) and not isinstance(r.get(f), bool)
                       for r in flat if f in r)]
    if not numeric:
        raise ModelError("no numeric fields to take as sensors")
    sensors, values = [], []
    for f in numeric:
        unit, role, (lo, hi) = guess(f)
        seen = [float(r[f]) for r in flat if f in r]
        lo, hi = min(lo, min(seen) - abs(min(seen))), max(hi, max(seen) * 10)
        name = _sensor_name(f)
        sensors.append(f"      {name}: {{unit: {unit}, range: [{lo:g}, {hi:g}], role: {role}}}"
                       f"  # guessed")
        values.append(f"  {name}: {{field: {f}, unit: {unit}}}  # guessed")
    if not any("operating_point" in s for s in sensors):
        sensors[0] = sensors[0].replace("role: condition", "role: operating_point")
    ids = sorted({str(r[asset]) for r in flat})
    prefix = re.match(r"[A-Za-z_]+", ids[0])
    match = f"{prefix.group(0)}*" if prefix else ids[0]
    model = "\n".join([
        "# drafted by `twin model draft`: check every line marked guessed",
        f"model: {type_name}-plant", "version: 1", "asset_types:", f"  {type_name}:",
        "    sensors:", *sensors, "assets:", f'  - {{match: "{match}", type: {type_name}}}', ""])
    lines = [
        "# drafted by `twin model draft`: check every line marked guessed",
        f"format: {type_name}-{encoding}", "version: 1",
        *( [f"topics: [{topic}]"] if topic else []), f"encoding: {encoding}",
        *( [f"csv: {{columns: [{', '.join(columns)}]}}"] if encoding == "csv" else []),
        f"asset: {asset}",
        f"time: {{field: {time}, format: {_time_format([r[time] for r in flat])}}}"
        "  # guessed (naive times are taken as UTC: add zone: Europe/Berlin if not)",
        "values:", *values, ""]
    return model, "\n".join(lines)


def draft_main(args: argparse.Namespace) -> int:
    from transforms.formats import parse_format
    from transforms.model import parse_model

    samples, encoding, columns = read_samples(args.sample)
    name = args.name or _sensor_name(args.sample.stem.split(".")[0]).lower()
    model_text, format_text = draft(samples, encoding, columns, name, args.topic)
    import yaml

    m = parse_model(yaml.safe_load(model_text), "<draft>")  # a draft must load as it is
    parse_format(yaml.safe_load(format_text), "<draft>")
    console = Console(highlight=False, soft_wrap=True)
    if args.out is None:
        print(model_text)
        print("---")
        print(format_text)
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        mp, fp = args.out / f"{name}.model.yaml", args.out / f"{name}.format.yaml"
        mp.write_text(model_text)
        fp.write_text(format_text)
        console.print(f"drafted {mp} and {fp} ({len(m.asset_types[name].sensors)} sensors); "
                      f"edit them, then: twin model check {mp} {fp}")
    return 0

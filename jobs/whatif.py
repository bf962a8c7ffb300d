"""``twin whatif`` and ``twin optimize``: ask a twin what happens if its asset is run
differently, and which setpoint it recommends.

Where the twin comes from (one of):

- ``DIR``: a run folder (``twin run``, ``twin run --source kafka``, ``twin flink run
  --out``): its ``state.parquet`` (or ``state.avro``), or such a file itself. State records
  carry the learned models every ``learned_every`` windows; the latest is brought up to the
  asset's newest record (:func:`transforms.whatif.model.from_states`);
- ``--source kafka``: the ``twin.state`` topic, read from its start to its current end;
- ``--state-file FILE``: the state file of bounded Kafka runs (the twins themselves, as
  the run left them).

The scenario: ``--set SENSOR=VALUE`` (repeatable) with ``--from`` and ``--for``, or
``--scenario FILE`` (JSON or TOML, several steps); :mod:`transforms.whatif.scenario`
says what values and times look like.

``twin whatif`` prints a table (baseline beside scenario at a few horizons), writes
``OUT/<asset>.json`` (the library's result) and ``OUT/<asset>.png`` (a plot), or prints
the JSON with ``--json``. ``twin optimize`` prints the recommendation and its
``SETPOINT`` action, a dry run unless ``--apply``; with ``--publish`` the action goes to
``twin.actions`` as a signed command (:mod:`pipelines.kafka.outputs`), which ``twin
simulate`` (or a plant's gateway) applies when it is not a dry run.

Exit codes: 0 done; 1 (optimize) no setpoint meets every constraint; 2 bad usage, a
source without models, an unreachable broker.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from jobs import hints

MARKS_S = (900.0, 3600.0, 3 * 3600.0, 6 * 3600.0, 24 * 3600.0)


class WhatIfError(RuntimeError):
    """A usage or source problem: exit 2 with this message."""


# -- arguments -------------------------------------------------------------------------------

def _add_source(p: argparse.ArgumentParser) -> None:
    from pipelines.kafka.config import add_kafka_args

    p.add_argument("dir", nargs="?", type=Path, metavar="DIR",
                   help="a run folder (its state.parquet/.avro) or a state .parquet/.avro "
                        "file")
    p.add_argument("--source", choices=["files", "kafka"], default="files",
                   help="kafka: read the twin.state topic from its start (default: DIR)")
    p.add_argument("--state-topic", default="twin.state",
                   help="the state topic with --source kafka (default twin.state)")
    p.add_argument("--state-file", metavar="FILE",
                   help="the state file of bounded Kafka runs (twin run --source kafka "
                        "--state-file; default name twin-state.pkl in its --out)")
    p.add_argument("--hmac-key-file", metavar="FILE",
                   help="the signing key (state files are signed with it; optimize "
                        "--publish signs its command); default: twin.hmac.key, "
                        "$TWIN_HMAC_KEY or the per-user key")
    p.add_argument("--asset", metavar="ASSET_ID",
                   help="the asset to ask about (needed when the source holds several)")
    add_kafka_args(p)


def _add_scenario(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("scenario")
    g.add_argument("--set", dest="sets", action="append", default=[], metavar="SENSOR=VALUE",
                   help="a process sensor's value: 140, 1400rpm, -10%%, +5 (repeatable)")
    g.add_argument("--from", dest="start", metavar="OFFSET",
                   help="when the change starts, from the state's time (default +0)")
    g.add_argument("--for", dest="duration", metavar="DURATION",
                   help="how long it lasts (default: to the horizon)")
    g.add_argument("--horizon", metavar="DURATION",
                   help="how far ahead to look (default 6h, or the scenario's end)")
    g.add_argument("--scenario", metavar="FILE", type=Path,
                   help="a scenario file (JSON or TOML) with several steps, instead of --set")


def add_whatif_arguments(p: argparse.ArgumentParser) -> None:
    _add_source(p)
    _add_scenario(p)
    p.add_argument("--out", type=Path, default=Path("out") / "whatif",
                   help="where <asset>.json and <asset>.png go (default out/whatif)")
    p.add_argument("--json", action="store_true",
                   help="print the result as JSON instead of the table (files still written)")
    p.add_argument("--no-plot", action="store_true", help="do not draw the PNG")


def add_optimize_arguments(p: argparse.ArgumentParser) -> None:
    _add_source(p)
    p.add_argument("--maximize", metavar="SENSOR",
                   help="the sensor whose expected mean to maximise (default: the setpoint, "
                        "throughput taken as proportional to it; e.g. flow)")
    p.add_argument("--limit", dest="limits", action="append", default=[],
                   metavar="SENSOR<=VALUE",
                   help="an upper limit on a sensor's 90 %% band over the horizon, SI units "
                        "(repeatable)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--min-rul", metavar="DURATION",
                   help="the asset must be expected to last at least this long")
    g.add_argument("--until", metavar="ISO_TIME",
                   help="...or until this time (the next planned maintenance), e.g. "
                        "2026-12-08T06:00Z")
    p.add_argument("--horizon", metavar="DURATION", default="6h",
                   help="how far ahead each candidate is rolled (default 6h)")
    p.add_argument("--allow-extrapolation", action="store_true",
                   help="accept setpoints whose answer rests on inputs beyond what the "
                        "asset has shown")
    p.add_argument("--publish", action="store_true",
                   help="send the SETPOINT action to twin.actions, signed (needs Kafka)")
    p.add_argument("--apply", action="store_true",
                   help="with --publish: not a dry run (the asset's gateway applies it)")
    p.add_argument("--out", type=Path, default=Path("out") / "whatif",
                   help="where <asset>-optimize.json goes (default out/whatif)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")


# -- sources ---------------------------------------------------------------------------------

def _records_from_files(path: Path) -> list[dict[str, Any]]:
    if path.is_dir():
        for name in ("state.parquet", "state.avro"):
            if (path / name).is_file():
                return _records_from_files(path / name)
        raise WhatIfError(f"{path} has no state.parquet or state.avro: is it the --out "
                          f"folder of twin run?")
    if not path.is_file():
        raise WhatIfError(f"no such file or folder: {path}")
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        cols = ["asset_id", "asset_type", "ts_ms", "values", "health_index", "anomaly_score",
                "alert_open", "setpoints", "windows_seen", "last_drift_ms", "learned"]
        table = pq.read_table(path)
        if "learned" not in table.column_names:
            raise WhatIfError(f"{path} holds no learned models (written by a twinstream "
                              f"before what-if): run the twin again")
        rows = table.select(cols).to_pylist()
        for r in rows:  # maps come back as lists of pairs
            for k in ("values", "setpoints"):
                if isinstance(r[k], list):
                    r[k] = dict(r[k])
        return rows
    if path.suffix == ".avro":
        from fastavro import reader

        with path.open("rb") as f:
            return list(reader(f))
    raise WhatIfError(f"{path}: expected a .parquet or .avro state file")


def _records_from_kafka(args: argparse.Namespace) -> list[dict[str, Any]]:
    """Every record of the state topic from its start to its end as it stands now."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaException, TopicPartition

    from jobs.tail import open_consumer
    from pipelines.beam.kafka import end_offsets
    from pipelines.kafka.broker import BrokerUnavailable
    from pipelines.kafka.config import KafkaConfigError, config_from_args, twin_settings
    from pipelines.kafka.serde import serde_from_args

    try:
        config = config_from_args(args)
        settings = twin_settings(args.kafka_config, args.kafka_overrides)
        serde = serde_from_args(args, settings)
        consumer = open_consumer(config, [args.state_topic], from_beginning=True)
    except (BrokerUnavailable, KafkaConfigError, OSError, ValueError) as exc:
        raise WhatIfError(str(exc)) from exc
    records = []
    try:
        tps = [TopicPartition(tp.topic, tp.partition) for tp in consumer.assignment()]
        ends = {p: e for (_, p), e in end_offsets(consumer, tps).items() if e > 0}
        consumer.assign([TopicPartition(args.state_topic, p, OFFSET_BEGINNING) for p in ends])
        done: set[int] = set()
        while len(done) < len(ends):
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            if msg.error() is not None:
                if msg.error().fatal():
                    raise WhatIfError(f"Kafka: {msg.error().str()}")
                continue
            if msg.offset() + 1 >= ends.get(msg.partition(), 0):
                done.add(msg.partition())
            if msg.value() is None:  # a tombstone
                continue
            try:
                name, record = serde.decode(msg.value())
            except Exception:  # noqa: BLE001 - not a state record: not ours to read
                continue
            if name.startswith("twin/state"):
                records.append(record)
    except KafkaException as exc:
        raise WhatIfError(f"Kafka: {exc}") from exc
    finally:
        consumer.close()
    return records


def _docs_from_state_file(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """The twins of a bounded Kafka run's state file, through pipelines.statefile."""
    import inspect
    import pickle

    from pipelines import statefile
    from transforms.whatif import ModelError, document

    path = args.state_file
    if not Path(path).is_file() and "://" not in path:
        raise WhatIfError(f"no state file at {path}")
    try:
        if "key" in inspect.signature(statefile.read_state).parameters:  # signed files
            from pipelines.kafka.config import twin_settings
            from pipelines.kafka.secrets import hmac_key

            key = hmac_key(args.hmac_key_file, twin_settings(args.kafka_config,
                                                              args.kafka_overrides),
                           create=False)
            state = statefile.read_state(path, key or b"")
        else:
            state = statefile.read_state(path)
    except (ValueError, OSError) as exc:
        raise WhatIfError(str(exc)) from exc
    docs = {}
    for asset_id, blob in state.get("twins", {}).items():
        twin = pickle.loads(blob)  # the file was read (and, if signed, verified) above
        try:
            docs[asset_id] = document(twin)
        except ModelError:
            continue
    return docs


def load_documents(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Every asset's model document from the command's source."""
    from transforms.whatif import ModelError, from_states

    chosen = [n for n, on in (("DIR", args.dir is not None), ("--state-file", args.state_file),
                              ("--source kafka", args.source == "kafka")) if on]
    if len(chosen) != 1:
        raise WhatIfError("give one source: a run folder DIR, --source kafka, or "
                          "--state-file FILE" + (f" (got {', '.join(chosen)})" if chosen
                                                  else ""))
    try:
        if args.state_file:
            docs = _docs_from_state_file(args)
        else:
            records = (_records_from_kafka(args) if args.source == "kafka"
                       else _records_from_files(args.dir))
            docs = from_states(records)
    except ModelError as exc:
        raise WhatIfError(str(exc)) from exc
    if not docs:
        raise WhatIfError("no twin in the source carries its learned models yet (they come "
                          "every learned_every windows, after the warm-up)"
                          + (f" for asset {args.asset}" if args.asset else ""))
    return docs


def pick(docs: dict[str, dict[str, Any]], asset: str | None) -> dict[str, Any]:
    if asset is None:
        if len(docs) == 1:
            return next(iter(docs.values()))
        raise WhatIfError(f"the source holds {len(docs)} assets: choose one with --asset "
                          f"({', '.join(sorted(docs)[:12])}{', ...' if len(docs) > 12 else ''})")
    if asset not in docs:
        raise WhatIfError(f"no asset {asset!r} with learned models in the source (assets: "
                          f"{', '.join(sorted(docs)[:12])})")
    return docs[asset]


def read_scenario(args: argparse.Namespace) -> dict[str, Any]:
    from transforms.whatif.scenario import ScenarioError, from_flags

    if args.scenario is not None:
        if args.sets or args.start or args.duration:
            raise WhatIfError("--scenario FILE or --set/--from/--for, not both")
        try:
            text = args.scenario.read_text()
        except OSError as exc:
            raise WhatIfError(f"cannot read {args.scenario}: {exc.strerror}") from exc
        try:
            if args.scenario.suffix == ".toml":
                import tomllib

                doc = tomllib.loads(text)
            else:
                doc = json.loads(text)
        except ValueError as exc:
            raise WhatIfError(f"{args.scenario}: not valid "
                              f"{'TOML' if args.scenario.suffix == '.toml' else 'JSON'}: "
                              f"{exc}") from exc
        if args.horizon:
            doc = {**doc, "horizon": args.horizon}
        return doc
    try:
        return from_flags(args.sets, args.start, args.duration, args.horizon)
    except ScenarioError as exc:
        raise WhatIfError(str(exc)) from exc


# -- output ----------------------------------------------------------------------------------

def _fmt(v: float | None, unit: str = "") -> str:
    if v is None:
        return "-"
    if unit == "kelvin":
        return f"{v - 273.15:.1f} °C"
    return f"{v:.4g}"


def _hours(s: float | None) -> str:
    return "none in sight" if s is None else f"{s / 3600:.1f} h"


def print_result(result: dict[str, Any], console: Console) -> None:
    times = result["times_s"]
    marks = [m for m in MARKS_S if m <= times[-1]] or [times[-1]]
    idx = [min(range(len(times)), key=lambda j: abs(times[j] - m)) for m in marks]
    title = (f"{result['asset_id']} ({result['asset_type']}): what if "
             f"{result['scenario']['text']}")
    table = Table(title=escape(title))
    table.add_column("")
    for i in idx:
        table.add_column(f"+{times[i] / 3600:g} h", justify="right")
    for name in result["condition_sensors"] + result["process_sensors"]:
        b = result["baseline"]["sensors"][name]
        s = result["scenario_path"]["sensors"][name]
        unit = b["unit"]
        table.add_row(f"{name} now", *(_fmt(b["mean"][i], unit) for i in idx), style="dim")
        table.add_row(f"{name} if", *(
            f"{_fmt(s['mean'][i], unit)} [{_fmt(s['lo'][i], unit)}, {_fmt(s['hi'][i], unit)}]"
            + (" *" if result["scenario_path"]["extrapolating_at"][i] else "") for i in idx))
    for label, key in (("health", "health"), ("anomaly score", "anomaly_score")):
        inner = "mean" if key == "health" else "median"
        table.add_row(f"{label} now", *(f"{result['baseline'][key][inner][i]:.2f}"
                                         for i in idx), style="dim")
        table.add_row(f"{label} if", *(f"{result['scenario_path'][key][inner][i]:.2f}"
                                       for i in idx))
    console.print(table)
    b, s = result["baseline"], result["scenario_path"]
    console.print(f"remaining useful life: now {_hours(b['rul_s'])}, if "
                  f"{_hours(s['rul_s'])} (90 %: {_hours(s['rul_lo_s'])} to "
                  f"{_hours(s['rul_hi_s'])})")
    if s["extrapolating"]:
        e = s["extrapolation"]
        console.print(f"[yellow]* extrapolation from +{e['from_s'] / 3600:.2g} h "
                      f"({', '.join(e['reasons'])}): the answer rests on inputs beyond what "
                      f"this asset has shown; its intervals are wider, not more "
                      f"trustworthy[/yellow]")
    fid = result["fidelity"]
    if fid.get("error") is not None:
        console.print(f"the twin's running fidelity: {fid['error']:.1%} median error a window "
                      f"ahead, {fid['coverage']:.0%} inside 90 % intervals")
    for note in result["notes"]:
        console.print(f"note: {escape(note)}")


def plot(result: dict[str, Any], path: Path) -> None:
    """Baseline and scenario of every condition sensor, health and anomaly score, with
    their 90 % bands, against hours from now."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = result["condition_sensors"]
    rows = len(names) + 2
    fig, axes = plt.subplots(rows, 1, figsize=(8, 2.1 * rows), sharex=True)
    hours = [t / 3600 for t in result["times_s"]]
    for ax, name in zip(axes, names):
        for path_key, colour, label in (("baseline", "0.45", "as now"),
                                        ("scenario_path", "C0", "if")):
            s = result[path_key]["sensors"][name]
            conv = (lambda v: v - 273.15) if s["unit"] == "kelvin" else (lambda v: v)
            ax.plot(hours, [conv(v) for v in s["mean"]], color=colour, label=label)
            ax.fill_between(hours, [conv(v) for v in s["lo"]], [conv(v) for v in s["hi"]],
                            color=colour, alpha=0.2, linewidth=0)
        unit = "°C" if result["baseline"]["sensors"][name]["unit"] == "kelvin" else \
            result["baseline"]["sensors"][name]["unit"]
        ax.set_ylabel(f"{name}\n[{unit}]", fontsize=8)
    ex = result["scenario_path"]["extrapolating_at"]
    for ax, key, inner, label in ((axes[-2], "health", "mean", "health index"),
                                  (axes[-1], "anomaly_score", "median", "anomaly score")):
        for path_key, colour in (("baseline", "0.45"), ("scenario_path", "C0")):
            d = result[path_key][key]
            ax.plot(hours, d[inner], color=colour)
            ax.fill_between(hours, d["lo"], d["hi"], color=colour, alpha=0.2, linewidth=0)
        ax.set_ylabel(label, fontsize=8)
        ax.set_ylim(-0.02, 1.02)
    if any(ex):
        start = hours[ex.index(True)]
        for ax in axes:
            ax.axvspan(start, hours[-1], color="orange", alpha=0.08)
    axes[0].legend(fontsize=8, loc="best")
    axes[0].set_title(f"{result['asset_id']}: {result['scenario']['text']}"
                      + ("  (shaded: extrapolation)" if any(ex) else ""), fontsize=9)
    axes[-1].set_xlabel("hours from the state's time")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# -- commands --------------------------------------------------------------------------------

def _fail(cmd: str, text: str) -> int:
    Console(stderr=True, soft_wrap=True, highlight=False).print(
        f"[red]twin {cmd}: {escape(hints.rewrite(text))}[/red]")
    return 2


def main_whatif(args: argparse.Namespace) -> int:
    from transforms.whatif import ModelError, ScenarioError, whatif

    try:
        scenario = read_scenario(args)
        doc = pick(load_documents(args), args.asset)
        result = whatif(doc, scenario)
    except (WhatIfError, ScenarioError, ModelError) as exc:
        return _fail("whatif", str(exc))
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / result["asset_id"]
    stem.with_suffix(".json").write_text(json.dumps(result, indent=1))
    if not args.no_plot:
        plot(result, stem.with_suffix(".png"))
    if args.json:
        print(json.dumps(result, indent=1))
        return 0
    console = Console(highlight=False)
    print_result(result, console)
    console.print(f"written: {hints.path(stem.with_suffix('.json'))}"
                  + ("" if args.no_plot else f", {hints.path(stem.with_suffix('.png'))}"))
    return 0


def _limits(items: list[str]) -> dict[str, float]:
    out = {}
    for text in items:
        name, sep, value = text.partition("<=")
        try:
            out[name.strip()] = float(value)
        except ValueError:
            sep = ""
        if not sep or not name.strip():
            raise WhatIfError(f"--limit wants SENSOR<=VALUE in SI units (e.g. "
                              f"bearing_temp<=363), not {text!r}")
    return out


def _min_rul(args: argparse.Namespace, doc: dict[str, Any]) -> float | None:
    from transforms.whatif.scenario import ScenarioError, parse_duration

    if args.min_rul:
        try:
            return parse_duration(args.min_rul, "--min-rul", allow_zero=False)
        except ScenarioError as exc:
            raise WhatIfError(str(exc)) from exc
    if args.until:
        from datetime import datetime

        try:
            when = datetime.fromisoformat(args.until.replace("Z", "+00:00"))
        except ValueError as exc:
            raise WhatIfError(f"--until wants an ISO 8601 time like 2026-12-08T06:00Z, not "
                              f"{args.until!r}") from exc
        if when.tzinfo is None:
            raise WhatIfError("--until needs a time zone (Z or +01:00): the twin's times "
                              "are UTC")
        seconds = when.timestamp() - doc["ts_ms"] / 1000
        if seconds <= 0:
            raise WhatIfError(f"--until {args.until} is not after the state's time")
        return seconds
    return None


def main_optimize(args: argparse.Namespace) -> int:
    from transforms.whatif import ModelError
    from transforms.whatif.optimize import GuardrailError, recommend, setpoint_action
    from transforms.whatif.scenario import ScenarioError, parse_duration

    if args.apply and not args.publish:
        return _fail("optimize", "--apply only means something with --publish (a command "
                                 "that is sent); without it nothing reaches the asset")
    try:
        horizon = parse_duration(args.horizon, "--horizon", allow_zero=False)
        limits = _limits(args.limits)
        doc = pick(load_documents(args), args.asset)
        rec = recommend(doc, objective=args.maximize, limits=limits,
                        min_rul_s=_min_rul(args, doc), horizon_s=horizon,
                        allow_extrapolation=args.allow_extrapolation)
        action = setpoint_action(doc, rec, dry_run=not args.apply)
    except (WhatIfError, ScenarioError, ModelError, GuardrailError) as exc:
        return _fail("optimize", str(exc))
    rec["action"] = action
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{rec['asset_id']}-optimize.json"
    path.write_text(json.dumps(rec, indent=1))
    if args.publish and action is not None:
        try:
            _publish(args, action)
        except WhatIfError as exc:
            return _fail("optimize", str(exc))
    if args.json:
        print(json.dumps(rec, indent=1))
    else:
        _print_recommendation(rec, Console(highlight=False))
        Console(highlight=False).print(f"written: {hints.path(path)}")
    return 0 if rec["feasible"] else 1


def _print_recommendation(rec: dict[str, Any], console: Console) -> None:
    table = Table(title=escape(f"{rec['asset_id']}: maximise {rec['objective']}"
                               + (f", RUL >= {rec['min_rul_s'] / 3600:.1f} h"
                                  if rec["min_rul_s"] else "")))
    for col in (rec["setpoint_name"], f"mean {rec['objective']}", "expected RUL", "feasible",
                "why not"):
        table.add_column(col)
    for c in rec["candidates"]:
        mark = " <" if abs(c["fraction"] - rec["fraction"]) < 1e-9 else ""
        table.add_row(f"{c['fraction']:.0%}{mark}", f"{c['objective']:.4g}", _hours(c["rul_s"]),
                      "yes" if c["feasible"] else "no", escape("; ".join(c["why"])))
    console.print(table)
    console.print(f"[bold]{escape(rec['text'])}[/bold]")
    a = rec.get("action")
    if a is None:
        console.print("no SETPOINT action: the recommendation changes nothing")
    else:
        console.print(f"SETPOINT {a['setpoint_name']} {a['setpoint_previous']:.4g} -> "
                      f"{a['setpoint_value']:.4g} ({'dry run' if a['dry_run'] else 'to apply'}"
                      f"; the ramp's first of {len(rec['steps'])} step(s), guardrails passed)")


def _publish(args: argparse.Namespace, action: dict[str, Any]) -> None:
    """The action to ``twin.actions`` as a signed command (key, value, headers as every
    engine writes them)."""
    from confluent_kafka import KafkaException, Producer

    from pipelines.kafka.broker import BrokerUnavailable
    from pipelines.kafka.config import (
        KafkaConfigError,
        config_from_args,
        twin_settings,
        with_logger,
    )
    from pipelines.kafka.outputs import encode_output
    from pipelines.kafka.secrets import command_signer
    from pipelines.kafka.serde import serde_from_args
    from pipelines.kafka.topics import OUTPUT_TOPICS

    topic, schema = OUTPUT_TOPICS["action"]
    try:
        config = config_from_args(args)
        settings = twin_settings(args.kafka_config, args.kafka_overrides)
        serde = serde_from_args(args, settings)
        signer = command_signer(args.hmac_key_file, settings)
    except (BrokerUnavailable, KafkaConfigError, OSError, ValueError) as exc:
        raise WhatIfError(str(exc)) from exc
    key, value, headers = encode_output(topic, schema, action, serde, signer)
    producer = Producer(with_logger(config))
    try:
        producer.produce(topic, value=value, key=key, headers=headers)
        left = producer.flush(15)
    except KafkaException as exc:
        raise WhatIfError(f"Kafka: {exc}") from exc
    if left:
        raise WhatIfError(f"the command did not reach {topic} within 15 s")
    Console(stderr=True, highlight=False).print(f"published to {topic} (signed)")

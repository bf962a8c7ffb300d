"""Flags shared by the jobs: durations and the twin's settings (only ``jobs/`` reads flags)."""

from __future__ import annotations

import argparse
from typing import Any

DAY_MS = 86_400_000


def parse_duration(text: str) -> float:
    """Seconds in ``text`` (``"90s"``, ``"15m"``, ``"6h"``, ``"2d"``, ``"1h30m"``, ``"3600"``).

    >>> parse_duration("6h"), parse_duration("90m"), parse_duration("45")
    (21600.0, 5400.0, 45.0)
    """
    import pandas as pd  # its Timedelta parser is the well-tested one; Beam ships pandas

    try:
        seconds = float(text)
    except ValueError:
        try:
            seconds = pd.Timedelta(text).total_seconds()
        except (ValueError, TypeError) as exc:
            raise argparse.ArgumentTypeError(
                f"not a duration: {text!r} (try 90s, 15m, 6h, 2d)") from exc
    if not seconds > 0:
        raise argparse.ArgumentTypeError(f"duration must be positive: {text!r}")
    return seconds


def window_duration(text: str) -> float:
    """A window length: a duration of at least one millisecond (windows are whole ms)."""
    seconds = parse_duration(text)
    if seconds < 0.001:
        raise argparse.ArgumentTypeError(f"a window must be at least 1 ms: {text!r}")
    return seconds


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more: {text!r}")
    return value


def positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def add_fleet_args(parser: argparse.ArgumentParser, assets: int = 24,
                   duration: str = "12h"):
    """The simulated fleet's flags (``twin run``, ``twin simulate``, ``twin flink``)."""
    g = parser.add_argument_group("fleet")
    g.add_argument("--assets", type=positive_int, default=assets,
                   help=f"fleet size (default {assets})")
    g.add_argument("--duration", type=parse_duration, default=duration,
                   help=f"simulated event time, e.g. 90m, 6h, 2d (default {duration})")
    g.add_argument("--seed", type=int, default=7, help="simulator seed (default 7)")
    g.add_argument("--interval", type=positive_float, default=5.0,
                   help="seconds between samples of one asset (default 5)")
    g.add_argument("--malformed-rate", type=float, default=0.005,
                   help="share of vendor messages the simulator breaks (default 0.005)")
    g.add_argument("--start-ms", type=int, default=None,
                   help="event time of the first sample (default: the history ends at the "
                        "last midnight UTC, so a run gives the same results whenever it runs)")
    return g


def fleet_config_from(args: argparse.Namespace, now_ms: int | None = None):
    """The :class:`~transforms.simulator.FleetConfig` of parsed fleet flags; without
    ``--start-ms`` the history ends at the last midnight UTC before now.

    Why midnight, not now: the simulated weather follows the time of day, so a history
    ending at the wall clock would give each run different weather, and with it
    different anomalies, actions and evaluation. Ending at a day boundary, every run sees
    the same day: a seed's results are the same whenever it runs, and its data is at most
    a day older."""
    import time

    from transforms.simulator import FleetConfig

    start_ms = args.start_ms
    if start_ms is None:
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        start_ms = (now_ms // DAY_MS) * DAY_MS - int(args.duration * 1000)
    return FleetConfig(assets=args.assets, duration_s=args.duration, interval_s=args.interval,
                       seed=args.seed, start_ms=start_ms, malformed_rate=args.malformed_rate)


def add_twin_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("twin")
    g.add_argument("--window", type=window_duration, default="60s",
                   help="event-time window length (default 60s)")
    g.add_argument("--allowed-lateness", type=parse_duration, default="60s",
                   help="how long a window accepts late readings (default 60s)")
    g.add_argument("--out-of-orderness", type=parse_duration, default="20s",
                   help="disorder bound of the data watermark (default 20s)")
    g.add_argument("--max-event-time-jump", type=parse_duration, default="1h",
                   help="a reading further ahead of its asset's latest event time is a dead "
                        "letter (timestamp_jump) until --jump-confirmations readings in a "
                        "row confirm the jump; set it above the longest normal silence of "
                        "an asset (default 1h)")
    g.add_argument("--jump-confirmations", type=positive_int, default=3,
                   help="readings in a row that make a jump in event time genuine "
                        "(default 3; 1 accepts every jump)")
    g.add_argument("--dry-run", action="store_true",
                   help="mark every action dry_run: record, never apply")
    g.add_argument("--recommend", nargs="?", const="24h", default=None, type=parse_duration,
                   metavar="MIN_RUL",
                   help="with each work order, the what-if's recommended setpoint that keeps "
                        "the asset running MIN_RUL (default 24h), said in the reason and "
                        "proposed as a dry-run SETPOINT (off by default)")


def add_plant_args(parser: argparse.ArgumentParser) -> None:
    """``--model`` and ``--format``: a plant declared in files (docs/connect-your-plant.md)."""
    g = parser.add_argument_group("your plant")
    g.add_argument("--model", action="append", metavar="FILE", default=None,
                   help="an asset model file (YAML: asset types, sensors, roles, assets); "
                        "repeatable (default: the built-in fleet)")
    g.add_argument("--format", action="append", metavar="FILE", default=None,
                   help="a data format file (YAML: how a topic's messages are written: "
                        "JSON, CSV lines, Avro; where asset, time and values are); "
                        "repeatable")


def plant_from(args: argparse.Namespace):
    """The :class:`~transforms.plant.Plant` of ``--model`` / ``--format`` (None when neither
    is given: the built-in fleet and vendors); ``ModelError`` names what is wrong."""
    models, formats = getattr(args, "model", None), getattr(args, "format", None)
    if not models and not formats:
        return None
    from transforms.plant import load_plant

    return load_plant(models, formats)


def twin_kwargs_from(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :class:`transforms.twin.AssetTwin` from parsed flags."""
    return {
        "window_ms": int(args.window * 1000),
        "allowed_lateness_ms": int(args.allowed_lateness * 1000),
        "out_of_orderness_ms": int(args.out_of_orderness * 1000),
        "max_jump_ms": int(args.max_event_time_jump * 1000),
        "jump_confirmations": args.jump_confirmations,
        "policy": {"dry_run": bool(args.dry_run)},
        **({"recommend": {"min_rul_s": args.recommend}}
           if getattr(args, "recommend", None) else {}),
    }


def non_negative_duration(text: str) -> float:
    """A duration in seconds, or 0 (``"0"``: off/never)."""
    if text.strip() in ("0", "0s", "0.0"):
        return 0.0
    return parse_duration(text)


_SIZE_UNITS = {"": 1, "b": 1, "k": 1 << 10, "kib": 1 << 10, "kb": 1000, "m": 1 << 20,
               "mib": 1 << 20, "mb": 1000**2, "g": 1 << 30, "gib": 1 << 30, "gb": 1000**3}


def byte_size(text: str) -> int:
    """Bytes in ``text``: ``"48MiB"``, ``"64M"`` (binary), ``"50MB"`` (decimal), ``"4096"``.

    >>> byte_size("48MiB"), byte_size("1k"), byte_size("2 MB"), byte_size("0")
    (50331648, 1024, 2000000, 0)
    """
    import re

    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else None
    if m is None or unit not in _SIZE_UNITS:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 48MiB, 512KiB, 1GB)")
    return int(float(m.group(1)) * _SIZE_UNITS[unit])

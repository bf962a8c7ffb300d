"""Flags shared by the jobs: durations and the twin's settings (only ``jobs/`` reads flags)."""

from __future__ import annotations

import argparse
from typing import Any


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


def add_twin_args(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("twin")
    g.add_argument("--window", type=parse_duration, default="60s",
                   help="event-time window length (default 60s)")
    g.add_argument("--allowed-lateness", type=parse_duration, default="60s",
                   help="how long a window accepts late readings (default 60s)")
    g.add_argument("--out-of-orderness", type=parse_duration, default="20s",
                   help="disorder bound of the data watermark (default 20s)")
    g.add_argument("--dry-run", action="store_true",
                   help="mark every action dry_run: record, never apply")


def twin_kwargs_from(args: argparse.Namespace) -> dict[str, Any]:
    """Keyword arguments of :class:`transforms.twin.AssetTwin` from parsed flags."""
    return {
        "window_ms": int(args.window * 1000),
        "allowed_lateness_ms": int(args.allowed_lateness * 1000),
        "out_of_orderness_ms": int(args.out_of_orderness * 1000),
        "policy": {"dry_run": bool(args.dry_run)},
    }

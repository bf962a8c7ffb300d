"""The twin in one process, no engine: raw messages in arrival order -> every output.

The reference binding of ``transforms/``: what the Beam and Flink bindings must agree with,
and the fast way to score many simulated fleets (``twin sweep``). Same normalization, same
:class:`~transforms.twin.AssetTwin` per asset, same dead-letter records; windows close on
each asset's data watermark as readings arrive and the rest at the end of the input.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from typing import Any

from transforms.deadletter import DEAD_LETTER, dead_letter
from transforms.errors import InvalidReading
from transforms.normalize import normalize_message
from transforms.twin import AssetTwin


def run_messages(
    messages: Iterable[tuple[str, bytes | None, bytes, int]],
    twin_kwargs: dict[str, Any] | None = None,
    clock_ms: int | None = None,
) -> tuple[dict[str, list[dict[str, Any]]], Counter]:
    """Run ``(source, key, value, arrival_ms)`` messages through the twin.

    Event times are judged against each message's arrival time and against this
    machine's clock (``clock_ms`` fixes it; default the wall clock when the run starts),
    then against their asset's own (the twin's event-time guard).

    Returns ``(outputs, counts)``: outputs by tag (``prediction``, ``action``, ``state``,
    ``features``, ``late``, ``duplicate``, ``dead_letter``) and the run's counters
    (``readings_in``, ``readings_valid``, ``dead_letters``).
    """
    if clock_ms is None:
        clock_ms = int(time.time() * 1000)
    twins: dict[str, AssetTwin] = {}
    outputs: dict[str, list[dict[str, Any]]] = defaultdict(list)
    counts: Counter = Counter()
    for source, key, value, arrival_ms in messages:
        counts["readings_in"] += 1
        try:
            reading = normalize_message(value, now_ms=arrival_ms, clock_ms=clock_ms)
        except InvalidReading as exc:
            counts["dead_letters"] += 1
            outputs["dead_letter"].append(dead_letter(
                "normalize", exc.reason, exc.detail, source, key, value, arrival_ms))
            continue
        counts["readings_valid"] += 1
        twin = twins.get(reading["asset_id"])
        if twin is None:
            twin = twins[reading["asset_id"]] = AssetTwin(
                reading["asset_id"], reading["asset_type"], **(twin_kwargs or {}))
        for tag, record in twin.add(reading):
            outputs[tag].append(record)
            if tag == DEAD_LETTER:  # held back by the event-time guard: not valid after all
                counts["readings_valid"] -= 1
                counts["dead_letters"] += 1
    for twin in twins.values():
        for tag, record in twin.flush():
            outputs[tag].append(record)
    return dict(outputs), counts

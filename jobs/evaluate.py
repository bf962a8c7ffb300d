"""``twin evaluate DIR``: score a run's actions against the simulator's ground truth."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro

from transforms.evaluation import evaluate


def read_avro(path: Path) -> list[dict[str, Any]]:
    """Every record of an Avro container file (empty list if the file has none)."""
    with path.open("rb") as f:
        return list(fastavro.reader(f))


def _ms(value: Any) -> int:
    """fastavro returns timestamp-millis as datetime; the evaluation works in epoch ms."""
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


def evaluate_dir(out_dir: str | Path) -> dict[str, Any]:
    out = Path(out_dir)
    gt_path, actions_path = out / "ground_truth.json", out / "actions.avro"
    for p in (gt_path, actions_path):
        if not p.is_file():
            raise SystemExit(f"twin evaluate: {p} is missing; is {out} the --out of a twin run?")
    truth = json.loads(gt_path.read_text())
    actions = [{**a, "ts_ms": _ms(a["ts_ms"])} for a in read_avro(actions_path)]
    return evaluate(truth, actions)

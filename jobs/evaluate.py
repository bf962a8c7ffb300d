"""``twin evaluate DIR``: score a run's actions against the simulator's ground truth.

Every run folder the project writes has its actions in one of two shapes: Avro container
files (``twin run``, simulator or Kafka source) or JSON lines under ``actions/``
(``twin flink run`` and ``twin flink submit --sink files``). The ground truth is
``DIR/ground_truth.json`` when the run simulated its own fleet; a run that read Kafka
topics needs the file ``twin simulate --ground-truth`` wrote (``--ground-truth``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro

from transforms.evaluation import evaluate


class EvaluateError(ValueError):
    """A run folder or ground truth that cannot be scored; the message says why."""


def read_avro(path: Path) -> list[dict[str, Any]]:
    """Every record of an Avro container file (empty list if the file has none)."""
    with path.open("rb") as f:
        return list(fastavro.reader(f))


def _ms(value: Any) -> int:
    """fastavro returns timestamp-millis as datetime; the evaluation works in epoch ms."""
    return value if isinstance(value, int) else int(value.timestamp() * 1000)


def read_actions(out: Path) -> list[dict[str, Any]]:
    """The actions of the run folder ``out``, whichever engine wrote them."""
    if (out / "actions.avro").is_file():
        return [{**a, "ts_ms": _ms(a["ts_ms"])} for a in read_avro(out / "actions.avro")]
    if (out / "actions").is_dir():
        from pipelines.flink.sinks import read_json_outputs

        return [{**a, "ts_ms": _ms(a["ts_ms"])} for a in read_json_outputs(out, "actions")]
    raise EvaluateError(f"{out} has no actions (actions.avro or actions/): is it the --out "
                        f"of twin run or twin flink run?")


def read_truth(out: Path, ground_truth: Path | None) -> dict[str, Any]:
    path = ground_truth or out / "ground_truth.json"
    if not path.is_file():
        if ground_truth is None:
            summary = out / "summary.json"
            source = json.loads(summary.read_text()).get("source") if summary.is_file() \
                else None
            why = (" A run that reads Kafka has no ground truth of its own: pass the file "
                   "`twin simulate --ground-truth FILE` wrote with --ground-truth FILE."
                   if source == "kafka" else
                   " Pass the simulator's ground truth with --ground-truth FILE.")
            raise EvaluateError(f"{path} is missing.{why}")
        raise EvaluateError(f"ground truth {path} is missing")
    try:
        truth = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EvaluateError(f"ground truth {path} is not readable JSON: {exc}") from exc
    if not isinstance(truth, dict) or "assets" not in truth or "fault_episodes" not in truth:
        raise EvaluateError(f"{path} is not a simulator ground truth (no assets and "
                            f"fault_episodes)")
    return truth


def evaluate_dir(out_dir: str | Path, ground_truth: str | Path | None = None
                 ) -> dict[str, Any]:
    """Detection metrics of the run in ``out_dir`` (see :func:`transforms.evaluation.
    evaluate`); :class:`EvaluateError` says why a folder cannot be scored."""
    out = Path(out_dir)
    if not out.is_dir():
        raise EvaluateError(f"{out} is not a folder (want the --out of twin run or twin "
                            f"flink run)")
    truth = read_truth(out, Path(ground_truth) if ground_truth else None)
    actions = read_actions(out)
    known = {a["asset_id"] if isinstance(a, dict) else a for a in truth["assets"]}
    strangers = sorted({a["asset_id"] for a in actions} - known)
    if strangers:
        shown = ", ".join(strangers[:5]) + (" ..." if len(strangers) > 5 else "")
        raise EvaluateError(f"the run has actions of {len(strangers)} assets the ground truth "
                            f"does not know ({shown}): is it the ground truth of this run?")
    return evaluate(truth, actions)

"""Publishing a fleet, running `twin run --source kafka` and reading what landed on the
broker, for the Kafka tests."""

from __future__ import annotations

import json
from pathlib import Path

from pipelines.kafka.testing import ID_FIELDS, decoded, publish, read_topic
from transforms.simulator import Fleet, FleetConfig

__all__ = ["ID_FIELDS", "START_MS", "decoded", "fleet", "publish", "read_topic", "run_args",
           "summary"]

START_MS = 1_795_800_000_000


def fleet(hours: float = 2.0, assets: int = 3, start_ms: int = START_MS,
          malformed_rate: float = 0.02) -> Fleet:
    return Fleet(FleetConfig(assets=assets, duration_s=hours * 3600, seed=4, start_ms=start_ms,
                             malformed_rate=malformed_rate))


def run_args(bootstrap: str, out: Path, *extra: str) -> list[str]:
    """`twin run --source kafka` into ``out``, signed with ``out.parent / "hmac.key"``."""
    return ["run", "--source", "kafka", "--bootstrap-servers", bootstrap, "--out", str(out),
            "--no-progress", "--hmac-key-file", str(out.parent / "hmac.key"), *extra]


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())

"""Did the run read its input? A source whose messages are (nearly) all dead letters is a
source the twin cannot read, and a run that says "ok" about it misleads.

After a run, each source (a Kafka topic, or the built-in simulator) is judged on its dead
letters: when their share reaches ``max_dead_share`` the run fails (exit 1) and says which
source, its top reasons, and what the payloads look like (plain JSON, CSV, Confluent Avro
of an unknown schema), with the format file that would read them.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT_MAX_DEAD_SHARE = 0.9
MIN_MESSAGES = 20  # fewer messages than this say too little to fail a run on


@dataclass(frozen=True)
class Unreadable:
    source: str
    messages: int
    dead: int
    reasons: list[tuple[str, int]]
    hint: str

    def describe(self) -> str:
        top = ", ".join(f"{r} {n}" for r, n in self.reasons[:3])
        return (f"{self.source}: {self.dead:,} of {self.messages:,} messages are dead "
                f"letters ({top}); {self.hint}")


def sniff(payload: bytes | None) -> str:
    """What ``payload`` looks like, in words, for a hint.

    >>> sniff(b'{"device": "comp-7"}'), sniff(b"comp-7,2026-12-01T10:00:00Z,7.1")
    ('plain JSON', 'CSV text')
    """
    if not payload:
        return "empty"
    if payload[:1] == b"\x00" and len(payload) > 5:
        return "Confluent-framed Avro"
    try:
        text = payload[:4096].decode("utf-8").strip()
    except UnicodeDecodeError:
        return "binary (not UTF-8 text)"
    if text[:1] in "{[":
        try:
            json.loads(payload)
            return "plain JSON"
        except ValueError:
            return "text that starts like JSON"
    if text.count(",") >= 2 or text.count(";") >= 2:
        return "CSV text"
    return "text"


def _topic(source: str) -> str:
    return source.split("/", 1)[0] if "@" in source else source


def check(out: Path, summary: dict[str, Any],
          max_dead_share: float = DEFAULT_MAX_DEAD_SHARE) -> list[Unreadable]:
    """The sources of the run in ``out`` that it could not read."""
    import pyarrow.parquet as pq

    path = out / "dead_letters.parquet"
    if not path.is_file() or not summary.get("dead_letters"):
        return []
    table = pq.read_table(path, columns=["source", "reason", "payload"])
    sources = [_topic(s or "") for s in table["source"].to_pylist()]
    reasons = table["reason"].to_pylist()
    payloads = table["payload"].to_pylist()
    totals: Counter[str] = Counter()
    for part, start in (summary.get("offsets_from") or {}).items():
        stop = (summary.get("offsets_to") or {}).get(part, start)
        totals[part.split("/", 1)[0]] += max(stop - start, 0)
    if not totals:  # one source: the simulator
        totals = Counter({src: summary.get("readings_in", 0) for src in set(sources)})
    out_list = []
    for src, total in totals.items():
        idx = [i for i, s in enumerate(sources) if s == src]
        dead = len(idx)
        if total < MIN_MESSAGES or dead < max_dead_share * total:
            continue
        by_reason = Counter(reasons[i] for i in idx).most_common()
        kinds = Counter(sniff(payloads[i]) for i in idx[:200]).most_common(1)
        kind = kinds[0][0] if kinds else "unknown"
        if kind in ("plain JSON", "CSV text"):
            enc = "json" if kind == "plain JSON" else "csv"
            hint = (f"these look like {kind}: declare a {enc} format for topic {src} "
                    f"(`twin model draft` drafts one from a sample) and pass it with --format")
        elif kind == "Confluent-framed Avro":
            hint = ("these are Confluent-framed Avro of a schema twinstream does not know: "
                    "declare a confluent-avro format with its schema (--format), or use "
                    "the schema registry they were written with (--schema-registry-url)")
        else:
            hint = f"these look like {kind}; see the dead letters' detail for why"
        out_list.append(Unreadable(src, total, dead, by_reason, hint))
    return out_list

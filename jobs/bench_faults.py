"""``twin bench faults``: a Kafka run killed again and again over hostile input loses
nothing, adds nothing and scores nothing differently.

Runbook
-------
1. **input**: the simulator's fleet (``--assets`` at ``--interval`` for ``--hours``, with its
   transport defects: malformed payloads, duplicates, out-of-order and late readings) plus
   hostile messages at seeded places (:data:`HOSTILE`: tombstones, garbage bytes, an
   oversize message, empty values, a reading stamped in the year 2100 with its Kafka
   timestamp too, a reading of an asset the fleet does not have), published in the same
   order to two fresh embedded brokers, "calm" and "crashy".
2. **calm**: one undisturbed ``twin run --source kafka`` on its defaults: the reference.
3. **crashy**: ``twin run --source kafka --max-messages-per-slice N`` as a child process,
   SIGKILLed ``--kills`` times, each kill followed by a rerun, until a run finishes. The
   moments are seeded and of two kinds, each at least once (with two kills or more):
   *before a commit*, a random 0-0.5 s after the run's first outputs reached the topics
   and before it committed a slice (its outputs are published again by the rerun: that is
   at-least-once); *after a commit*, a random time after the run committed its first
   slice, up to as long again (anywhere in the next slice: reading, publishing,
   committing).
4. **figures**: messages published (hostile ones by kind), kills, reruns, the final
   summary's invariant (``readings_in == readings_valid + dead_letters``) and dead-letter
   reasons; on the output topics and in the final files, against the reference, by
   deterministic id: ``lost`` (reference ids missing), ``extra`` (ids the reference does
   not have), ``duplicates`` (copies beyond the first; on the topics they are expected
   after kills, consumers dedupe by id; in the files there must be none), and predictions
   whose scores differ. :func:`failed_checks` lists what is not as it must be (the
   command exits 1 then).

Dead letters are compared by ``source`` (topic/partition@offset of the message) and
reason, predictions by ``prediction_id``, actions by ``action_id``.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
YEAR_2100_MS = 4_102_444_800_000
# How many of each hostile message go in, and the dead-letter reason each must get (None:
# a valid reading, accepted).
HOSTILE: dict[str, tuple[int, str | None]] = {
    "tombstone": (3, "null_value"),
    "garbage": (3, "bad_magic"),
    "oversize": (1, "oversize_payload"),
    "empty": (2, "empty_payload"),
    "year_2100": (1, "timestamp_in_future"),
    "unknown_asset": (1, None),
}
OVERSIZE_BYTES = 1_500_000  # above the 1 MiB payload limit, below the raw topics' 4 MiB
UNKNOWN_ASSET = "999"  # <type>-999: the fleet numbers its assets from 000
ID_OF = {"prediction": "prediction_id", "action": "action_id"}


class BenchFaultsError(RuntimeError):
    pass


@dataclass(frozen=True)
class Injected:
    """A hostile raw message (the fields :func:`pipelines.kafka.testing.publish` reads)."""

    kind: str
    topic: str
    key: bytes
    value: bytes | None
    arrival_ms: int


def hostile_messages(messages: list[Any], seed: int) -> list[tuple[int, Injected]]:
    """``(index, message)``: the hostile messages of :data:`HOSTILE` and where each goes
    (before ``messages[index]``), each modelled on a seeded clean message of the fleet."""
    from schemas import wire
    from transforms.normalize import encode_message, normalize_message
    from transforms.sample import Sample

    rng = random.Random(f"{seed}:hostile")
    clean = [i for i, m in enumerate(messages) if m.defect == "clean"]
    out = []
    for kind, (count, _) in HOSTILE.items():
        for _ in range(count):
            at = rng.choice(clean)
            like = messages[at]
            value: bytes | None
            key, arrival = like.key, like.arrival_ms
            if kind == "tombstone":
                value = None
            elif kind == "garbage":  # not Confluent framing: the first byte is not 0
                value = b"\xff" + rng.randbytes(rng.randint(8, 400))
            elif kind == "oversize":
                value = b"\x00" + rng.randbytes(OVERSIZE_BYTES - 1)
            elif kind == "empty":
                value = b""
            else:
                reading = normalize_message(like.value, now_ms=like.arrival_ms)
                if kind == "year_2100":
                    sample = Sample(reading["asset_id"], reading["asset_type"], YEAR_2100_MS,
                                    reading["values"])
                    arrival = YEAR_2100_MS  # the producer sets the Kafka timestamp: forged
                else:  # a well-formed reading of an asset nobody has
                    asset = f"{reading['asset_type']}-{UNKNOWN_ASSET}"
                    sample = Sample(asset, reading["asset_type"], reading["ts_ms"],
                                    reading["values"])
                    key = asset.encode()
                value = encode_message(like.vendor, sample)
                wire.decode(value)  # a well-formed message: only its content is hostile
            out.append((at, Injected(kind, like.topic, key, value, arrival)))
    return out


def with_hostile(messages: list[Any], hostile: list[tuple[int, Injected]]) -> list[Any]:
    """``messages`` with each hostile message inserted before its index."""
    before: dict[int, list[Injected]] = {}
    for at, m in hostile:
        before.setdefault(at, []).append(m)
    out: list[Any] = []
    for i, m in enumerate(messages):
        out.extend(before.get(i, ()))
        out.append(m)
    return out


def expected_dead_letters(fleet_reasons: dict[str, int]) -> dict[str, int]:
    """The dead-letter reasons of the fleet's malformed messages plus the hostile ones."""
    reasons = Counter(fleet_reasons)
    for count, reason in HOSTILE.values():
        if reason:
            reasons[reason] += count
    return dict(sorted(reasons.items()))


# -- comparing outputs --------------------------------------------------------------------

def record_id(tag: str, record: dict[str, Any]) -> str:
    """The deterministic id of an output record: its own id, a dead letter's source."""
    if tag == "dead_letter":
        return f"{record['source']}|{record['reason']}"
    return record[ID_OF[tag]]


def compare(tag: str, reference: Iterable[dict[str, Any]], got: Iterable[dict[str, Any]],
            score: str | None = None, tol: float = 1e-9) -> dict[str, int]:
    """How ``got`` (every copy) differs from ``reference`` by id: ``lost`` (reference ids
    not in ``got``), ``extra`` (ids the reference does not have), ``duplicates`` (copies
    beyond the first in ``got``), ``score_mismatch`` (ids any copy of which has a
    ``score`` differing from the reference's by more than ``tol``)."""
    ref: dict[str, dict[str, Any]] = {}
    for r in reference:
        ref[record_id(tag, r)] = r
    copies: Counter[str] = Counter()
    mismatched: set[str] = set()
    for r in got:
        rid = record_id(tag, r)
        copies[rid] += 1
        if score and rid in ref and abs(r[score] - ref[rid][score]) > tol:
            mismatched.add(rid)
    return {"reference": len(ref), "records": sum(copies.values()), "distinct": len(copies),
            "lost": len(ref.keys() - copies.keys()), "extra": len(copies.keys() - ref.keys()),
            "duplicates": sum(copies.values()) - len(copies),
            "score_mismatch": len(mismatched)}


SCORES = {"prediction": "anomaly_score", "action": None, "dead_letter": None}
FILES = {"prediction": "predictions", "action": "actions", "dead_letter": "dead_letters"}


def failed_checks(figures: dict[str, Any]) -> list[str]:
    """What is not as it must be, one line each (empty: every check passed)."""
    failed = []
    for where in ("topics", "files"):
        for tag, c in figures[where].items():
            for what in ("lost", "extra", "score_mismatch"):
                if c[what]:
                    failed.append(f"{where} {tag}: {what} {c[what]}")
            if where == "files" and c["duplicates"]:
                failed.append(f"files {tag}: duplicates {c['duplicates']}")
    s = figures["summary"]
    if not s["invariant_ok"] or s["readings_in"] != s["readings_valid"] + s["dead_letters"]:
        failed.append("summary: readings_in != readings_valid + dead_letters")
    if s["readings_in"] != figures["messages"]["published"]:
        failed.append(f"summary: readings_in {s['readings_in']} != published "
                      f"{figures['messages']['published']}")
    if s["dead_letter_reasons"] != figures["expected_dead_letters"]:
        failed.append("summary: dead-letter reasons differ from the expected ones")
    if figures["reference_summary"]["dead_letter_reasons"] != figures["expected_dead_letters"]:
        failed.append("reference: dead-letter reasons differ from the expected ones")
    return failed


# -- running ------------------------------------------------------------------------------

def _output_ends(consumer: Any, topics: list[str]) -> int:
    from confluent_kafka import TopicPartition

    total = 0
    md = consumer.list_topics(timeout=5).topics
    for topic in topics:
        if topic in md:
            for p in md[topic].partitions:
                total += consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=5)[1]
    return total


def _state_mark(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _committed(path: Path, key: bytes) -> tuple[int, int]:
    """``(slices, messages)`` the state file at ``path`` has committed."""
    from pipelines.statefile import read_state

    state = read_state(str(path), key)
    return state.get("slices", 0), sum(state.get("offsets", {}).values())


def _spawn(args: list[str], log: Path, tmp: Path) -> subprocess.Popen:
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(REPO), "TMPDIR": str(tmp)}
    with log.open("ab") as err:
        return subprocess.Popen([sys.executable, "-m", "jobs.cli", *args], cwd=REPO, env=env,
                                stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)


def left_behind(out: Path, tmp: Path) -> dict[str, int]:
    """What the runs left once the last one finished: work folders in the output folder
    (slices, checkpoints, Beam's temporary files: the finishing run removes them) and
    entries in the runs' ``$TMPDIR``."""
    patterns = (".slice-*", ".checkpoint*", "beam-temp-*")
    return {"out": sum(len(list(out.glob(p))) for p in patterns),
            "tmpdir": len(list(tmp.iterdir())) if tmp.is_dir() else 0}


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else ""


def kill_plan(kills: int, seed: int) -> list[str]:
    """The kind of each kill: ``before`` (a commit) or ``after`` (one), each at least once
    when there are two kills or more; seeded."""
    rng = random.Random(f"{seed}:kills")
    if kills <= 0:
        return []
    if kills == 1:
        return ["after"]
    rest = [rng.choice(("before", "after")) for _ in range(kills - 2)]
    plan = ["after", *rest]
    rng.shuffle(plan)
    return ["before", *plan]  # the first before any slice was ever committed


def crash_and_rerun(args: list[str], state: Path, key: bytes, bootstrap: str, kills: int,
                    seed: int, work: Path, tmp: Path, timeout_s: float = 1800
                    ) -> list[dict[str, Any]]:
    """Run ``twin <args>`` killed ``kills`` times at seeded moments (:func:`kill_plan`),
    rerun after each kill, until a run finishes; one row per run (logs in ``work``, the
    runs' ``$TMPDIR`` is ``tmp``)."""
    from confluent_kafka import Consumer

    from pipelines.kafka.topics import OUTPUT_TOPICS

    rng = random.Random(f"{seed}:moments")
    plan = kill_plan(kills, seed)
    outputs = [topic for topic, _ in OUTPUT_TOPICS.values()]
    peek = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-faults-peek"})
    runs: list[dict[str, Any]] = []
    try:
        while True:
            n = len(runs)
            mode = plan[n] if n < len(plan) else None
            mark = _state_mark(state)
            before = _committed(state, key) if mark else (0, 0)
            ends0 = _output_ends(peek, outputs)
            log = work / f"run-{n}.log"
            t0 = time.monotonic()
            proc = _spawn(args, log, tmp)
            kill_at = first_out = first_commit = None
            extra = rng.uniform(0.0, 0.5)
            while proc.poll() is None:
                now = time.monotonic() - t0
                if now > timeout_s:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
                    raise BenchFaultsError(f"run {n} did not finish in {timeout_s:.0f} s: "
                                           f"{_tail(log)}")
                if mode and first_commit is None and _state_mark(state) != mark:
                    first_commit = now
                if mode == "before" and first_out is None \
                        and _output_ends(peek, outputs) > ends0:
                    first_out = now
                if mode == "before" and (first_commit is not None or (
                        first_out is not None and now >= first_out + extra)):
                    kill_at = now
                elif mode == "after" and first_commit is not None and kill_at is None:
                    kill_at = first_commit + rng.uniform(0.0, first_commit)
                if kill_at is not None and now >= kill_at:
                    os.killpg(proc.pid, signal.SIGKILL)  # the run and its slice's child
                    break
                time.sleep(0.05 if mode == "before" else 0.1)
            rc = proc.wait()
            elapsed = time.monotonic() - t0
            after = _committed(state, key) if _state_mark(state) else (0, 0)
            row = {"run": n, "planned": mode, "killed": rc == -signal.SIGKILL,
                   "at_s": round(elapsed, 2), "slices_committed": after[0] - before[0],
                   "messages_committed": after[1] - before[1],
                   "outputs_before_kill": _output_ends(peek, outputs) - ends0}
            runs.append(row)
            if not row["killed"]:
                if rc != 0:
                    raise BenchFaultsError(f"run {n} failed (exit {rc}): {_tail(log)}")
                return runs
    finally:
        peek.close()


def _read_file(path: Path) -> list[dict[str, Any]]:
    import fastavro

    if not path.exists():
        return []
    with path.open("rb") as f:
        return list(fastavro.reader(f))


def _summary(out: Path) -> dict[str, Any]:
    s = json.loads((out / "summary.json").read_text())
    return {k: s.get(k) for k in ("readings_in", "readings_valid", "dead_letters",
                                  "invariant_ok", "dead_letter_reasons", "slices",
                                  "predictions", "actions", "late_readings")}


def run_faults(assets: int, hours: float, interval_s: float, per_slice: int, kills: int,
               seed: int, out: Path) -> dict[str, Any]:
    """The whole bench (see the module's runbook); returns its figures."""
    from pipelines.kafka.broker import EmbeddedBroker
    from pipelines.kafka.testing import output_records, publish
    from transforms.simulator import Fleet, FleetConfig

    out.mkdir(parents=True, exist_ok=True)
    key_path = out / "hmac.key"
    key_path.unlink(missing_ok=True)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    key = key_path.read_bytes().strip()
    fleet = Fleet(FleetConfig(assets=assets, duration_s=hours * 3600, interval_s=interval_s,
                              seed=seed))
    messages = list(fleet.messages())
    hostile = hostile_messages(messages, seed)
    everything = with_hostile(messages, hostile)
    truth = fleet.ground_truth()
    figures: dict[str, Any] = {
        "assets": assets, "hours": hours, "interval_s": interval_s,
        "max_messages_per_slice": per_slice, "seed": seed,
        "messages": {"published": len(everything), "fleet": len(messages),
                     "fleet_defects": _defects(truth["messages"]),
                     "hostile": dict(Counter(m.kind for _, m in hostile))},
        "expected_dead_letters": expected_dead_letters(truth["expected_dead_letters"]),
    }
    with EmbeddedBroker(log_path=out / "broker-calm.log") as calm, \
            EmbeddedBroker(log_path=out / "broker-crashy.log") as crashy:
        for b in (calm, crashy):
            publish(b.bootstrap_servers, everything)

        def args(bootstrap: str, run_out: Path, *extra: str) -> list[str]:
            return ["run", "--source", "kafka", "--bootstrap-servers", bootstrap, "--out",
                    str(run_out), "--no-progress", "--hmac-key-file", str(key_path), *extra]

        calm_out, crashy_out = out / "calm", out / "crashy"
        for d in (calm_out, crashy_out, out / "calm-tmp", out / "crashy-tmp"):
            if d.exists():  # a previous bench's folders: start afresh
                shutil.rmtree(d)
            d.mkdir(parents=True)
        t0 = time.monotonic()
        (calm_run,) = crash_and_rerun(args(calm.bootstrap_servers, calm_out),
                                      calm_out / "twin-state.pkl", key,
                                      calm.bootstrap_servers, 0, seed, calm_out,
                                      out / "calm-tmp")
        figures["reference_wall_s"] = round(time.monotonic() - t0, 1)
        t0 = time.monotonic()
        runs = crash_and_rerun(args(crashy.bootstrap_servers, crashy_out,
                                    "--max-messages-per-slice", str(per_slice)),
                               crashy_out / "twin-state.pkl", key, crashy.bootstrap_servers,
                               kills, seed, crashy_out, out / "crashy-tmp")
        figures["crashy_wall_s"] = round(time.monotonic() - t0, 1)
        figures["left_behind"] = left_behind(crashy_out, out / "crashy-tmp")
        killed = [r for r in runs if r["killed"]]
        figures.update({
            "kills": len(killed), "reruns": len(runs) - 1, "runs": runs,
            "kills_before_commit": sum(1 for r in killed if r["slices_committed"] == 0),
            "kills_after_commit": sum(1 for r in killed if r["slices_committed"] > 0),
            "reference_summary": _summary(calm_out), "summary": _summary(crashy_out),
            "topics": {}, "files": {}})
        for tag in ("prediction", "action", "dead_letter"):
            figures["topics"][tag] = compare(tag, output_records(calm.bootstrap_servers, tag),
                                             output_records(crashy.bootstrap_servers, tag),
                                             SCORES[tag])
            figures["files"][tag] = compare(tag, _read_file(calm_out / f"{FILES[tag]}.avro"),
                                            _read_file(crashy_out / f"{FILES[tag]}.avro"),
                                            SCORES[tag])
    for what in ("lost", "extra", "score_mismatch"):
        figures[what] = sum(c[what] for w in ("topics", "files")
                            for c in figures[w].values())
    figures["topic_duplicates"] = sum(c["duplicates"] for c in figures["topics"].values())
    figures["file_duplicates"] = sum(c["duplicates"] for c in figures["files"].values())
    figures["failed"] = failed_checks(figures)
    return figures


def _defects(counts: dict[str, int]) -> dict[str, int]:
    """The fleet's messages by defect, malformed kinds summed."""
    out: Counter[str] = Counter()
    for defect, n in counts.items():
        out["malformed" if defect.startswith("malformed") else defect] += n
    return dict(sorted(out.items()))


def print_faults(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    m = report["messages"]
    console.print(f"published {m['published']:,} messages to each broker: {m['fleet']:,} of "
                  f"the fleet ({report['assets']} assets, {report['hours']:g} h at "
                  f"{report['interval_s']:g} s; defects {m['fleet_defects']}) and hostile "
                  f"{m['hostile']}", highlight=False)
    console.print(f"kills {report['kills']} ({report['kills_before_commit']} before a commit, "
                  f"{report['kills_after_commit']} after), reruns {report['reruns']}; "
                  f"slices of {report['max_messages_per_slice']:,}", highlight=False)
    runs = Table(title="crashy runs")
    for col in ("run", "planned", "killed", "at_s", "slices_committed", "messages_committed",
                "outputs_before_kill"):
        runs.add_column(col, justify="right")
    for r in report["runs"]:
        runs.add_row(*(str(r[c]) for c in ("run", "planned", "killed", "at_s",
                                           "slices_committed", "messages_committed",
                                           "outputs_before_kill")))
    console.print(runs)
    table = Table(title="against the undisturbed run, by id")
    cols = ("reference", "records", "distinct", "lost", "extra", "duplicates",
            "score_mismatch")
    table.add_column("output")
    for col in cols:
        table.add_column(col, justify="right")
    for where in ("topics", "files"):
        for tag, c in report[where].items():
            table.add_row(f"{where}: {tag}", *(f"{c[k]:,}" for k in cols))
    console.print(table)
    s = report["summary"]
    console.print(f"final summary: readings_in {s['readings_in']:,} = valid "
                  f"{s['readings_valid']:,} + dead letters {s['dead_letters']:,} "
                  f"({'holds' if s['invariant_ok'] else 'BROKEN'}); reasons "
                  f"{s['dead_letter_reasons']}", highlight=False)
    if report["failed"]:
        console.print("[red]failed: " + "; ".join(report["failed"]) + "[/red]")
    else:
        console.print(f"lost 0, extra 0, score mismatches 0, duplicates in the files 0; "
                      f"copies on the topics (at-least-once, deduped by id): "
                      f"{report['topic_duplicates']:,}", highlight=False)

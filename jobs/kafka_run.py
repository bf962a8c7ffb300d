"""``twin run --source kafka``, bounded: the raw topics' backlog in slices, each committed.

Runbook
-------
One run reads what the raw topics hold now, from where the last run stopped:

1. **state**: the state file (twins, offsets, when each asset was last seen) is read and
   its signature checked before anything in it is unpickled (:mod:`pipelines.statefile`).
2. **plan**: its offsets (else the consumer group's) are checked against the broker
   (low/high watermarks, topic ids); offsets that do not fit stop the run unless
   ``--on-offset-reset`` chose earliest or latest (:mod:`pipelines.kafka.offsets`). The
   backlog up to the end offsets present now (at most ``--max-messages``) is cut into
   slices of at most ``--max-messages-per-slice`` messages and ``--max-bytes-per-slice``
   bytes (the messages' sizes are read first: memory follows bytes, not counts).
3. **slices**: each slice is one Beam pipeline: read, normalize, twins (started from the
   state file, handed back at the end with their windows open), outputs to Kafka
   (flushed, failing the slice if any delivery failed) and to files in a slice folder.
   Then the slice is committed: state file (atomic, signed), then the consumer group's
   offsets. A run killed at any point loses nothing: the rerun starts at the last
   committed slice and, cutting the rest the same way, gives the same outputs (same ids).
   Memory follows the slice, not the backlog: the DirectRunner holds a pipeline's data in
   memory, so each slice is its own pipeline, run in a child process forked for it (the
   heap a pipeline leaves behind goes with the child; the kernel ends the child if the run
   dies).
4. **retention**: after each slice, twins of assets not seen for ``--state-ttl`` of event
   time are flushed (their open windows scored, their last state on ``twin.state``) and
   leave the state file (:mod:`transforms.retention`), in a step committed the same way.
5. **files**: once every slice is in, the slices' files become ``OUT/<kind>.avro`` and
   ``.parquet`` and ``OUT/summary.json`` counts them all (slices a killed run committed
   included, so files and summary always describe the same messages).

A run with nothing new to read says so and leaves the previous run's outputs and summary
as they are.
"""

from __future__ import annotations

import os
import pickle
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines import progress
from pipelines.kafka.offsets import PartitionRange

CHECKPOINT_SCHEMA = {
    "type": "record", "name": "TwinCheckpoint", "namespace": "twin.internal",
    "fields": [{"name": "asset_id", "type": "string"}, {"name": "twin", "type": "bytes"},
               {"name": "last_ms", "type": "long"}],
}
SLICE_PREFIX = ".slice-"
CHECKPOINT_NAME = ".checkpoint"  # a slice's twins, handed back: files .checkpoint-<id>.avro
# Each slice costs a pipeline's start-up and a state-file commit; 250,000 typical messages
# (~480 bytes each) keep the peer benchmark's run (200 assets, 1.44 million messages) under
# 0.5 GB of proportional memory for the whole process tree, in 6 slices.
DEFAULT_SLICE = 250_000
# The bytes of ~250,000 typical messages: a slice of larger messages is cut shorter, as a
# pipeline's memory follows the bytes it holds (about twice for typical messages, more for
# large ones, which are copied whole at every stage).
DEFAULT_SLICE_BYTES = 128 << 20


def _can_fork() -> bool:
    import multiprocessing
    import sys

    return sys.platform == "linux" and "fork" in multiprocessing.get_all_start_methods()


@dataclass
class BoundedKafkaRun:
    """Settings of one bounded Kafka run (what ``twin run --source kafka`` flags say)."""

    out: Path
    config: dict[str, Any]  # librdkafka settings
    key: bytes  # signs the state file (the command-signing key)
    topics: list[str]
    signer: Any = None  # signs actions (transforms.signing.Signer); None: not signed
    group_id: str = "twinstream"
    state_path: str | None = None  # default OUT/twin-state.pkl
    on_offset_reset: str = "fail"
    max_messages_per_slice: int = DEFAULT_SLICE
    max_bytes_per_slice: int | None = DEFAULT_SLICE_BYTES
    max_messages: int | None = None
    state_ttl_ms: int = 7 * 86_400_000
    trust_unsigned_state: bool = False
    twin_kwargs: dict[str, Any] = field(default_factory=dict)
    shards: int = 0
    serde: Any = None
    plant: Any = None  # transforms.plant.Plant (a model and data formats); None: built-in
    show_progress: bool = False
    fork: bool = field(default_factory=lambda: _can_fork())  # each slice in a child
    extra: dict[str, Any] = field(default_factory=dict)  # more for the summary


class SliceFailed(RuntimeError):
    """A slice's pipeline failed in a way that is not one of ours (see the message)."""


def _pipeline_counts(build, beam_args: list[str], expected: int, show: bool
                     ) -> dict[str, Any]:
    from jobs.run import _execute, _metrics, _options

    progress.reset()
    return _metrics(_execute(build, _options(beam_args), expected, show))


def _die_with_parent(parent: int) -> None:
    """Have the kernel kill this process when its parent dies (Linux), so a killed run
    leaves no slice running on beside its rerun."""
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def _close_out_dir_lock() -> None:
    """Close this process's copy of the output folder's lock (the run holds it: see
    :func:`~pipelines.beam.sinks.claim_out_dir`), so the lock goes the moment the run
    does, not when this child has finished dying."""
    from pipelines.beam.sinks import LOCK_FILE

    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if os.path.basename(target) == LOCK_FILE:
            os.close(int(fd))


def _in_child(send, parent: int, build, beam_args: list[str], expected: int,
              show: bool) -> None:
    """A forked slice: its counters, or what it raised, to the parent."""
    _die_with_parent(parent)
    _close_out_dir_lock()
    try:
        send.send(("ok", _pipeline_counts(build, beam_args, expected, show)))
    except BaseException as exc:  # noqa: BLE001 - the parent raises it
        try:
            blob = pickle.dumps(exc)
        except Exception:  # noqa: BLE001 - not picklable: its type and text then
            blob = None
        send.send(("error", (blob, f"{type(exc).__name__}: {exc}")))
    finally:
        send.close()


def _child_error(blob: bytes | None, text: str) -> BaseException:
    """What a slice's child raised, as the parent can raise it."""
    if blob is not None:
        try:
            return pickle.loads(blob)  # our own child's bytes, through a pipe
        except Exception:  # noqa: BLE001 - an exception type that does not unpickle
            pass
    return SliceFailed(text)


def _keys(ranges: list[PartitionRange]) -> dict[str, int]:
    return {r.key: r.start for r in ranges}


def _describe_offsets(offsets: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(offsets.items())) or "the beginning"


def _add_counts(total: dict[str, Any], counts: dict[str, Any]) -> dict[str, Any]:
    out = dict(total)
    for k, v in counts.items():
        if isinstance(v, dict):
            merged = dict(out.get(k) or {})
            for name, n in v.items():
                merged[name] = merged.get(name, 0) + n
            out[k] = dict(sorted(merged.items()))
        else:
            out[k] = out.get(k, 0) + v
    return out


class _Run:
    def __init__(self, s: BoundedKafkaRun, beam_args: list[str]) -> None:
        self.s = s
        self.beam_args = beam_args
        self.state_path = s.state_path or str(s.out / "twin-state.pkl")

    # -- the steps ------------------------------------------------------------------------

    def _step_dir(self, state: dict[str, Any]) -> Path:
        path = self.s.out / f"{SLICE_PREFIX}{state['steps']:06d}"
        if path.exists():  # a killed run's uncommitted step: it is redone
            shutil.rmtree(path)
        path.mkdir(parents=True)
        return path

    def _commit(self, state: dict[str, Any], offsets_changed: bool) -> dict[str, Any]:
        from pipelines.beam.kafka import commit_offsets
        from pipelines.statefile import write_state

        state = write_state(self.state_path, state, self.s.key)
        if offsets_changed:
            mine = {k: v for k, v in state["offsets"].items()
                    if k.rpartition("/")[0] in self.s.topics}
            commit_offsets(self.s.config, self.s.group_id, mine)
        return state

    def _run_pipeline(self, build, expected: int, meanwhile=None) -> dict[str, Any]:
        """Run the pipeline ``build`` makes; its counters. In a forked child process where
        the platform forks: what a pipeline leaves behind in the heap (memory the
        allocator keeps, fragmented) then goes with the child, so every slice starts from
        the same memory, however many came before. ``meanwhile()`` is called in this
        process while the child runs (once it is forked: no Kafka client of this process
        is open across a fork), else after the pipeline."""
        if not self.s.fork:
            counts = _pipeline_counts(build, self.beam_args, expected, self.s.show_progress)
            if meanwhile is not None:
                meanwhile()
            return counts
        import multiprocessing

        ctx = multiprocessing.get_context("fork")
        receive, send = ctx.Pipe(duplex=False)
        child = ctx.Process(target=_in_child, name="twin-slice",
                            args=(send, os.getpid(), build, self.beam_args, expected,
                                  self.s.show_progress))
        child.start()
        send.close()
        if meanwhile is not None:
            meanwhile()
        try:
            kind, value = receive.recv()
        except EOFError:  # it died without a word: killed, out of memory, ...
            child.join()
            raise SliceFailed(f"the process running a slice exited with code "
                              f"{child.exitcode} before it finished; nothing of the slice "
                              "was committed, a rerun repeats it") from None
        finally:
            receive.close()
        child.join()
        if kind == "error":
            raise _child_error(*value)
        return value

    def slice(self, state: dict[str, Any], part: list[PartitionRange],
              meanwhile=None) -> dict[str, Any]:
        """Read ``part``, write its outputs, commit twins and offsets; ``meanwhile()``: see
        :meth:`_run_pipeline`."""
        import apache_beam as beam
        import fastavro

        from pipelines.beam.kafka import ReadFromKafka
        from pipelines.beam.pipeline import ProcessMessages, WriteKafkaOutputs, WriteOutputs
        from pipelines.beam.sinks import WriteBundleFiles

        s = self.s
        folder = self._step_dir(state)
        initial = self.state_path if state["twins"] else None
        sha = state["sha256"] if initial else None
        planned = sum(r.stop - r.start for r in part)

        def build(p):
            outputs = (
                p
                | "ReadKafka" >> ReadFromKafka(s.config, part)
                | "ProcessMessages" >> ProcessMessages(
                    twin_kwargs=s.twin_kwargs, normalize_kwargs={"serde": s.serde},
                    initial_path=initial, initial_sha256=sha, checkpoint=True,
                    shards=s.shards, plant=s.plant)
            )
            outputs | "WriteOutputs" >> WriteOutputs(str(folder), per_bundle=True)
            outputs | "WriteKafka" >> WriteKafkaOutputs(s.config, s.signer, s.serde)
            outputs["checkpoint"] | "Checkpoint" >> beam.Map(
                lambda t: {"asset_id": t[0], "twin": t[1], "last_ms": t[2]}) | \
                "WriteCheckpoint" >> WriteBundleFiles(
                    str(folder), CHECKPOINT_NAME, CHECKPOINT_SCHEMA, parquet=False)

        counts = self._run_pipeline(build, planned, meanwhile)
        # outputs are on the broker (every bundle flushed): now make the progress durable
        twins, seen = dict(state["twins"]), dict(state["seen"])
        for path in sorted(folder.glob(f"{CHECKPOINT_NAME}-*.avro")):
            with path.open("rb") as f:
                for r in fastavro.reader(f):
                    twins[r["asset_id"]] = r["twin"]
                    seen[r["asset_id"]] = r["last_ms"]
            path.unlink()
        offsets = {**state["offsets"], **{r.key: r.stop for r in part}}
        pending = [*state["pending"], {"dir": folder.name, "counts": counts, "planned": planned,
                                       "from": _keys(part),
                                       "to": {r.key: r.stop for r in part}}]
        return self._commit({**state, "offsets": offsets, "twins": twins, "seen": seen,
                             "pending": pending, "slices": state["slices"] + 1,
                             "steps": state["steps"] + 1},
                            offsets_changed=True)

    def evict(self, state: dict[str, Any], assets: list[str]) -> dict[str, Any]:
        """Flush the twins of ``assets`` to the outputs and drop them from the state."""
        import apache_beam as beam

        from pipelines.beam.pipeline import EvictTwins, WriteKafkaOutputs, WriteOutputs

        s = self.s
        folder = self._step_dir(state)
        pairs = [(a, state["twins"][a]) for a in assets if a in state["twins"]]

        def build(p):
            outputs = (p | "Twins" >> beam.Create(pairs, reshuffle=False)
                       | "EvictTwins" >> EvictTwins(s.plant))
            outputs | "WriteOutputs" >> WriteOutputs(str(folder), per_bundle=True)
            outputs | "WriteKafka" >> WriteKafkaOutputs(s.config, s.signer, s.serde)

        counts = self._run_pipeline(build, 0)
        gone = set(assets)
        pending = [*state["pending"], {"dir": folder.name, "counts": counts, "planned": 0,
                                       "from": {}, "to": {}}]
        return self._commit({
            **state, "pending": pending,
            "twins": {a: t for a, t in state["twins"].items() if a not in gone},
            "seen": {a: t for a, t in state["seen"].items() if a not in gone},
            "evicted": state["evicted"] + len(gone), "steps": state["steps"] + 1},
            offsets_changed=False)

    def next_slice(self, remaining: list[PartitionRange], left: int) -> list[PartitionRange]:
        """The next slice: at most ``--max-messages-per-slice`` messages of what is left
        (each partition's share in proportion to what it has left), then cut to at most
        ``--max-bytes-per-slice`` (messages vary in size: memory follows bytes). The same
        offsets give the same slice, so a rerun cuts as the run it repeats did."""
        from pipelines.beam.kafka import message_sizes
        from pipelines.kafka.offsets import split, trim

        (part, *_) = split(remaining, self.s.max_messages_per_slice, left)
        if self.s.max_bytes_per_slice is None:
            return part
        return trim(part, message_sizes(self.s.config, part), self.s.max_bytes_per_slice)

    def stale(self, state: dict[str, Any]) -> list[str]:
        from transforms.retention import expired, stream_time_ms

        now = int(time.time() * 1000)
        return expired(state["seen"], self.s.state_ttl_ms, stream_time_ms(state["seen"], now))

    def finish(self, state: dict[str, Any], extra: dict[str, Any], t0: float
               ) -> dict[str, Any]:
        """The committed steps' files as the run's outputs, the summary of them all."""
        from jobs.run import COUNTERS, _summarize
        from pipelines.beam.pipeline import OUTPUTS
        from pipelines.beam.sinks import concat_outputs

        s = self.s
        steps = state["pending"]
        counts: dict[str, Any] = {**dict.fromkeys(COUNTERS, 0), "actions": {},
                                  "dead_letter_reasons": {}}
        offsets_from: dict[str, int] = {}
        offsets_to: dict[str, int] = {}
        for step in steps:
            counts = _add_counts(counts, step["counts"])
            for k, v in step["from"].items():
                offsets_from.setdefault(k, v)
            offsets_to.update(step["to"])
        schemas = {name: schema for name, (_, schema) in OUTPUTS.items()}
        schemas["dead_letters"] = "twin/deadletter.v1"
        concat_outputs([str(s.out / step["dir"]) for step in steps], str(s.out), schemas)
        summary = _summarize(None, s.out, time.perf_counter() - t0, {
            **counts, **extra, "slices": sum(1 for st in steps if st["from"]),
            "messages_planned": sum(st["planned"] for st in steps),
            "offsets_from": offsets_from, "offsets_to": offsets_to,
            "assets": len(state["twins"])})
        self._commit({**state, "pending": [], "runs": state["runs"] + 1},
                     offsets_changed=False)
        for step in steps:
            shutil.rmtree(s.out / step["dir"], ignore_errors=True)
        return summary

    # -- the run ----------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        from pipelines.beam.kafka import plan_reads
        from pipelines.kafka.topics import OUTPUT_TOPICS, ensure_topics
        from pipelines.statefile import read_state

        s = self.s
        s.out.mkdir(parents=True, exist_ok=True)
        state = read_state(self.state_path, s.key, s.trust_unsigned_state)
        if state.pop("unsigned", False):  # an old file the user vouched for: sign it now
            state = self._commit(state, offsets_changed=False)
        keep = {step["dir"] for step in state["pending"]}
        for leftover in s.out.glob(f"{SLICE_PREFIX}*"):  # steps a killed run never committed
            if leftover.name not in keep:
                shutil.rmtree(leftover, ignore_errors=True)
        source = (f"the state file {self.state_path}" if state["offsets"]
                  else f"consumer group {s.group_id!r}'s committed offsets")
        plan = plan_reads(s.config, s.topics, s.group_id, state["offsets"] or None,
                          state["topic_ids"], s.on_offset_reset, source=source)
        backlog = sum(r.stop - r.start for r in plan.ranges)
        planned = backlog if s.max_messages is None else min(backlog, s.max_messages)
        notes = [_reset_note(plan.resets)] if plan.resets else []
        # offsets as the plan has them (resets applied, partitions that are gone dropped)
        offsets = {k: v for k, v in state["offsets"].items() if k not in plan.dropped}
        offsets.update(_keys(plan.ranges))
        moved = offsets != state["offsets"] or plan.topic_ids != {
            t: i for t, i in state["topic_ids"].items() if t in plan.topic_ids}
        state = {**state, "offsets": offsets,
                 "topic_ids": {**state["topic_ids"], **plan.topic_ids}}
        stale = self.stale(state)
        if not planned and not stale and not state["pending"]:
            if moved:  # the user chose where to go on from: remember it
                self._commit(state, offsets_changed=True)
            message = (f"nothing new on topics {', '.join(s.topics)} since offsets "
                       f"{_describe_offsets(_keys(plan.ranges))}: the previous run's "
                       f"outputs and summary.json in {s.out} are left as they are")
            return {"nothing_new": True, "message": "\n".join([*notes, message]),
                    "out": str(s.out)}
        ensure_topics(s.config, [t for t, _ in OUTPUT_TOPICS.values()])
        t0 = time.perf_counter()
        if stale:
            state = self.evict(state, stale)
        remaining, left = list(plan.ranges), planned
        part = self.next_slice(remaining, left) if left > 0 else None
        while part is not None:
            done = {r.key: r.stop for r in part}
            remaining = [r._replace(start=done.get(r.key, r.start)) for r in remaining]
            left -= sum(r.stop - r.start for r in part)
            upcoming: dict[str, Any] = {}

            def cut_next(remaining=remaining, left=left, upcoming=upcoming) -> None:
                """The next slice's cut (its messages' sizes read from the broker) while
                this slice's child runs; a failure here is met again below."""
                if left > 0:
                    try:
                        upcoming["part"] = self.next_slice(remaining, left)
                    except Exception:  # noqa: BLE001 - cut again after the slice, and raise
                        pass

            state = self.slice(state, part, meanwhile=cut_next)
            stale = self.stale(state)
            if stale:
                state = self.evict(state, stale)
            part = upcoming.get("part") or (self.next_slice(remaining, left) if left > 0
                                            else None)
        extra = {
            "source": "kafka", "bootstrap_servers": s.config["bootstrap.servers"],
            "group_id": s.group_id, "state_file": self.state_path, "topics": s.topics,
            "offset_resets": plan.resets, "backlog_left": backlog - planned,
            "evicted_total": state["evicted"], **s.extra}
        if backlog > planned:
            notes.append(f"--max-messages {s.max_messages}: {backlog - planned} messages "
                         "left on the topics for the next run")
        summary = self.finish(state, extra, t0)
        summary["notes"] = notes
        return summary


def _reset_note(resets: list[dict[str, Any]]) -> str:
    lines = []
    for r in resets:
        held = "gone" if r["low"] is None else f"broker has {r['low']}..{r['high']}"
        if r["start"] is None:
            what = "its offset is forgotten"
        elif r["policy"] == "latest":
            what = f"skipped to the end, {r['start']}"
        else:
            what = f"reading from the start, {r['start']}"
        lines.append(f"  {r['partition']}: stored {r['stored']}, {held} ({r['why']}): {what}")
    return (f"offsets reset (--on-offset-reset {resets[0]['policy']}):\n" + "\n".join(lines))


def run_bounded(settings: BoundedKafkaRun, beam_args: list[str]) -> dict[str, Any]:
    """Run ``settings``; returns the summary (also ``OUT/summary.json``), or
    ``{"nothing_new": True, "message": ...}`` when there was nothing to read."""
    return _Run(settings, beam_args).run()

"""``twin bench latency``: how long after its window can close a prediction lands in Kafka.

On a fresh embedded broker (its own free loopback port) the twin job runs unbounded on a
fresh standalone Flink cluster (one TaskManager, one slot, loopback; ``twin flink submit
--source kafka``, Kafka sinks). A paced stream then goes through it: the simulator's
fleet (``--assets``, clean: no malformed, late, duplicate or reordered messages, 20-400
ms transport delay) replayed in wall-clock time, each message published when its
simulated arrival is due, one phase per load in ``--loads`` (fractions of ``--capacity``
messages/s, or of the latest ``flink-slots`` record's one-slot rate), each phase
``--phase`` long after a short warm-up. A load sets the sampling interval
(``assets / rate``), so event time runs at wall-clock speed in every phase.

Per prediction (matched to its window by asset and window start):

- ``last``: the latest Kafka timestamp of the readings its window took;
- ``closable``: the earliest moment the job's settings let the window close: the Kafka
  timestamp of the asset's first reading that moves the data watermark (newest event time
  minus ``--out-of-orderness``) past the window's end plus ``--allowed-lateness``, or the
  engine watermark (arrival time minus the job's ``--watermark-delay``) passing it, if
  earlier;
- ``landed``: the prediction's Kafka timestamp;
- latency beyond the watermark = ``landed - max(last, closable)``: the time from the
  last reading arriving to the prediction landing, minus the watermark's designed wait.

Clocks: one machine, one clock (``CLOCK_REALTIME``). The embedded broker (Tansu) keeps the
producer's timestamp whatever ``message.timestamp.type`` says, so both timestamps are
CreateTime stamped by the producing client: the raw message's by this bench's producer
when it hands the message over (no timestamp given: librdkafka's wall clock at
``produce``), the prediction's by the Flink job's Kafka producer at ``send`` (the sink
writes no timestamp: the Java client's wall clock). The raw stamp is the earliest its
append can be (latency overstated by the producer's linger, 5 ms); the prediction's stamp
is before its append, so the bench also reports latency by the moment its own consumer
received each prediction (an upper bound).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any


class BenchLatencyError(RuntimeError):
    pass


# -- the pure parts: which readings a window took, when it could close, the arithmetic ----

@dataclass
class WindowTiming:
    """One (asset, window)'s readings as the job's settings judge them."""

    last_ms: int  # Kafka timestamp of the latest reading the window took
    closable_ms: int | None  # earliest moment the watermark let it close (None: not yet)
    readings: int

    @property
    def ready_ms(self) -> int | None:
        """When the window could close, its last reading in: ``max(last, closable)``."""
        return None if self.closable_ms is None else max(self.last_ms, self.closable_ms)


def window_timings(readings: Iterable[tuple[str, int, int]], window_ms: int,
                   allowed_lateness_ms: int, out_of_orderness_ms: int,
                   watermark_delay_ms: int | None = None
                   ) -> tuple[dict[tuple[str, int], WindowTiming], dict[str, int]]:
    """``(asset_id, event ms, Kafka timestamp ms)`` of every reading, in arrival order ->
    ``{(asset_id, window start): WindowTiming}`` and counts of the readings left out.

    The window rules are the twin's (:class:`~transforms.windowing.WindowBuffer`): a window
    closes when the watermark reaches its end plus the allowed lateness; the watermark is
    the larger of the asset's data watermark (newest event time minus the out-of-orderness
    bound) and the engine watermark (Kafka timestamp minus ``watermark_delay_ms``; None:
    none). A reading whose window the watermark has passed is late and not in it; a
    second reading of the same asset and event time is a duplicate and adds nothing.
    """
    out: dict[tuple[str, int], WindowTiming] = {}
    newest: dict[str, int] = {}  # asset -> newest event time taken
    open_: dict[str, list[int]] = {}  # asset -> starts of windows not closable yet
    seen: set[tuple[str, int]] = set()
    skipped = {"late": 0, "duplicate": 0}
    for asset, ts, arrival in readings:
        engine = -math.inf if watermark_delay_ms is None else arrival - watermark_delay_ms
        data = newest.get(asset, -math.inf) - out_of_orderness_ms
        start = ts - ts % window_ms
        deadline = start + window_ms + allowed_lateness_ms
        timing = out.get((asset, start))
        if deadline <= max(data, engine) or (timing is not None
                                              and timing.closable_ms is not None):
            skipped["late"] += 1
            continue
        if (asset, ts) in seen:
            skipped["duplicate"] += 1
            continue
        seen.add((asset, ts))
        if timing is None:
            timing = out[(asset, start)] = WindowTiming(arrival, None, 0)
            open_.setdefault(asset, []).append(start)
        timing.last_ms = max(timing.last_ms, arrival)
        timing.readings += 1
        if ts > newest.get(asset, -math.inf):
            newest[asset] = ts
        watermark = max(newest[asset] - out_of_orderness_ms, engine)
        still = []
        for s in open_[asset]:
            if s + window_ms + allowed_lateness_ms <= watermark:
                out[(asset, s)].closable_ms = arrival
            else:
                still.append(s)
        open_[asset] = still
    if watermark_delay_ms is not None:  # the engine watermark passes the deadline at
        for (_, s), t in out.items():  # deadline + delay on the arrival clock
            by_engine = s + window_ms + allowed_lateness_ms + watermark_delay_ms
            t.closable_ms = by_engine if t.closable_ms is None else min(t.closable_ms,
                                                                        by_engine)
    return out, skipped


def beyond_watermark(predictions: Iterable[tuple[str, int, int]],
                     timings: dict[tuple[str, int], WindowTiming]
                     ) -> tuple[list[tuple[str, int, int]], list[tuple[str, int]]]:
    """``(asset_id, window start, landed ms)`` of each prediction -> ``(asset, start,
    landed - max(last, closable))`` for each matched one, and the ``(asset, start)`` of
    those with no window of readings (or none closable: a bug if any)."""
    matched, unmatched = [], []
    for asset, start, landed in predictions:
        t = timings.get((asset, start))
        if t is None or t.ready_ms is None:
            unmatched.append((asset, start))
        else:
            matched.append((asset, start, landed - t.ready_ms))
    return matched, unmatched


def percentiles(values: Iterable[float]) -> dict[str, float | int | None]:
    """p50, p99 (nearest rank: a value that occurred) and max, and the count."""
    v = sorted(values)
    if not v:
        return {"n": 0, "p50": None, "p99": None, "max": None}

    def rank(q: float):
        return v[max(0, math.ceil(q * len(v)) - 1)]

    return {"n": len(v), "p50": rank(0.50), "p99": rank(0.99), "max": v[-1]}


# -- the run ---------------------------------------------------------------------------

def add_arguments(p: argparse.ArgumentParser) -> None:
    from jobs.flink_job import PYTHON_MODES
    from jobs.options import parse_duration, positive_float, positive_int, window_duration

    p.add_argument("--capacity", type=positive_float, default=None, metavar="MSG_PER_S",
                   help="the job's capacity in messages/s that --loads are fractions of "
                        "(default: the one-slot rate of the latest flink-slots record)")
    p.add_argument("--loads", default="0.25,0.5,0.9",
                   help="comma-separated fractions of the capacity, one phase each "
                        "(default 0.25,0.5,0.9)")
    p.add_argument("--rate", type=positive_float, default=None,
                   help="one phase at this many messages/s instead of --loads")
    p.add_argument("--assets", type=positive_int, default=200,
                   help="simulated assets (default 200)")
    p.add_argument("--phase", type=parse_duration, default="60s",
                   help="wall-clock length of each load's phase (default 60s)")
    p.add_argument("--warmup", type=parse_duration, default="20s",
                   help="unmeasured stream at the first load before the phases (default 20s)")
    p.add_argument("--window", type=window_duration, default="10s",
                   help="the job's --window (default 10s)")
    p.add_argument("--allowed-lateness", type=parse_duration, default="1s",
                   help="the job's --allowed-lateness (default 1s)")
    p.add_argument("--out-of-orderness", type=parse_duration, default="2s",
                   help="the job's --out-of-orderness (default 2s)")
    p.add_argument("--watermark-delay", type=parse_duration, default="30s",
                   help="the job's --watermark-delay (default 30s, the job's default)")
    p.add_argument("--bundle-time", type=parse_duration, default="100ms",
                   help="the job's --bundle-time (default 100ms, the job's default)")
    p.add_argument("--python-mode", choices=PYTHON_MODES, default="process",
                   help="the job's --python-mode (default process, the job's default)")
    p.add_argument("--partitions", type=positive_int, default=2,
                   help="partitions of each raw topic (default 2)")
    p.add_argument("--out", type=Path, default=Path("out") / "bench-latency",
                   help="work folder: broker log, cluster run folder (default "
                        "out/bench-latency)")


def capacity_from_records(records: list[dict[str, Any]]) -> tuple[float, str] | None:
    """The one-slot messages/s of the latest ``flink-slots`` record, and which record."""
    from jobs.benchrecord import latest

    r = latest(records).get("flink-slots")
    if r is None:
        return None
    rate = (r["figures"].get("messages_per_s") or {}).get("1")
    return None if not rate else (float(rate), r.get("_file", "flink-slots record"))


def _submit(cluster, bootstrap: str, group: str, settings: dict[str, float]) -> str:
    from jobs.flink import private_jobs_dir
    from jobs.flink_job import ENTRY, add_job_arguments, options_from_args

    parser = argparse.ArgumentParser()
    add_job_arguments(parser)
    args = parser.parse_args([
        "--source", "kafka", "--sink", "kafka", "--bootstrap-servers", bootstrap,
        "--parallelism", "1", "--group-id", group, "--job-name", group,
        "--window", f"{settings['window_s']}s",
        "--allowed-lateness", f"{settings['allowed_lateness_s']}s",
        "--out-of-orderness", f"{settings['out_of_orderness_s']}s",
        "--watermark-delay", f"{settings['watermark_delay_s']}s",
        "--bundle-time", f"{settings['bundle_time_s']}s",
        "--python-mode", settings["python_mode"]])
    opts = options_from_args(args)
    jars = opts.jars
    opts.jars = []
    options_file = opts.dump(private_jobs_dir(cluster.run_dir) / f"{group}.json")
    return cluster.submit(ENTRY, ["--options", str(options_file)], jars=jars, parallelism=1)


def epoch_ms(value: Any) -> int:
    """Epoch ms of an Avro ``timestamp-millis`` field (fastavro reads it as a datetime)."""
    if hasattr(value, "timestamp"):
        return int(round(value.timestamp() * 1000))
    return int(value)


class _Predictions(threading.Thread):
    """Reads ``twin.predictions`` from its start while the stream runs: ``(asset, window
    start, Kafka timestamp, received ms)`` of each."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(daemon=True)
        self.bootstrap = bootstrap
        self.rows: list[tuple[str, int, int, int]] = []
        self.errors: list[str] = []
        self.stop = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer, TopicPartition

        from pipelines.kafka.serde import LocalSerde
        from pipelines.kafka.topics import OUTPUT_TOPICS

        topic, schema = OUTPUT_TOPICS["prediction"]
        serde = LocalSerde()
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": "bench-latency",
                      "enable.auto.commit": False, "fetch.wait.max.ms": 10})
        try:
            parts = c.list_topics(topic, timeout=10).topics[topic].partitions
            c.assign([TopicPartition(topic, p, 0) for p in parts])
            while not self.stop.is_set():
                for m in c.consume(1000, timeout=0.05):
                    got = int(time.time() * 1000)
                    if m.error() is not None:
                        continue
                    try:
                        name, r = serde.decode(m.value())
                    except Exception as exc:  # reported, never dropped silently
                        self.errors.append(f"offset {m.offset()}: {exc}")
                        continue
                    if name != schema:
                        self.errors.append(f"{topic} holds a {name}")
                        continue
                    self.rows.append((r["asset_id"], epoch_ms(r["window_start_ms"]),
                                      m.timestamp()[1], got))
        finally:
            c.close()


def paced_plan(assets: int, phases: list[tuple[str, float, float]], start_ms: int
               ) -> tuple[list[tuple[float, str, bytes, bytes, int]],
                          list[tuple[str, float, int, int]]]:
    """The stream to publish: ``(name, messages/s, seconds)`` phases of a clean simulated
    fleet back to back from ``start_ms``, each at ``interval = assets / rate``, as
    ``(due epoch seconds, topic, key, value, event ms)`` in due order (a message is due
    at its simulated arrival: event time keeps wall-clock pace), and each phase's
    ``(name, rate, start ms, end ms)``."""
    from transforms.simulator import Fleet, FleetConfig

    plan, bounds, start = [], [], start_ms
    for name, rate, seconds in phases:
        cfg = FleetConfig(assets=assets, duration_s=seconds, interval_s=assets / rate,
                          seed=11, start_ms=start, malformed_rate=0.0, dropout_rate=0.0,
                          duplicate_rate=0.0, out_of_order_rate=0.0, late_rate=0.0)
        end = start + int(seconds * 1000)
        for m in Fleet(cfg).messages():  # (each asset's grid is its own: cut at the
            if m.event_ms < end:  # phase's end, so the next phase follows on in order)
                plan.append((m.arrival_ms / 1000, m.topic, m.key, m.value, m.event_ms))
        bounds.append((name, rate, start, end))
        start = end
    plan.sort(key=lambda x: x[0])
    return plan, bounds


def _publish(producer, plan: list[tuple[float, str, bytes, bytes, int]]) -> dict[str, float]:
    """Hand each ``(due, topic, key, value)`` to the producer when ``time.time()`` reaches
    ``due`` (no timestamp: the client stamps its wall clock); how far behind it ran."""
    behind = []
    for i, (due, topic, key, value, _) in enumerate(plan):
        while (left := due - time.time()) > 0:
            time.sleep(min(left, 0.005))
            producer.poll(0)
        behind.append(time.time() - due)
        while True:
            try:
                producer.produce(topic, value, key)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 100 == 0:
            producer.poll(0)
    producer.flush(30)
    behind.sort()
    return {"behind_p50_ms": round(1000 * behind[len(behind) // 2], 1),
            "behind_max_ms": round(1000 * behind[-1], 1)} if behind else {}


def _wait_running(cluster, job_id: str, timeout_s: float = 300.0) -> None:
    """Until the job and every task of it run (a job is RUNNING before its tasks are)."""
    cluster.wait_for_job(job_id, "RUNNING", timeout_s=timeout_s)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        vertices = cluster.get(f"/jobs/{job_id}").get("vertices", [])
        if vertices and all(v.get("status") == "RUNNING" for v in vertices):
            return
        if cluster.job_status(job_id) != "RUNNING":
            break
        time.sleep(0.5)
    raise BenchLatencyError(f"the job's tasks did not all start running: "
                            f"{cluster.job_exceptions(job_id)}")


def run(capacity: float | None, loads: list[float], rate: float | None, assets: int,
        phase_s: float, warmup_s: float, window_s: float, allowed_lateness_s: float,
        out_of_orderness_s: float, watermark_delay_s: float, partitions: int, out: Path,
        capacity_source: str = "--capacity", bundle_time_s: float = 0.1,
        python_mode: str = "process") -> dict[str, Any]:
    from confluent_kafka import Producer

    from pipelines.flink.cluster import FlinkCluster, FlinkClusterError
    from pipelines.kafka.broker import EmbeddedBroker
    from pipelines.kafka.testing import read_topic
    from pipelines.kafka.topics import OUTPUT_TOPICS, ensure_topics, raw_topics
    from transforms.errors import InvalidReading
    from transforms.normalize import normalize_message

    rates = [rate] if rate is not None else [round(capacity * f, 1) for f in loads]
    settings = {"window_s": window_s, "allowed_lateness_s": allowed_lateness_s,
                "out_of_orderness_s": out_of_orderness_s,
                "watermark_delay_s": watermark_delay_s, "bundle_time_s": bundle_time_s,
                "python_mode": python_mode}
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    broker = EmbeddedBroker(log_path=out / "broker.log").start()
    cluster = reader = None
    try:
        bs = broker.bootstrap_servers
        ensure_topics({"bootstrap.servers": bs}, raw_topics(), partitions=partitions)
        ensure_topics({"bootstrap.servers": bs}, [t for t, _ in OUTPUT_TOPICS.values()],
                      partitions=1)
        try:
            cluster = FlinkCluster(out / "flink", slots=1).start()
            job_id = _submit(cluster, bs, "bench-latency", settings)
            _wait_running(cluster, job_id)
        except FlinkClusterError as exc:
            raise BenchLatencyError(str(exc)) from exc
        reader = _Predictions(bs)
        reader.start()
        # the phases, generated now, each message due at its simulated arrival
        phases = ([("warmup", rates[0], warmup_s)] if warmup_s > 0 else []) + [
            (f"{r:g}", r, phase_s) for r in rates]
        total = sum(r * s for _, r, s in phases)
        t0_ms = (int(time.time() * 1000) + int(1000 * (3 + total / 5000)))
        t0_ms -= t0_ms % 1000
        plan, bounds = paced_plan(assets, phases, t0_ms)
        producer = Producer({"bootstrap.servers": bs, "linger.ms": 5,
                             "queue.buffering.max.messages": 1_000_000})
        pacing = _publish(producer, plan)
        # the last windows close on data that never comes: wait for the engine watermark
        # only as long as the predictions keep coming
        quiet_since, seen = time.monotonic(), -1
        while time.monotonic() - quiet_since < 8:
            if len(reader.rows) != seen:
                seen, quiet_since = len(reader.rows), time.monotonic()
            time.sleep(0.5)
        reader.stop.set()
        reader.join(15)
        if reader.errors:
            raise BenchLatencyError("predictions the bench could not read: "
                                    + "; ".join(reader.errors[:3]))
        if cluster.job_status(job_id) != "RUNNING":
            raise BenchLatencyError(f"the job is {cluster.job_status(job_id)}: "
                                    f"{cluster.job_exceptions(job_id)}")
        history = cluster.get(f"/jobs/{job_id}/checkpoints").get("history", [])
        try:
            cluster.cancel(job_id)
        except FlinkClusterError:
            pass  # (the cluster is stopped next in any case)
        raw = []
        for topic in raw_topics():
            for m in read_topic(bs, topic):
                ts = m.timestamp()[1]
                try:
                    reading = normalize_message(m.value(), now_ms=ts)
                except InvalidReading:
                    continue
                raw.append((ts, m.partition(), m.offset(), reading["asset_id"],
                            reading["ts_ms"]))
    finally:
        if reader is not None:
            reader.stop.set()
        if cluster is not None:
            cluster.stop()
        broker.stop()
    raw.sort()
    timings, skipped = window_timings(
        ((a, ts, arr) for arr, _, _, a, ts in raw), int(window_s * 1000),
        int(allowed_lateness_s * 1000), int(out_of_orderness_s * 1000),
        int(watermark_delay_s * 1000))
    report = summarize(reader.rows, timings, skipped, bounds, int(window_s * 1000), {
        "capacity_msg_per_s": capacity, "capacity_source": capacity_source,
        "loads": None if rate is not None else loads, "assets": assets, "phase_s": phase_s,
        "warmup_s": warmup_s, **settings, "partitions": partitions,
        "raw_messages": len(raw), "pacing": pacing, "cores": os.cpu_count(),
        "prediction_errors": reader.errors[:5]})
    report["checkpoints"] = checkpoints_by_phase(history, bounds)
    return report


def summarize(rows: list[tuple[str, int, int, int]],
              timings: dict[tuple[str, int], WindowTiming], skipped: dict[str, int],
              bounds: list[tuple[str, float, int, int]], window_ms: int,
              head: dict[str, Any]) -> dict[str, Any]:
    """The report: per phase, latency beyond the watermark by Kafka timestamp and by
    receipt; windows are counted in the phase their start falls in, the first window of a
    phase (begun in the previous one) left out."""
    by_ts, unmatched = beyond_watermark([(a, s, ts) for a, s, ts, _ in rows], timings)
    by_got, _ = beyond_watermark([(a, s, got) for a, s, _, got in rows], timings)
    copies = len(rows) - len({(a, s) for a, s, _, _ in rows})
    phases = []
    for name, rate, lo, hi in bounds:
        if name == "warmup":
            continue
        pick = [i for i, (_, s, _) in enumerate(by_ts) if lo + window_ms <= s < hi]
        phases.append({"phase": name, "rate": rate,
                       "load": (round(rate / head["capacity_msg_per_s"], 3)
                                if head.get("capacity_msg_per_s") else None),
                       "predictions": len(pick),
                       "beyond_ms": percentiles(by_ts[i][2] for i in pick),
                       "beyond_received_ms": percentiles(by_got[i][2] for i in pick)})
    return {**head, "predictions": len(rows), "matched": len(by_ts),
            "unmatched": len(unmatched), "unmatched_examples": unmatched[:5],
            "copies": copies, "windows": len(timings),
            "windows_not_closable": sum(t.closable_ms is None for t in timings.values()),
            "readings_left_out": skipped,
            "negative": sum(1 for _, _, v in by_ts if v < 0),
            "beyond_min_ms": min((v for _, _, v in by_ts), default=None),
            "beyond_all_ms": percentiles(v for _, _, v in by_ts), "phases": phases}


def checkpoints_by_phase(history: list[dict[str, Any]],
                         bounds: list[tuple[str, float, int, int]]) -> dict[str, Any]:
    """The job's checkpoints (Flink's REST ``history`` entries) per phase, by the wall-clock
    moment each was triggered: counts and end-to-end durations (p50, max) of the
    completed ones, the count of the failed."""
    out = {}
    for name, _, lo, hi in bounds:
        these = [c for c in history if lo <= c.get("trigger_timestamp", -1) < hi]
        done = sorted(c["end_to_end_duration"] for c in these
                      if c.get("status") == "COMPLETED")
        out[name] = {"completed": len(done),
                     "failed": sum(c.get("status") == "FAILED" for c in these),
                     "duration_p50_ms": int(statistics.median(done)) if done else None,
                     "duration_max_ms": done[-1] if done else None}
    return out


def print_report(report: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Latency beyond the watermark: Flink job, 1 slot, "
                        f"{report['assets']} assets, {report['window_s']:g} s windows")
    for col in ("msg/s", "load", "predictions", "p50 ms", "p99 ms", "max ms",
                "p99 by receipt ms", "checkpoints p50 / max ms"):
        table.add_column(col, justify="right")
    for p in report["phases"]:
        b, g = p["beyond_ms"], p["beyond_received_ms"]
        c = (report.get("checkpoints") or {}).get(p["phase"]) or {}
        table.add_row(f"{p['rate']:,.0f}", "-" if p["load"] is None else f"{p['load']:.2f}",
                      str(p["predictions"]), *(str(b[k]) for k in ("p50", "p99", "max")),
                      str(g["p99"]), f"{c.get('duration_p50_ms')} / {c.get('duration_max_ms')}"
                      + (f" ({c['failed']} failed)" if c.get("failed") else ""))
    console = Console()
    console.print(table)
    console.print(f"capacity {report['capacity_msg_per_s']} msg/s ({report['capacity_source']});"
                  f" {report['matched']} of {report['predictions']} predictions matched, "
                  f"{report['negative']} negative", highlight=False)

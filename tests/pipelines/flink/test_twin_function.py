"""TwinFunction's keyed state, without a JVM: a worker that dies and is replaced (memory
lost, keyed state and timers kept, as after a restore from a checkpoint) goes on exactly
as one that never died, whether the log since its last snapshot is empty or not."""

from __future__ import annotations

import pickle
import random

import pytest

from pipelines.flink.functions import ADVANCE, TwinFunction, replay
from tests.transforms.test_twin import readings
from transforms.twin import AssetTwin

TWIN = {"detector": {"warmup": 10}}


class Backend:
    """Flink's side: keyed state (stored as bytes, as Flink stores it) and timers."""

    def __init__(self) -> None:
        self.key: str | None = None
        self.values: dict[tuple[str, str], bytes] = {}
        self.lists: dict[tuple[str, str], list[bytes]] = {}
        self.timers: set[tuple[int, str]] = set()


class _Value:
    def __init__(self, backend: Backend, name: str) -> None:
        self.b, self.name = backend, name

    def value(self):
        blob = self.b.values.get((self.name, self.b.key))
        return None if blob is None else pickle.loads(blob)

    def update(self, v) -> None:
        self.b.values[(self.name, self.b.key)] = pickle.dumps(v)

    def clear(self) -> None:
        self.b.values.pop((self.name, self.b.key), None)


class _List(_Value):
    def get(self):
        return [pickle.loads(e) for e in self.b.lists.get((self.name, self.b.key), [])]

    def add(self, v) -> None:
        self.b.lists.setdefault((self.name, self.b.key), []).append(pickle.dumps(v))

    def clear(self) -> None:
        self.b.lists.pop((self.name, self.b.key), None)


class _Counter:
    def inc(self, n: int = 1) -> None:
        pass


class _Group:
    def add_group(self, name):
        return self

    def counter(self, name):
        return _Counter()


class Runtime:
    def __init__(self, backend: Backend) -> None:
        self.b = backend

    def get_state(self, descriptor):
        return _Value(self.b, descriptor.get_name())

    def get_list_state(self, descriptor):
        return _List(self.b, descriptor.get_name())

    def get_metrics_group(self):
        return _Group()


class Ctx:
    def __init__(self, backend: Backend) -> None:
        self.b = backend

    def get_current_key(self):
        return self.b.key

    def timer_service(self):
        return self

    def register_event_time_timer(self, ts: int) -> None:
        self.b.timers.add((int(ts), self.b.key))

    def delete_event_time_timer(self, ts: int) -> None:
        self.b.timers.discard((int(ts), self.b.key))


def _tagged(outputs) -> list:
    return [(o[0].tag_id, o[1]) if isinstance(o, tuple) else ("prediction", o)
            for o in outputs]


def _events(seed: int = 3):
    """Two pumps' readings in arrival order (shuffled a little), with the engine's
    watermark (arrival minus 30 s) between them. p2's gateway goes quiet for 5 minutes
    and then sends its backlog: the watermark closes p2's windows meanwhile (its timers),
    and the backlog is late."""
    rng = random.Random(seed)
    rows = []
    for asset, data_seed in (("p1", 1), ("p2", 2)):
        for r in readings(30, fault_from=20, seed=data_seed):
            arrival = r["ts_ms"] + rng.uniform(0, 15_000)
            if asset == "p2" and 600_000 <= r["ts_ms"] < 900_000:
                arrival = 1_100_000 + r["ts_ms"] / 1000  # the backlog, in its order
            rows.append((arrival, {**r, "asset_id": asset,
                                   "reading_id": f"{asset}:{r['ts_ms']}"}))
    rows.sort(key=lambda x: x[0])
    events, watermark = [], 0
    for i, (arrival, r) in enumerate(rows):
        events.append(("reading", r))
        if i % 11 == 10 and arrival - 30_000 > watermark:
            watermark = arrival - 30_000
            events.append(("watermark", watermark))
    events.append(("watermark", 10**13))
    return events


def _run(events, restart_at=(), snapshot_every: int = 50):
    """Outputs of TwinFunction over ``events``; a new instance (empty memory) replaces the
    old at each index in ``restart_at``. Returns outputs and, per restart, the log lengths
    the new instance found."""
    backend = Backend()
    ctx = Ctx(backend)

    def fresh():
        fn = TwinFunction(TWIN, snapshot_every=snapshot_every)
        fn.open(Runtime(backend))
        return fn

    fn, out, found = fresh(), [], []
    for i, (kind, x) in enumerate(events):
        if i in restart_at:  # what the new instance finds logged, per asset
            found.append({k: [pickle.loads(e) for e in v]
                          for (name, k), v in backend.lists.items()})
            fn = fresh()
        if kind == "reading":
            backend.key = x["asset_id"]
            out += _tagged(fn.process_element(x, ctx))
        else:
            while due := sorted(t for t in backend.timers if t[0] <= x):  # (and new ones)
                ts, key = due[0]
                backend.timers.discard((ts, key))
                backend.key = key
                out += _tagged(fn.on_timer(ts, ctx))
        assert all(len(v) <= snapshot_every for v in backend.lists.values())
    return out, found


def test_a_replaced_worker_resumes_from_snapshot_and_log_as_if_it_never_died():
    events = _events()
    reference, _ = _run(events)
    # 30 windows of p1, 25 of p2: its backlog (5 windows, 60 readings) came too late
    assert sum(tag == "prediction" for tag, _ in reference) == 55
    assert any(tag == "action" for tag, _ in reference)
    late = [r for tag, r in reference if tag == "late"]
    assert len(late) == 60 and {r["asset_id"] for r in late} == {"p2"}
    restarts = tuple(range(40, len(events), 41))
    resumed, found = _run(events, restart_at=restarts)
    assert resumed == reference
    # the restarts found logs to replay, of many lengths (not only right after
    # snapshots), some with windows the watermark closed
    logs = [log for f in found for log in f.values()]
    assert len({len(log) for log in logs}) > 5 and max(map(len, logs)) > 20
    assert any(ADVANCE in e for log in logs for e in log)


@pytest.mark.parametrize("snapshot_every", [0, 1, 7, 10_000])
def test_any_snapshot_interval_gives_the_same_outputs(snapshot_every):
    """(10,000: never a snapshot before the end; restarts just before the watermark moves
    then restore twins that exist only as a log, from a timer.)"""
    events = _events(seed=5)
    reference, _ = _run(events, snapshot_every=50)
    before_watermarks = [i for i, (kind, _) in enumerate(events) if kind == "watermark"]
    resumed, _ = _run(events, restart_at=(*range(10, len(events), 61), *before_watermarks),
                      snapshot_every=snapshot_every)
    assert resumed == reference


def test_replay_applies_readings_and_watermark_closes_in_order():
    rs = list(readings(6))
    live = AssetTwin("p1", "pump", **TWIN)
    for r in rs[:30]:
        live.add(r)
    snapshot = pickle.dumps(live)
    log = rs[30:50] + [{ADVANCE: rs[49]["ts_ms"] + 60_000}] + rs[50:]
    for entry in log:
        if ADVANCE in entry:
            closed = live.advance(entry[ADVANCE])
            assert closed  # the advance closed windows the readings alone would not
        else:
            live.add(entry)
    restored = replay(pickle.loads(snapshot), log)
    assert restored.flush() == live.flush()


def test_forged_event_times_are_dead_letters_and_survive_restores():
    """p1's stream gets a reading in 2100 and three a day ahead that never get confirmed
    (each followed by genuine readings): dead letters on their side output, and every
    other output exactly the stream's without them, also when workers are replaced while
    a reading is held back (the hold is replayed from the log)."""
    from pipelines.flink.functions import TWIN_DEAD_LETTERS

    events = _events(seed=7)
    reference, _ = _run(events)
    p1 = [i for i, (kind, x) in enumerate(events) if kind == "reading" and x["asset_id"] == "p1"]
    day = 86_400_000
    after = {p1[40]: [4_102_444_800_000], p1[120]: [day, day + 5_000], p1[250]: [day]}
    poisoned = []
    for i, event in enumerate(events):
        poisoned.append(event)
        for n, ts in enumerate(after.get(i, ())):
            base = event[1]
            ts = ts if ts > day * 2 else base["ts_ms"] + ts
            poisoned.append(("reading", {**base, "ts_ms": ts, "reading_id": f"p1:{i}:{n}"}))
    between = next(i for i, (kind, x) in enumerate(poisoned)
                   if kind == "reading" and x["reading_id"] == f"p1:{p1[120]}:1")
    for restarts in ((), (between, *range(7, len(poisoned), 13))):
        out, _ = _run(poisoned, restart_at=restarts, snapshot_every=5)
        dead = [r for tag, r in out if tag == TWIN_DEAD_LETTERS.tag_id]
        assert [tag for tag, _ in out if tag != TWIN_DEAD_LETTERS.tag_id] == [
            tag for tag, _ in reference]
        assert [r for tag, r in out if tag != TWIN_DEAD_LETTERS.tag_id] == [
            r for _, r in reference]
        assert [(d["reason"], d["key"]) for d in dead] == [("timestamp_jump", b"p1")] * 4
        assert dead[2]["detail"].endswith("(2 so far)")  # two in a row, still not enough


def _batched(events, batch: int, shards: int):
    """``events`` with readings cut into batches of ``batch``, each as normalization hands
    a batch over: one ``(key, pickled [(asset_id, ReadingBlock), ...])`` per twin key."""
    from pipelines.flink.functions import NormalizeFunction
    from transforms.columns import ReadingBlock

    key_of = NormalizeFunction(shards=shards).key_of
    out, pending = [], []

    def cut():
        per_asset: dict[str, list] = {}
        for r in pending:
            per_asset.setdefault(r["asset_id"], []).append(r)
        groups: dict[str, list] = {}
        for asset_id, rs in per_asset.items():
            groups.setdefault(key_of(asset_id), []).append(
                (asset_id, ReadingBlock.from_readings(rs)))
        out.extend(("batch", (k, pickle.dumps(g))) for k, g in groups.items())
        pending.clear()

    for kind, x in events:
        if kind == "reading":
            pending.append(x)
            if len(pending) == batch:
                cut()
        else:
            cut()
            out.append((kind, x))
    return out


def _run_keyed(events, restart_at=(), snapshot_every: int = 50):
    """:func:`_run` for batches ``("batch", (key, items))`` as well as readings."""
    backend = Backend()
    ctx = Ctx(backend)

    def fresh():
        fn = TwinFunction(TWIN, snapshot_every=snapshot_every)
        fn.open(Runtime(backend))
        return fn

    fn, out = fresh(), []
    for i, (kind, x) in enumerate(events):
        if i in restart_at:
            fn = fresh()
        if kind == "batch":  # Flink keys normalization's (key, value): the value goes in
            backend.key = x[0]
            out += _tagged(fn.process_element(x[1], ctx))
        else:
            while due := sorted(t for t in backend.timers if t[0] <= x):
                ts, key = due[0]
                backend.timers.discard((ts, key))
                backend.key = key
                out += _tagged(fn.on_timer(ts, ctx))
    return out


def _by_asset(outputs) -> dict:
    """Each asset's outputs in order, late readings apart (a batch reports the late
    readings it held before the windows it closed; one at a time they interleave)."""
    per: dict = {}
    for tag, r in outputs:
        per.setdefault((r["asset_id"], tag == "late"), []).append((tag, r))
    return per


@pytest.mark.parametrize("batch,shards", [(1, 0), (17, 0), (17, 3), (500, 1)])
def test_batches_keyed_by_asset_or_shard_give_each_asset_its_outputs(batch, shards):
    events = _events()
    reference, _ = _run(events)
    batched = _batched(events, batch, shards)
    out = _run_keyed(batched)
    assert len(out) == len(reference)
    assert _by_asset(out) == _by_asset(reference)
    # and a worker replaced now and then (memory lost, state kept) goes on the same
    restarts = tuple(range(3, len(batched), 7))
    assert _by_asset(_run_keyed(batched, restarts, snapshot_every=3)) == _by_asset(reference)


def test_a_snapshot_of_one_twin_from_before_shards_is_restored_as_a_shard_of_one():
    events = _events(seed=4)
    reference, _ = _run(events)
    backend = Backend()
    ctx = Ctx(backend)
    fn = TwinFunction(TWIN)
    fn.open(Runtime(backend))
    cut = len(events) // 2
    out = []
    for kind, x in events[:cut]:
        if kind == "reading":
            backend.key = x["asset_id"]
            out += _tagged(fn.process_element(x, ctx))
        else:
            while due := sorted(t for t in backend.timers if t[0] <= x):
                ts, key = due[0]
                backend.timers.discard((ts, key))
                backend.key = key
                out += _tagged(fn.on_timer(ts, ctx))
    # what a job before shards kept per asset: the twin itself, pickled, and its log
    for asset_id, shard in fn.live.items():
        backend.key = asset_id
        _Value(backend, "twin").update(pickle.dumps(shard.twins[asset_id]))
        _List(backend, "pending").clear()
    fn = TwinFunction(TWIN)
    fn.open(Runtime(backend))
    for kind, x in events[cut:]:
        if kind == "reading":
            backend.key = x["asset_id"]
            out += _tagged(fn.process_element(x, ctx))
        else:
            while due := sorted(t for t in backend.timers if t[0] <= x):
                ts, key = due[0]
                backend.timers.discard((ts, key))
                backend.key = key
                out += _tagged(fn.on_timer(ts, ctx))
    assert out == reference

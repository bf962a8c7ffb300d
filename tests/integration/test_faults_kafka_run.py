"""Fault and abuse suite: `twin run --source kafka` against the real embedded broker.

Each test reproduces one way the bounded Kafka path lost, replayed or executed something
(issue 20, and issue 19's "nothing new"), end to end: a tombstone, a broker that was reset
under stored offsets, a tampered state file, a backlog larger than memory, assets that
never come back, and a run with nothing to read.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Producer

from jobs.cli import main
from pipelines.kafka.serde import LocalSerde
from pipelines.statefile import FORMAT, read_state
from tests.pipelines.kafka.helpers import (
    START_MS,
    fleet,
    publish,
    read_topic,
    run_args,
    summary,
)

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
KEY = b"test-signing-key"
DAY_MS = 86_400_000


@pytest.fixture
def key_file(tmp_path):
    path = tmp_path / "hmac.key"
    path.write_bytes(KEY)
    return path


def state_of(out: Path) -> dict:
    return read_state(str(out / "twin-state.pkl"), KEY)


def dead_letters(bootstrap: str) -> list[dict]:
    return [LocalSerde().decode(m.value())[1] for m in read_topic(bootstrap, "twin.deadletter")]


# -- 1. a tombstone ---------------------------------------------------------------------

def test_a_tombstone_is_a_null_value_dead_letter_and_the_run_goes_on(broker, tmp_path,
                                                                      key_file):
    bs = broker.bootstrap_servers
    f = fleet(hours=0.5)
    n = publish(bs, f.messages())
    p = Producer({"bootstrap.servers": bs})
    p.produce("twin.raw.helios", value=None, key=b"pump-000", partition=1)
    assert p.flush(10) == 0
    out = tmp_path / "run"
    assert main(run_args(bs, out)) == 0
    s = summary(out)
    assert s["readings_in"] == n + 1 and s["invariant_ok"]
    # only the tombstone is added: the rest of its poll batch was read as usual
    assert s["dead_letter_reasons"] == {**f.ground_truth()["expected_dead_letters"],
                                        "null_value": 1}
    nulls = [d for d in dead_letters(bs) if d["reason"] == "null_value"]
    assert len(nulls) == 1
    (d,) = nulls
    assert d["key"] == b"pump-000" and d["payload"] == b""
    assert re.fullmatch(r"twin\.raw\.helios/1@\d+", d["source"])  # points at the tombstone
    assert "tombstone" in d["detail"]
    # committed: the tombstone is not read again
    assert sum(state_of(out)["offsets"].values()) == n + 1
    assert main(run_args(bs, out)) == 0


# -- 2. offsets that do not fit the broker ------------------------------------------------

def _reset_broker(make_broker, first):
    """The in-memory broker restarted on the same port: every topic empty again."""
    port = first.port
    first.stop()
    return make_broker(port)


def test_offsets_past_the_end_of_a_reset_broker_stop_the_run_until_the_user_chooses(
        make_broker, tmp_path, key_file, capfd):
    first = make_broker()
    bs = first.bootstrap_servers
    n_old = publish(bs, fleet(hours=1.0).messages())
    out = tmp_path / "run"
    assert main(run_args(bs, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    stored = state_of(out)["offsets"]

    _reset_broker(make_broker, first)
    new = fleet(hours=0.25, start_ms=START_MS + DAY_MS)
    n_new = publish(bs, new.messages())
    assert n_new < n_old
    capfd.readouterr()
    assert main(run_args(bs, out)) == 2
    err = capfd.readouterr().err
    assert "--on-offset-reset" in err and "earliest" in err and "latest" in err
    assert "Traceback" not in err
    for tp, offset in stored.items():  # every partition, its stored and broker offsets
        assert re.search(rf"{re.escape(tp)}: stored {offset}, broker has \d+\.\.\d+", err), err
    # nothing read, nothing changed
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

    assert main(run_args(bs, out, "--on-offset-reset", "earliest")) == 0
    s = summary(out)
    assert s["readings_in"] == n_new and s["messages_planned"] == n_new
    assert sorted(r["partition"] for r in s["offset_resets"]) == sorted(stored)
    assert sum(state_of(out)["offsets"].values()) == n_new
    assert main(run_args(bs, out)) == 0  # the new offsets fit: nothing new, no choice needed


def test_a_recreated_topic_with_more_data_than_before_is_not_read_from_the_middle(
        make_broker, tmp_path, key_file, capfd):
    """The broker's watermarks alone cannot tell: the topic's id can."""
    first = make_broker()
    bs = first.bootstrap_servers
    publish(bs, fleet(hours=0.5).messages())
    out = tmp_path / "run"
    assert main(run_args(bs, out)) == 0
    _reset_broker(make_broker, first)
    n_new = publish(bs, fleet(hours=1.5, start_ms=START_MS + DAY_MS).messages())
    capfd.readouterr()
    assert main(run_args(bs, out)) == 2
    err = capfd.readouterr().err
    assert "recreated" in err and "--on-offset-reset" in err
    assert main(run_args(bs, out, "--on-offset-reset", "earliest")) == 0
    assert summary(out)["readings_in"] == n_new


def test_latest_skips_to_the_end_loudly_and_never_plans_backwards(make_broker, tmp_path,
                                                                   key_file, capfd):
    first = make_broker()
    bs = first.bootstrap_servers
    publish(bs, fleet(hours=1.0).messages())
    out = tmp_path / "run"
    assert main(run_args(bs, out)) == 0
    before = (out / "summary.json").read_bytes()
    _reset_broker(make_broker, first)
    n_new = publish(bs, fleet(hours=0.25, start_ms=START_MS + DAY_MS).messages())
    capfd.readouterr()
    assert main(run_args(bs, out, "--on-offset-reset", "latest")) == 0
    text = capfd.readouterr().out
    assert "latest" in text and "skipped" in text
    # nothing was read, the outputs stay; the offsets now point at the broker's ends
    assert (out / "summary.json").read_bytes() == before
    assert sum(state_of(out)["offsets"].values()) == n_new


# -- 4. a tampered state file -----------------------------------------------------------

class _Payload:
    """A pickle that runs a command when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_tampered_state_file_is_refused_before_anything_is_unpickled(broker, tmp_path,
                                                                      key_file, capfd):
    bs = broker.bootstrap_servers
    publish(bs, fleet(hours=0.25).messages())
    out = tmp_path / "run"
    assert main(run_args(bs, out)) == 0
    path = out / "twin-state.pkl"
    assert path.stat().st_mode & 0o777 == 0o600
    good = path.read_bytes()
    marker = tmp_path / "pwned"
    evil = pickle.dumps(_Payload(marker))

    path.write_bytes(evil)  # an unsigned pickle, like the files older versions wrote
    capfd.readouterr()
    assert main(run_args(bs, out)) == 2
    err = capfd.readouterr().err
    assert not marker.exists()
    assert "not signed" in err and "--trust-unsigned-state" in err and "Traceback" not in err

    header = good.index(b"\n") + 1 + 32  # format line, then the HMAC-SHA256 tag
    path.write_bytes(good[:header] + evil)  # the signed envelope around another pickle
    assert main(run_args(bs, out)) == 2
    err = capfd.readouterr().err
    assert not marker.exists()
    assert "tampered" in err and "Traceback" not in err

    path.write_bytes(good)  # the right file with another key
    (tmp_path / "other.key").write_bytes(b"another-key")
    args = run_args(bs, out)
    args[args.index("--hmac-key-file") + 1] = str(tmp_path / "other.key")
    assert main(args) == 2
    assert "another key" in capfd.readouterr().err

    assert main(run_args(bs, out)) == 0  # the untouched file with its key still works

    # a file an older version wrote: loaded only when the user vouches for it, then signed
    state = state_of(out)
    path.write_bytes(pickle.dumps({"version": 1, "offsets": state["offsets"],
                                   "twins": state["twins"], "runs": 1, "updated_ms": 0}))
    assert main(run_args(bs, out)) == 2
    assert main(run_args(bs, out, "--trust-unsigned-state")) == 0
    assert path.read_bytes().startswith(FORMAT)
    assert state_of(out)["twins"].keys() == state["twins"].keys()


# -- 6. a backlog read in slices ----------------------------------------------------------

def test_a_backlog_is_read_in_slices_each_committed_and_the_outputs_are_one_runs(
        broker, tmp_path, key_file):
    bs = broker.bootstrap_servers
    n = publish(bs, fleet(hours=1.0).messages())
    whole = tmp_path / "whole"
    assert main(run_args(bs, whole, "--group-id", "whole")) == 0
    assert summary(whole)["slices"] == 1
    sliced = tmp_path / "sliced"
    assert main(run_args(bs, sliced, "--group-id", "sliced",
                         "--max-messages-per-slice", "800")) == 0
    s = summary(sliced)
    assert s["slices"] == -(-n // 800) and s["readings_in"] == n and s["invariant_ok"]
    assert state_of(sliced)["slices"] == s["slices"]  # each slice committed on its own
    import fastavro

    def preds(out):
        with open(out / "predictions.avro", "rb") as fh:
            return {p["prediction_id"]: p["anomaly_score"] for p in fastavro.reader(fh)}

    a, b = preds(whole), preds(sliced)
    assert a.keys() == b.keys() and len(a) == s["predictions"] > 0
    assert all(b[k] == pytest.approx(v, abs=1e-9) for k, v in a.items())
    assert not list(sliced.glob(".slice*")) and not list(sliced.glob(".checkpoint*"))


def test_slices_of_large_messages_are_cut_by_their_weight(broker, tmp_path, key_file):
    """Memory follows the bytes a slice holds, not its count of messages."""
    bs = broker.bootstrap_servers
    n = publish(bs, fleet(hours=0.25, malformed_rate=0.0).messages())
    p = Producer({"bootstrap.servers": bs, "message.max.bytes": 4_000_000})
    for i in range(3):  # 1.5 MB each: oversize garbage, dead letters with all their bytes
        p.produce("twin.raw.orca", value=bytes([i]) * 1_500_000, key=b"pump-002", partition=0)
    assert p.flush(30) == 0
    out = tmp_path / "run"
    assert main(run_args(bs, out, "--max-bytes-per-slice", "2MiB")) == 0
    s = summary(out)
    assert s["readings_in"] == n + 3 and s["invariant_ok"]
    assert s["dead_letter_reasons"] == {"oversize_payload": 3}
    assert s["slices"] == 3  # one of the large messages per slice (1,000 small ones fit)
    import fastavro

    with open(out / "dead_letters.avro", "rb") as f:
        assert sorted(len(d["payload"]) for d in fastavro.reader(f)) == [1_500_000] * 3


def test_max_messages_caps_one_run_and_the_next_run_continues(broker, tmp_path, key_file):
    bs = broker.bootstrap_servers
    n = publish(bs, fleet(hours=1.0).messages())
    out = tmp_path / "run"
    assert main(run_args(bs, out, "--max-messages", "1000")) == 0
    s = summary(out)
    assert s["readings_in"] == 1000 and s["backlog_left"] == n - 1000
    assert main(run_args(bs, out)) == 0
    s = summary(out)
    assert s["readings_in"] == n - 1000 and s["backlog_left"] == 0


def _peak_rss_mb(cmd: list[str], tmp_path: Path) -> float:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, proc.stderr.read().decode()[-3000:]
    return usage.ru_maxrss / 1024


def test_peak_memory_follows_the_slice_not_the_backlog(make_broker, tmp_path, key_file):
    """CI's scale of `twin bench kafka-backlog` (0.2 to 2 million messages): a backlog six
    times larger, read in slices of the same size, peaks at the same memory."""
    peaks = {}
    for hours in (0.5, 3.0):
        b = make_broker()
        # (no malformed messages: a few oversize ones, 1 MB each, would weigh more on
        # whichever slice holds them than the backlog's size does)
        n = publish(b.bootstrap_servers,
                    fleet(hours=hours, assets=12, malformed_rate=0.0).messages())
        out = tmp_path / f"h{hours}"
        peaks[n] = _peak_rss_mb([sys.executable, "-m", "jobs.cli", *run_args(
            b.bootstrap_servers, out, "--max-messages-per-slice", "4000")], tmp_path)
        assert summary(out)["readings_in"] == n
        b.stop()
    (small, p_small), (large, p_large) = sorted(peaks.items())
    assert large >= 5 * small
    assert p_large <= 1.1 * p_small, peaks


# -- 9. assets that never come back -------------------------------------------------------

def test_assets_not_seen_for_the_ttl_are_evicted_with_their_last_state_on_the_topic(
        broker, tmp_path, key_file):
    bs = broker.bootstrap_servers
    first = fleet(hours=1.0, assets=4, malformed_rate=0.0)
    publish(bs, first.messages())
    out = tmp_path / "run"
    assert main(run_args(bs, out, "--state-ttl", "7d")) == 0
    assert set(state_of(out)["twins"]) == {a.asset_id for a in first.assets}
    gone, staying = {"pump-000", "motor-001"}, {"pump-002", "motor-003"}
    states_before = [LocalSerde().decode(m.value())[1] for m in read_topic(bs, "twin.state")]

    later = fleet(hours=0.5, assets=4, start_ms=START_MS + 8 * DAY_MS, malformed_rate=0.0)
    publish(bs, (m for m in later.messages() if m.key.decode() in staying))
    assert main(run_args(bs, out, "--state-ttl", "7d")) == 0
    s = summary(out)
    assert s["evicted_assets"] == 2
    state = state_of(out)
    assert set(state["twins"]) == staying == set(state["seen"])
    # their open windows were closed on the way out: the last state of each is on the
    # topic, for the window of its last readings
    states = [LocalSerde().decode(m.value())[1] for m in read_topic(bs, "twin.state")]
    last_reading = {a: max(m.event_ms for m in first.messages() if m.key.decode() == a)
                    for a in gone}
    def ms(r):
        return int(r["ts_ms"].timestamp() * 1000)

    for asset in gone:
        before = [ms(r) for r in states_before if r["asset_id"] == asset]
        after = [ms(r) for r in states if r["asset_id"] == asset]
        assert max(after) > max(before)
        assert max(after) >= last_reading[asset]
    # and 0 means never
    out2 = tmp_path / "never"
    assert main(run_args(bs, out2, "--group-id", "never", "--state-ttl", "0")) == 0
    assert set(state_of(out2)["twins"]) == gone | staying


# -- issue 19: nothing new ----------------------------------------------------------------

def test_a_run_with_nothing_new_says_so_and_leaves_the_last_runs_outputs(broker, tmp_path,
                                                                          key_file, capfd):
    bs = broker.bootstrap_servers
    publish(bs, fleet(hours=0.25).messages())
    out = tmp_path / "run"
    assert main(run_args(bs, out)) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capfd.readouterr()
    assert main(run_args(bs, out)) == 0
    text = capfd.readouterr().out
    assert "nothing new on topics twin.raw.helios" in text and "since offsets" in text
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before

"""The state file: signed before anything in it is unpickled, written atomically, 0600."""

from __future__ import annotations

import os
import pickle
import stat

import pytest

from pipelines.statefile import (
    FORMAT,
    VERSION,
    StateFileError,
    empty_state,
    load_twins,
    read_state,
    write_state,
)
from transforms.twin import AssetTwin

KEY = b"k" * 32


class Payload:
    """Runs a command when unpickled."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def a_state() -> dict:
    twin = AssetTwin("p1", "pump")
    twin.add({"reading_id": "v:p1:5000", "asset_id": "p1", "asset_type": "pump",
              "vendor": "v", "ts_ms": 5_000, "values": {"flow": 0.05}, "bad_quality": []})
    return {**empty_state(), "offsets": {"t/0": 12}, "topic_ids": {"t": "id"},
            "twins": {"p1": pickle.dumps(twin)}, "seen": {"p1": 5_000}}


def test_round_trip_atomic_and_owner_only(tmp_path):
    path = str(tmp_path / "s.pkl")
    assert read_state(path, KEY) == {**empty_state(), "sha256": None}  # none yet
    written = write_state(path, a_state(), KEY)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["s.pkl"]  # no temporary file left
    back = read_state(path, KEY)
    assert back["offsets"] == {"t/0": 12} and back["seen"] == {"p1": 5_000}
    assert back["sha256"] == written["sha256"] and back["version"] == VERSION
    assert pickle.loads(load_twins(path, back["sha256"])["p1"]).asset_id == "p1"
    with open(path, "rb") as f:
        assert f.read().startswith(FORMAT)


def test_tampering_anywhere_is_refused_before_unpickling(tmp_path):
    path = tmp_path / "s.pkl"
    write_state(str(path), a_state(), KEY)
    good = path.read_bytes()
    marker = tmp_path / "ran"
    body_at = len(FORMAT) + 32
    for bad in (good[:body_at] + pickle.dumps(Payload(marker)),  # another pickle
                good[:-1] + bytes([good[-1] ^ 1]),  # one bit
                good[:len(FORMAT)] + bytes(32) + good[body_at:]):  # another tag
        path.write_bytes(bad)
        with pytest.raises(StateFileError, match="tampered"):
            read_state(str(path), KEY)
        assert not marker.exists()
    path.write_bytes(good)
    with pytest.raises(StateFileError, match="another key"):
        read_state(str(path), b"another key")


def test_an_old_unsigned_file_is_refused_unless_the_user_vouches_for_it(tmp_path):
    path = tmp_path / "s.pkl"
    marker = tmp_path / "ran"
    path.write_bytes(pickle.dumps(Payload(marker)))
    with pytest.raises(StateFileError, match="not signed.*--trust-unsigned-state"):
        read_state(str(path), KEY)
    assert not marker.exists()
    old = a_state()
    path.write_bytes(pickle.dumps({"version": 1, "offsets": old["offsets"],
                                   "twins": old["twins"], "runs": 3, "updated_ms": 1}))
    with pytest.raises(StateFileError, match="not signed"):
        read_state(str(path), KEY)
    trusted = read_state(str(path), KEY, trust_unsigned=True)
    assert trusted["offsets"] == {"t/0": 12} and trusted["runs"] == 3
    assert trusted["seen"] == {"p1": 5_000}  # from the twins themselves
    assert trusted["unsigned"] is True  # the caller signs it
    write_state(str(path), trusted, KEY)
    assert read_state(str(path), KEY)["twins"].keys() == {"p1"}  # now signed


def test_not_a_state_file_and_other_formats_are_named(tmp_path):
    path = tmp_path / "s.pkl"
    path.write_bytes(b"hello")
    with pytest.raises(StateFileError, match="not a twinstream state file"):
        read_state(str(path), KEY)
    path.write_bytes(b"twinstream-state/9\n" + bytes(40))
    with pytest.raises(StateFileError, match="format 'twinstream-state/9'"):
        read_state(str(path), KEY)


def test_workers_load_only_the_file_the_job_verified(tmp_path):
    path = str(tmp_path / "s.pkl")
    first = write_state(path, a_state(), KEY)
    write_state(path, {**a_state(), "offsets": {"t/0": 13}}, KEY)  # replaced since
    with pytest.raises(StateFileError, match="changed after the job verified it"):
        load_twins(path, first["sha256"])

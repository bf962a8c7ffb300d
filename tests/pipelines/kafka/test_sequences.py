"""The gateway's memory of the last command sequence applied per asset: persisted at once,
private, and never silently forgotten."""

from __future__ import annotations

import json
import os
import stat

import pytest

from pipelines.kafka.sequences import FORMAT, LastApplied, SequenceFileError


def test_recorded_sequences_survive_a_restart_in_a_private_file(tmp_path):
    path = tmp_path / "commands" / "plant.json"
    table = LastApplied(path)
    assert table.get("pump-1") is None and not path.exists()
    table.record("pump-1", 60_000)
    table.record("motor-2", 120_000)
    table.record("pump-1", 180_000)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    assert json.loads(path.read_text()) == {
        "format": FORMAT, "assets": {"motor-2": 120_000, "pump-1": 180_000}}
    again = LastApplied(path)  # a restarted gateway
    assert (again.get("pump-1"), again.get("motor-2"), len(again)) == (180_000, 120_000, 2)


@pytest.mark.parametrize("content", [b"", b"{not json", b'{"format": "other", "assets": {}}',
                                     b'{"format": "%s", "assets": {"p": "1"}}' % FORMAT.encode(),
                                     b"[]"])
def test_an_unreadable_file_is_an_error_not_an_empty_table(tmp_path, content):
    """Starting empty would reopen every replay: the gateway refuses to start instead."""
    path = tmp_path / "plant.json"
    path.write_bytes(content)
    with pytest.raises(SequenceFileError, match=str(path)):
        LastApplied(path)


def test_a_failed_write_is_loud(tmp_path, monkeypatch):
    import pipelines.kafka.sequences as seqmod

    def full(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(seqmod, "write_private", full)
    with pytest.raises(SequenceFileError, match="cannot write"):
        LastApplied(tmp_path / "p.json").record("pump-1", 1)


def test_in_memory_without_a_path():
    table = LastApplied()
    table.record("pump-1", 5)
    assert table.get("pump-1") == 5

"""Files holding secrets or security state: 0600 from their first byte, in 0700 folders,
replaced atomically, created once however many processes race."""

from __future__ import annotations

import os
import stat

import pytest

from pipelines import private_files
from pipelines.private_files import create_private_once, private_dir, write_private


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_write_private_is_0600_in_a_0700_folder_even_under_a_lax_umask(tmp_path):
    old = os.umask(0o000)
    try:
        path = write_private(tmp_path / "a" / "b" / "secret.json", b"s3cret")
    finally:
        os.umask(old)
    assert path.read_bytes() == b"s3cret"
    assert mode(path) == 0o600 and mode(path.parent) == 0o700
    assert [p.name for p in path.parent.iterdir()] == ["secret.json"]  # no temp left


def test_write_private_never_has_readable_content_and_replaces_atomically(tmp_path,
                                                                         monkeypatch):
    """The content is complete and 0600 before the name points at it: at the moment of the
    rename, the temporary file is already private and whole; the old content stays until
    then."""
    path = tmp_path / "state.json"
    write_private(path, b"old")
    seen = []
    real_replace = os.replace

    def spy(src, dst):
        seen.append((mode(src), open(src, "rb").read(), path.read_bytes()))
        return real_replace(src, dst)

    monkeypatch.setattr(private_files.os, "replace", spy)
    write_private(path, b"new content")
    assert seen == [(0o600, b"new content", b"old")]
    assert path.read_bytes() == b"new content" and mode(path) == 0o600


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "state.json"
    write_private(path, b"old")

    def broken(*_):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(private_files.os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        write_private(path, b"new")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_private_dir_tightens_a_folder_of_ours(tmp_path):
    folder = tmp_path / "jobs"
    folder.mkdir(mode=0o755)
    folder.chmod(0o755)
    assert private_dir(folder) == folder and mode(folder) == 0o700


def test_create_private_once_keeps_the_first_and_publishes_only_whole_files(tmp_path,
                                                                           monkeypatch):
    path = tmp_path / "key"
    linked = []
    real_link = os.link

    def spy(src, dst):
        linked.append((mode(src), open(src, "rb").read()))
        return real_link(src, dst)

    monkeypatch.setattr(private_files.os, "link", spy)
    assert create_private_once(path, b"first") is True
    assert create_private_once(path, b"second") is False
    assert path.read_bytes() == b"first" and mode(path) == 0o600
    assert linked == [(0o600, b"first"), (0o600, b"second")]
    assert [p.name for p in tmp_path.iterdir()] == ["key"]  # the loser's temp is gone

"""Which key signs commands, and how the per-user key comes to exist."""

from __future__ import annotations

import os
import stat

import pytest

from pipelines.kafka.secrets import command_signer, hmac_key, user_key_path, validity_ms
from transforms.signing import DEFAULT_VALIDITY_MS


def test_key_sources_in_order(tmp_path, monkeypatch):
    key_file = tmp_path / "k"
    key_file.write_bytes(b"from-file\n")
    monkeypatch.setenv("TWIN_HMAC_KEY", "from-env")
    settings = {"twin.hmac.key": "from-setting"}
    assert hmac_key(key_file, settings) == b"from-file"
    assert hmac_key(None, settings) == b"from-setting"
    assert hmac_key(None, {}) == b"from-env"
    monkeypatch.delenv("TWIN_HMAC_KEY")
    assert hmac_key(None, {}, create=False) is None
    created = hmac_key()
    assert len(created) == 64 and hmac_key() == created == user_key_path().read_bytes()
    assert stat.S_IMODE(os.stat(user_key_path()).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(user_key_path().parent).st_mode) == 0o700


def test_an_empty_per_user_key_is_an_error_not_an_empty_key():
    path = user_key_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="is empty"):
        hmac_key()


def test_command_signer_takes_the_validity_setting():
    assert validity_ms({}) == DEFAULT_VALIDITY_MS == 300_000
    signer = command_signer(None, {"twin.hmac.key": "k", "twin.command.validity.ms": "60000"})
    assert (signer.secret, signer.validity_ms) == (b"k", 60_000)
    for bad in ("0", "-5", "1m", "1.5"):
        with pytest.raises(ValueError, match="twin.command.validity.ms"):
            validity_ms({"twin.command.validity.ms": bad})

"""Shared fixtures: real servers on free loopback ports, started and stopped by the tests."""

from __future__ import annotations

import pytest

from pipelines.kafka.broker import EmbeddedBroker


@pytest.fixture(autouse=True)
def _private_state_dir(tmp_path_factory, monkeypatch):
    """Every test gets its own state folder (signing key, broker record): nothing is read
    from or written to the user's ``~/.local/state``."""
    monkeypatch.setenv("TWIN_STATE_DIR", str(tmp_path_factory.mktemp("state")))
    monkeypatch.delenv("TWIN_HMAC_KEY", raising=False)
    monkeypatch.delenv("TWIN_BOOTSTRAP_SERVERS", raising=False)


@pytest.fixture
def broker(tmp_path):
    """A fresh in-memory Kafka-compatible broker (Tansu) for one test."""
    b = EmbeddedBroker(log_path=tmp_path / "broker.log")
    b.start()
    yield b
    b.stop()


@pytest.fixture
def make_broker(tmp_path):
    """Factory for tests that need several brokers or to kill and restart one."""
    started: list[EmbeddedBroker] = []

    def make(port: int | None = None) -> EmbeddedBroker:
        b = EmbeddedBroker(port, log_path=tmp_path / f"broker-{len(started)}.log")
        started.append(b.start())
        return b

    yield make
    for b in started:
        b.stop()


@pytest.fixture(autouse=True)
def _fresh_plant_registries():
    """A test that declares a plant (a model's asset types, a format's adapter) leaves the
    process as it found it: one process serves one plant, a test run many."""
    import transforms.normalize as normalize
    from transforms import catalog, units
    from transforms.normalize import generic

    dicts = [catalog.ASSET_TYPES, catalog.RANGES, catalog.SI_UNIT, catalog.ROLES,
             catalog.SETPOINTS, units.SPELLINGS, generic._BY_TOPIC, normalize.ADAPTERS,
             normalize._BY_SCHEMA, normalize._PLANS]
    saved = [dict(d) for d in dicts]
    si_units, models = set(catalog.SI_UNITS), list(catalog._MODELS)
    yield
    for d, s in zip(dicts, saved, strict=True):
        d.clear()
        d.update(s)
    catalog.SI_UNITS.clear()
    catalog.SI_UNITS.update(si_units)
    catalog._MODELS[:] = models

"""Fixtures of the Kafka tests."""

from __future__ import annotations

import pytest

from tests.pipelines.kafka.registry_server import RegistryServer


@pytest.fixture
def registry():
    """A Confluent-protocol schema registry on a free loopback port (ids from 1)."""
    with RegistryServer(first_id=1) as server:
        yield server

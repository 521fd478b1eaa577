"""Fixtures for the whole suite: one embedded broker per session, a fresh topic prefix per test.

Set SWB_TEST_BOOTSTRAP_SERVERS to run the kafka tests against another broker instead.
Tests that use `kafka_bootstrap` are marked `kafka`, so `-m "not kafka"` runs without a broker.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from broker.runtime.embedded import EmbeddedBroker


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "kafka_bootstrap" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.kafka)


@pytest_asyncio.fixture(scope="session")
async def kafka_bootstrap() -> AsyncIterator[str]:
    """Bootstrap servers of the session's Kafka-protocol broker."""
    external = os.environ.get("SWB_TEST_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    async with EmbeddedBroker() as broker:
        yield broker.bootstrap_servers


@pytest.fixture
def topic_prefix() -> str:
    """A unique prefix, so tests sharing the session broker never see each other's topics."""
    return f"t{secrets.token_hex(4)}"

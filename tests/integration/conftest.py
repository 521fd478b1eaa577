"""Fixtures for the integration tests on the session's embedded broker: an App on a fresh topic
prefix, and `swb` subprocesses that are always stopped at the end of the test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import pytest_asyncio
from helpers import SwbProcess, kafka_settings

from broker.bootstrap import App, open_app


@pytest_asyncio.fixture
async def app(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[App]:
    """Connected to the session broker, with this test's topics (2 partitions) created."""
    async with open_app(kafka_settings(kafka_bootstrap, topic_prefix)) as opened:
        yield opened


SpawnSwb = Callable[..., SwbProcess]


@pytest_asyncio.fixture
async def swb() -> AsyncIterator[SpawnSwb]:
    """Builds `swb` subprocesses (start them with `await p.start()`); any still running at the
    end of the test is killed."""
    spawned: list[SwbProcess] = []

    def spawn(args: Sequence[str], env: Mapping[str, str], name: str = "swb") -> SwbProcess:
        process = SwbProcess(args=list(args), env=dict(env), name=name)
        spawned.append(process)
        return process

    yield spawn
    for process in spawned:
        if process.process is not None and process.returncode is None:
            await process.kill()

"""Fixtures for the gateway tests: stacks started through `open_app`, stopped after the test."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import httpx
import pytest
import pytest_asyncio
from gateway_stack import CLEARING, Service, Stack, gateway_settings

from broker.bootstrap import open_app, run_until_stopped
from broker.settings import Settings


@pytest_asyncio.fixture
async def running() -> AsyncIterator[Callable[..., Coroutine[Any, Any, Stack]]]:
    """Starts stacks on demand and stops them all at the end of the test."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None], Any]] = []

    async def start(
        settings: Settings, *, flow: bool = True, shutdown_timeout_s: float = 10
    ) -> Stack:
        context = open_app(settings)
        app = await context.__aenter__()
        gateway = app.gateway()
        services: list[Service] = [gateway.run]
        if flow:
            services += [app.router().run, app.aggregator().run]
            services += [agency.run for agency in app.simulated_agencies(CLEARING)]
        stopping = asyncio.Event()
        task = asyncio.create_task(
            run_until_stopped(services, stopping, shutdown_timeout_s=shutdown_timeout_s)
        )
        stops.append((stopping, task, context))
        ready = asyncio.create_task(gateway.wait_ready(60))
        await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await task  # raises what stopped it
        await ready
        return Stack(app, gateway, gateway.url)

    yield start
    for stopping, task, context in reversed(stops):
        stopping.set()
        try:
            await task
        finally:
            await context.__aexit__(None, None, None)


@pytest_asyncio.fixture
async def stack(
    kafka_bootstrap: str, topic_prefix: str, running: Callable[..., Coroutine[Any, Any, Stack]]
) -> Stack:
    return await running(gateway_settings(kafka_bootstrap, topic_prefix))


@pytest.fixture
def problem() -> Callable[[httpx.Response, int], dict[str, Any]]:
    def check(response: httpx.Response, status: int) -> dict[str, Any]:
        assert response.status_code == status, response.text
        assert response.headers["content-type"].startswith("application/problem+json")
        data: dict[str, Any] = response.json()
        assert data["status"] == status and data["title"] and data["detail"]
        return data

    return check

"""The REST bridge on the embedded broker, with the router and the aggregator in process and
the agency's system a real HTTP server on loopback: while its endpoint fails, the request
waits (retried, not committed) and the decision shows the agency PENDING, then OVERDUE past its
SLA; once the endpoint is back, its answer makes the decision."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest_asyncio
from agency_flow import (
    DecisionWatch,
    MovableClock,
    clears,
    kafka_settings,
    running,
    sample_submission,
    status_of,
    submit,
)
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from broker.bootstrap import open_app
from broker.settings import BridgeSettings
from connectors.rest.callback import CallbackServer


class FoodAgencySystem:
    """The food agency's own HTTP system: 503 while `down`, then it clears with a condition."""

    def __init__(self) -> None:
        self.down = True
        self.calls: list[dict[str, Any]] = []
        self.retried = asyncio.Event()  # set by the second call
        self.app = FastAPI(openapi_url=None)
        self.app.post("/swb/requests")(self.receive)

    async def receive(self, request: Request) -> Response:
        self.calls.append({"body": await request.json(), "auth": request.headers.get("x-api-key")})
        if len(self.calls) >= 2:
            self.retried.set()
        if self.down:
            return JSONResponse({"detail": "maintenance"}, status_code=503)
        return JSONResponse(
            {"status": "CLEARED_WITH_CONDITIONS", "conditions": ["Sample at the store"]}
        )


@pytest_asyncio.fixture
async def food_system() -> AsyncIterator[tuple[FoodAgencySystem, str]]:
    system = FoodAgencySystem()
    server = CallbackServer(system.app, "127.0.0.1", 0)
    await server.start()
    async with running(server.serve):
        yield system, f"http://127.0.0.1:{server.port}/swb/requests"


async def test_failing_endpoint_shows_pending_then_overdue_then_its_answer(
    kafka_bootstrap: str, topic_prefix: str, food_system: tuple[FoodAgencySystem, str]
) -> None:
    system, url = food_system
    bridge = BridgeSettings(
        url=url,
        auth_header="X-Api-Key",
        auth_value="food-key",
        timeout_s=2,
        retry_initial_s=0.05,
        retry_max_s=0.2,
        breaker_failures=3,
        breaker_reset_s=0.2,
    )
    clock = MovableClock()
    settings = kafka_settings(kafka_bootstrap, topic_prefix, bridge=bridge)
    async with open_app(settings, clock=clock) as app:
        customs = app.connector("customs", clears("customs"))
        food = app.rest_bridge("food")
        services = (app.router().run, app.aggregator().run, customs.run, food.run)
        async with DecisionWatch(app) as watch, running(*services):
            submission = sample_submission("13-cakes-malaysia-singapore", clock())
            await submit(app, submission)
            sid = submission.submission_id

            pending = await watch.until(
                sid, lambda d: status_of(d, "customs") == "CLEARED", "with customs cleared"
            )
            assert status_of(pending, "food") == "PENDING"
            assert pending.outcome.value == "PENDING" and not pending.final

            clock.advance(timedelta(hours=5))  # past the food agency's 4-hour SLA
            overdue = await watch.until(
                sid, lambda d: status_of(d, "food") == "OVERDUE", "with food overdue"
            )
            assert overdue.outcome.value == "PENDING" and not overdue.final
            # The bridge retried meanwhile (the overdue decision may come before the retry).
            await asyncio.wait_for(system.retried.wait(), timeout=10)

            system.down = False
            final = await watch.until(sid, lambda d: d.final, "final")
    assert final.outcome.value == "RELEASED_WITH_CONDITIONS"
    assert status_of(final, "food") == "CLEARED_WITH_CONDITIONS"
    food_line = next(line for line in final.agencies if line.agency == "food")
    assert food_line.conditions == ("Sample at the store",)
    assert {call["auth"] for call in system.calls} == {"food-key"}
    assert {call["body"]["submission_id"] for call in system.calls} == {sid}

"""Webhooks: signed, retried with backoff after a failing receiver, delivered once per event
id, and a receiver that keeps failing does not hold up another."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from dataclasses import dataclass, field

import pytest
import uvicorn
from gateway_stack import Stack, beef, body
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from broker.core.messages import Decision
from broker.gateway.webhooks import verify

pytestmark = pytest.mark.kafka


@dataclass
class Receiver:
    """Answers 500 to its first `failures` requests (or always), then 204."""

    failures: int
    attempts: list[tuple[str, int]] = field(default_factory=list)  # (event id, status)
    bodies: dict[str, bytes] = field(default_factory=dict)
    signatures: dict[str, str] = field(default_factory=dict)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def endpoint(self, request: Request) -> Response:
        event_id = request.headers["swb-event-id"]
        status = 500 if len(self.attempts) < self.failures else 204
        self.attempts.append((event_id, status))
        if status == 204:
            self.bodies[event_id] = await request.body()
            self.signatures[event_id] = request.headers["swb-signature"]
        self.changed.set()
        return Response(status_code=status)

    def delivered(self) -> Counter[str]:
        return Counter(event for event, status in self.attempts if status == 204)


async def serve(receiver: Receiver, stopping: asyncio.Event) -> tuple[str, asyncio.Task[None]]:
    app = Starlette(routes=[Route("/hook", receiver.endpoint, methods=["POST"])])
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_config=None, lifespan="off")
    )

    async def run() -> None:
        serving = asyncio.create_task(server.serve())
        await stopping.wait()
        server.should_exit = True
        await serving

    task = asyncio.create_task(run())
    async with asyncio.timeout(10):
        while not server.started:  # noqa: ASYNC110 - uvicorn has no event for it
            await asyncio.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    return f"http://127.0.0.1:{port}/hook", task


async def decisions_on_topic(stack: Stack) -> list[Decision]:
    app = stack.app
    found = []
    for partition in range(await app.transport.partitions_for(app.topics.decisions)):
        for record in await app.transport.read_partition(app.topics.decisions, partition):
            found.append(app.codec.decode(record.value or b"", Decision))
    return found


async def test_webhook_retried_after_failures_and_delivered_once_per_event(stack: Stack) -> None:
    flaky, dead = Receiver(failures=3), Receiver(failures=10**9)
    stopping = asyncio.Event()
    (flaky_url, flaky_task), (dead_url, dead_task) = [
        await serve(r, stopping) for r in (flaky, dead)
    ]
    try:
        async with stack.client() as client:
            registered = {}
            for url in (dead_url, flaky_url):
                answer = await client.post("/v1/webhooks", json={"url": url})
                assert answer.status_code == 201, answer.text
                registered[url] = answer.json()
            listed = (await client.get("/v1/webhooks")).json()
            assert {h["url"] for h in listed} == {flaky_url, dead_url}
            assert all("secret" not in h for h in listed)

            sid = (await client.post("/v1/submissions", content=body(beef("BEEF-HOOK-1")))).json()[
                "submission_id"
            ]
            final = (await stack.decision(client, sid))["decision"]
            async with asyncio.timeout(30):
                while final["decision_id"] not in flaky.delivered():
                    flaky.changed.clear()
                    await flaky.changed.wait()
    finally:
        stopping.set()
        await asyncio.gather(flaky_task, dead_task)

    issued = {d.decision_id for d in await decisions_on_topic(stack) if d.submission_id == sid}
    delivered = flaky.delivered()
    assert set(delivered) == issued, "every decision change is delivered"
    assert all(count == 1 for count in delivered.values()), "once per event id"
    first_event = flaky.attempts[0][0]
    assert [status for event, status in flaky.attempts if event == first_event] == [
        500,
        500,
        500,
        204,
    ], "retried after the failures, in order"
    secret = registered[flaky_url]["secret"]
    for event_id, payload in flaky.bodies.items():
        assert verify(secret, payload, flaky.signatures[event_id], now=time.time())
        assert not verify("whsec_wrong", payload, flaky.signatures[event_id], now=time.time())
    # The receiver that keeps failing was tried again and again meanwhile, without blocking.
    assert len(dead.attempts) > 1 and not dead.delivered()
    retried = stack.app.metrics.registry.get_sample_value(
        "swb_webhook_deliveries_total", {"result": "retried"}
    )
    assert retried is not None and retried >= 3

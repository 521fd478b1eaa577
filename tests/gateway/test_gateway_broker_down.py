"""The broker is gone: a write answers 503 with Retry-After, and nothing is half-written —
the read model shows no submission, the idempotency store keeps no answer, /readyz says so."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import httpx
import pytest
from gateway_stack import Stack, beef, body, gateway_settings

from broker.core.ids import submission_id_for
from broker.runtime.embedded import EmbeddedBroker

pytestmark = pytest.mark.kafka

Problem = Callable[[httpx.Response, int], dict[str, Any]]


async def test_broker_down_means_503_and_nothing_accepted(
    running: Callable[..., Coroutine[Any, Any, Stack]], topic_prefix: str, problem: Problem
) -> None:
    broker = EmbeddedBroker()
    await broker.start()
    try:
        settings = gateway_settings(
            broker.bootstrap_servers,
            topic_prefix,
            request_timeout_ms=5000,
            write_timeout_s=2,
            retry_after_s=7,
        )
        # Consumers leaving a group whose broker is gone wait for their request timeout.
        stack = await running(settings, flow=False, shutdown_timeout_s=60)
        async with stack.client() as client:
            before = await client.post("/v1/submissions", content=body(beef("BEEF-UP-1")))
            assert before.status_code == 202
            assert (await client.get("/readyz")).status_code == 200

            await broker.stop()
            headers = {"Idempotency-Key": "down-1"}
            payload = body(beef("BEEF-DOWN-1"))
            refused = await client.post("/v1/submissions", content=payload, headers=headers)
            details = problem(refused, 503)
            assert refused.headers["retry-after"] == "7"
            assert "nothing was accepted" in details["detail"]

            sid = before.json()["submission_id"]
            view = (await client.get(before.json()["status_url"])).json()
            assert view["version"] == 1, "what was accepted before is still shown"
            down_sid = submission_id_for("NL123456789000", "BEEF-DOWN-1")
            problem(await client.get(f"/v1/submissions/{down_sid}"), 404)
            assert stack.gateway.state.idempotency.get("NL123456789000", "down-1") is None
            again = await client.post("/v1/submissions", content=payload, headers=headers)
            problem(again, 503)  # tried again, not replayed
            problem(
                await client.put(
                    f"/v1/submissions/{sid}",
                    content=body(beef("BEEF-UP-1", with_health_certificate=False)),
                ),
                503,
            )
            assert view == (await client.get(before.json()["status_url"])).json()
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503 and not_ready.json()["checks"]["broker"] is False
    finally:
        await broker.stop()

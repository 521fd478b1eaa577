"""A gateway started afterwards (a restart, or another replica) rebuilds its read model,
its Idempotency-Key answers and the webhook registrations from the topics."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from gateway_stack import Stack, beef, body, gateway_settings

pytestmark = pytest.mark.kafka


async def test_a_new_gateway_rebuilds_what_the_first_one_knew(
    kafka_bootstrap: str,
    topic_prefix: str,
    running: Callable[..., Coroutine[Any, Any, Stack]],
) -> None:
    first = await running(gateway_settings(kafka_bootstrap, topic_prefix))
    payload = body(beef("BEEF-RESTART-1"))
    headers = {"Idempotency-Key": "restart-key-1"}
    async with first.client() as client:
        accepted = await client.post("/v1/submissions", content=payload, headers=headers)
        sid = accepted.json()["submission_id"]
        view = await first.decision(client, sid)
        hook = await client.post("/v1/webhooks", json={"url": "http://127.0.0.1:9/hook"})
        assert hook.status_code == 201

    second = await running(gateway_settings(kafka_bootstrap, topic_prefix), flow=False)
    async with second.client() as client:
        assert (await client.get(f"/v1/submissions/{sid}")).json() == view
        replay = await client.post("/v1/submissions", content=payload, headers=headers)
        assert replay.status_code == 202 and replay.content == accepted.content
        assert replay.headers["idempotent-replayed"] == "true"
        hooks = (await client.get("/v1/webhooks")).json()
        assert [h["webhook_id"] for h in hooks] == [hook.json()["webhook_id"]]
    assert second.gateway.state.follower.rebuild_seconds is not None

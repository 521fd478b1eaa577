"""Server-sent events: one event per decision change, through an amendment to the final
decision; the stream ends after it."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from gateway_stack import Stack, beef, body

pytestmark = pytest.mark.kafka


async def read_events(response: httpx.Response) -> list[dict[str, Any]]:
    """Parse the stream until the server ends it."""
    events: list[dict[str, Any]] = []
    current: dict[str, Any] = {}
    async for line in response.aiter_lines():
        if not line:
            if "data" in current:
                events.append(current)
            current = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(": ")
            current[name] = json.loads(value) if name == "data" else value
    return events


async def test_each_decision_change_is_one_event(stack: Stack) -> None:
    async with stack.client() as client:
        incomplete = body(beef("BEEF-SSE-1", with_health_certificate=False))
        sid = (await client.post("/v1/submissions", content=incomplete)).json()["submission_id"]
        async with client.stream("GET", f"/v1/submissions/{sid}/events") as stream:
            assert stream.status_code == 200
            assert stream.headers["content-type"].startswith("text/event-stream")
            reader = asyncio.create_task(read_events(stream))
            await stack.decision(client, sid, final=False, outcome="DOCUMENTS_REQUIRED")
            amended = await client.put(f"/v1/submissions/{sid}", content=body(beef("BEEF-SSE-1")))
            assert amended.status_code == 202
            async with asyncio.timeout(30):
                events = await reader  # the server ends the stream after the final decision

    assert all(event["event"] == "decision" for event in events)
    decisions = [event["data"] for event in events]
    assert [event["id"] for event in events] == [d["decision_id"] for d in decisions]
    assert len({d["decision_id"] for d in decisions}) == len(decisions), "one event per change"
    assert decisions[-1]["final"] is True and decisions[-1]["outcome"] == "RELEASED"
    assert decisions[-1]["version"] == 2
    assert "DOCUMENTS_REQUIRED" in [d["outcome"] for d in decisions if d["version"] == 1]
    assert [d["version"] for d in decisions] == sorted(d["version"] for d in decisions)
    assert not any(d["final"] for d in decisions[:-1])

    # Reconnecting with the last event id: nothing is repeated, and the stream ends at once.
    async with stack.client() as client:
        again = await client.get(
            f"/v1/submissions/{sid}/events", headers={"Last-Event-ID": events[-1]["id"]}
        )
    assert "event: decision" not in again.text
    assert stack.gateway.state.read_model.subscriber_count == 0

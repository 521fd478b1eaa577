"""Server-sent events: one `decision` event per decision change of a submission.

The event id is the decision id (a content hash), so a client that reconnects with
`Last-Event-ID` is not sent the decision it already has. The current decision is sent first;
the stream ends after a final decision on the latest version (nothing can change after it,
README rule), when the gateway shuts down, or when the client falls too far behind.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

from broker.core.messages import Decision
from broker.gateway.metrics import GatewayMetrics
from broker.gateway.read_model import ReadModel
from broker.gateway.views import DecisionView

RETRY_MS = 3000


def decision_frame(decision: Decision) -> str:
    data = json.dumps(DecisionView.of(decision).model_dump(mode="json"), separators=(",", ":"))
    return f"id: {decision.decision_id}\nevent: decision\ndata: {data}\n\n"


def _ends_stream(read_model: ReadModel, decision: Decision) -> bool:
    entry = read_model.get(decision.submission_id)
    latest = entry.latest_version if entry is not None else decision.version
    return decision.final and decision.version >= latest


async def decision_events(
    read_model: ReadModel,
    submission_id: str,
    *,
    last_event_id: str | None,
    keepalive_s: float,
    metrics: GatewayMetrics,
) -> AsyncIterator[str]:
    subscription = read_model.subscribe(submission_id)
    entry = read_model.get(submission_id)
    current = entry.decision if entry is not None else None
    metrics.sse_streams.inc()
    try:
        yield f"retry: {RETRY_MS}\n\n"
        if current is not None:
            if current.decision_id != last_event_id:
                yield decision_frame(current)
            if _ends_stream(read_model, current):
                return
        while True:
            try:
                async with asyncio.timeout(keepalive_s):
                    decision = await subscription.next()
            except TimeoutError:
                yield ": keep-alive\n\n"
                continue
            if decision is None:
                return
            yield decision_frame(decision)
            if _ends_stream(read_model, decision):
                return
    finally:
        read_model.unsubscribe(subscription)
        metrics.sse_streams.dec()

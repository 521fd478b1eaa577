"""Webhook delivery: each decision change POSTed to the trader's registered URLs.

At-least-once: the dispatcher reads `sw.decisions` in a consumer group shared by the gateway
replicas and commits a record's offset only when every receiver got it (or gave up on it),
so a restart re-delivers what was in flight. Receivers de-duplicate with the event id (the
decision id, also in the `Swb-Event-Id` header); the dispatcher itself skips an event it has
already queued for a receiver. Each receiver has its own bounded queue and worker, so a
receiver that keeps failing only delays itself: retries back off exponentially (with
jitter) up to `webhook_max_attempts`; when its queue is full the oldest waiting delivery is
dropped and counted.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import OrderedDict, deque
from collections.abc import Mapping
from dataclasses import dataclass

import httpx
import structlog

from broker.core.codec import Codec
from broker.core.messages import Decision
from broker.core.topics import Topics
from broker.errors import CodecError, TransportError
from broker.gateway.metrics import GatewayMetrics
from broker.gateway.views import DecisionView
from broker.gateway.webhooks import (
    ATTEMPT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    Webhook,
    WebhookRegistry,
    sign,
)
from broker.runtime.transport import Consumer, Record, TopicPartition, Transport
from broker.settings import GatewaySettings

log = structlog.get_logger("swb.gateway.webhooks")

_RECENT_EVENTS = 10_000


@dataclass(frozen=True, slots=True)
class Delivery:
    event_id: str
    body: bytes
    source: TopicPartition
    offset: int


def event_body(decision: Decision) -> bytes:
    event = {
        "event_id": decision.decision_id,
        "type": "decision",
        "submission_id": decision.submission_id,
        "decision": DecisionView.of(decision).model_dump(mode="json"),
    }
    return json.dumps(event, separators=(",", ":")).encode()


class OffsetTracker:
    """Per partition, the offsets still owed to some receiver; commits stop before the first."""

    def __init__(self) -> None:
        self._owed: dict[TopicPartition, OrderedDict[int, int]] = {}
        self._committable: dict[TopicPartition, int] = {}

    def add(self, tp: TopicPartition, offset: int, receivers: int) -> None:
        self._owed.setdefault(tp, OrderedDict())[offset] = receivers
        self._advance(tp)

    def done(self, tp: TopicPartition, offset: int) -> None:
        owed = self._owed.get(tp)
        if owed is not None and offset in owed:
            owed[offset] -= 1
            self._advance(tp)

    def _advance(self, tp: TopicPartition) -> None:
        owed = self._owed[tp]
        while owed:
            offset, remaining = next(iter(owed.items()))
            if remaining > 0:
                return
            owed.popitem(last=False)
            self._committable[tp] = offset + 1

    def take_committable(
        self, only: set[TopicPartition] | None = None
    ) -> dict[TopicPartition, int]:
        taken = {tp: o for tp, o in self._committable.items() if only is None or tp in only}
        for tp in taken:
            del self._committable[tp]
        return taken

    def forget(self, partitions: set[TopicPartition]) -> None:
        for tp in partitions:
            self._owed.pop(tp, None)
            self._committable.pop(tp, None)


class _Receiver:
    """One webhook's queue and the worker that empties it, in order."""

    def __init__(self, dispatcher: WebhookDispatcher, hook: Webhook) -> None:
        self.hook = hook
        self._dispatcher = dispatcher
        self._queue: deque[Delivery] = deque()
        self._wakeup = asyncio.Event()
        self._recent: OrderedDict[str, None] = OrderedDict()

    def offer(self, delivery: Delivery) -> bool:
        """Queue a delivery unless this event was queued before; False when skipped."""
        if delivery.event_id in self._recent:
            return False
        self._recent[delivery.event_id] = None
        if len(self._recent) > _RECENT_EVENTS:
            self._recent.popitem(last=False)
        settings = self._dispatcher.settings
        if len(self._queue) >= settings.webhook_queue_size:
            dropped = self._queue.popleft()
            log.warning(
                "webhook queue full; oldest delivery dropped",
                webhook_id=self.hook.webhook_id,
                event_id=dropped.event_id,
            )
            self._dispatcher.finished(dropped, "dropped")
        self._queue.append(delivery)
        self._wakeup.set()
        return True

    @property
    def depth(self) -> int:
        return len(self._queue)

    async def run(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            if not self._queue:
                self._wakeup.clear()
                await _wait(stopping, self._wakeup)
                continue
            delivery = self._queue.popleft()
            result = await self._deliver(delivery, stopping)
            if result is None:
                return  # stopping: left uncommitted, delivered again after the restart
            self._dispatcher.finished(delivery, result)

    async def _deliver(self, delivery: Delivery, stopping: asyncio.Event) -> str | None:
        settings = self._dispatcher.settings
        for attempt in range(1, settings.webhook_max_attempts + 1):
            if stopping.is_set():
                return None
            if self._dispatcher.registry.get(self.hook.webhook_id) is None:
                return "dropped"  # the trader removed the webhook meanwhile
            status = await self._post(delivery, attempt)
            if status is not None and 200 <= status < 300:
                return "delivered"
            if status == 410:  # Gone: the receiver asks us to stop
                return "failed"
            if attempt == settings.webhook_max_attempts:
                break
            self._dispatcher.metrics.webhook_deliveries.labels("retried").inc()
            delay = min(
                settings.webhook_backoff_max_s,
                settings.webhook_backoff_initial_s * 2 ** (attempt - 1),
            ) * random.uniform(0.5, 1.0)
            if await _wait(stopping, None, delay):
                return None
        log.warning(
            "webhook delivery failed; giving up",
            webhook_id=self.hook.webhook_id,
            event_id=delivery.event_id,
            attempts=settings.webhook_max_attempts,
        )
        return "failed"

    async def _post(self, delivery: Delivery, attempt: int) -> int | None:
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "swb-webhooks/1",
            EVENT_ID_HEADER: delivery.event_id,
            ATTEMPT_HEADER: str(attempt),
            SIGNATURE_HEADER: sign(self.hook.secret, delivery.body, int(time.time())),
        }
        try:
            response = await self._dispatcher.client.post(
                self.hook.url, content=delivery.body, headers=headers
            )
        except httpx.HTTPError as exc:
            log.info(
                "webhook attempt failed",
                webhook_id=self.hook.webhook_id,
                event_id=delivery.event_id,
                attempt=attempt,
                error=repr(exc),
            )
            return None
        return response.status_code


async def _wait(
    stopping: asyncio.Event, other: asyncio.Event | None, delay_s: float | None = None
) -> bool:
    """Wait for `stopping` (True), `other`, or the timeout (False)."""
    waiters = [asyncio.ensure_future(stopping.wait())]
    if other is not None:
        waiters.append(asyncio.ensure_future(other.wait()))
    try:
        await asyncio.wait(waiters, timeout=delay_s, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)
    return stopping.is_set()


class WebhookDispatcher:
    def __init__(
        self,
        transport: Transport,
        codec: Codec,
        topics: Topics,
        registry: WebhookRegistry,
        metrics: GatewayMetrics,
        settings: GatewaySettings,
        *,
        client: httpx.AsyncClient | None = None,
    ) -> None:
        self._transport = transport
        self._codec = codec
        self._topics = topics
        self.registry = registry
        self.metrics = metrics
        self.settings = settings
        self.client = client or httpx.AsyncClient(
            timeout=settings.webhook_timeout_s, follow_redirects=False
        )
        self._group_id = f"{topics.prefix}.gateway-webhooks"
        self._tracker = OffsetTracker()
        self._receivers: dict[str, _Receiver] = {}
        self._tasks: asyncio.TaskGroup | None = None
        self._consumer: Consumer | None = None
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        self._stopping = stopping
        self._consumer = consumer = await self._transport.consumer(
            self._group_id, [self._topics.decisions], on_revoke=self._on_revoke
        )
        self.ready.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                self._tasks = tasks
                while not stopping.is_set():
                    for record in await consumer.getmany(timeout_ms=100):
                        self._dispatch(record)
                    await self._commit(self._tracker.take_committable())
                    self.metrics.webhook_queued.set(sum(r.depth for r in self._receivers.values()))
        finally:
            self.ready.clear()
            await self._commit(self._tracker.take_committable())
            await consumer.stop()
            await self.client.aclose()

    def _dispatch(self, record: Record) -> None:
        tp = TopicPartition(record.topic, record.partition)
        try:
            decision = self._codec.decode(record.value or b"", Decision)
        except CodecError:
            self._tracker.add(tp, record.offset, 0)
            return
        hooks = self.registry.for_trader(decision.trader_id)
        delivery = Delivery(decision.decision_id, event_body(decision), tp, record.offset)
        queued = 0
        self._tracker.add(tp, record.offset, len(hooks))
        for hook in hooks:
            if self._receiver(hook).offer(delivery):
                queued += 1
            else:
                self._tracker.done(tp, record.offset)
        if queued:
            log.debug("decision queued for webhooks", event_id=decision.decision_id, n=queued)

    def _receiver(self, hook: Webhook) -> _Receiver:
        receiver = self._receivers.get(hook.webhook_id)
        if receiver is None:
            receiver = self._receivers[hook.webhook_id] = _Receiver(self, hook)
            assert self._tasks is not None
            self._tasks.create_task(receiver.run(self._stopping))
        return receiver

    def finished(self, delivery: Delivery, result: str) -> None:
        self.metrics.webhook_deliveries.labels(result).inc()
        self._tracker.done(delivery.source, delivery.offset)

    async def _commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets or self._consumer is None:
            return
        try:
            await self._consumer.commit(offsets)
        except TransportError as exc:  # a rebalance: the new owner delivers them again
            log.warning("webhook offsets not committed", error=str(exc))

    async def _on_revoke(self, revoked: set[TopicPartition]) -> None:
        await self._commit(self._tracker.take_committable(revoked))
        self._tracker.forget(revoked)

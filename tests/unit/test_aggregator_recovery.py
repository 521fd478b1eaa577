"""The aggregator saves state before publishing its effects. A crash in between must not lose
the decision: the next owner of the partition publishes it on restore, with the same id, and
only once. Driven on the in-memory transport with a producer that fails on demand."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from broker.bootstrap import open_app
from broker.core.codec import Codec
from broker.core.messages import AgencyRoute, Decision, Requirement, RoutingPlan, SubmissionKind
from broker.core.topics import Topics
from broker.errors import TransportError
from broker.runtime.aggregator import AggregatorService
from broker.runtime.metrics import Metrics
from broker.runtime.transport import Outgoing, Producer, Transport
from broker.settings import Settings

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


class CrashingProducer:
    """Writes like the real producer, but fails every batch that touches `topic`."""

    def __init__(self, inner: Producer, topic: str) -> None:
        self.inner = inner
        self.topic = topic

    async def send_batch(self, records: Sequence[Outgoing]) -> None:
        if any(record.topic == self.topic for record in records):
            raise TransportError("simulated crash before the decision was written")
        await self.inner.send_batch(records)


class CrashingTransport:
    """The in-memory transport with a producer that crashes on the decisions topic."""

    def __init__(self, inner: Transport, topic: str) -> None:
        self._inner = inner
        self._producer = CrashingProducer(inner.producer(), topic)

    def producer(self) -> Producer:
        return self._producer

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def plan() -> RoutingPlan:
    return RoutingPlan(
        submission_id="sub-1",
        version=1,
        kind=SubmissionKind.NEW,
        trader_id="NL000000000042",
        planned_at=T0,
        payload_sha256="a" * 64,
        agencies=(
            AgencyRoute(
                agency="customs",
                requirement=Requirement.REQUIRED,
                reasons=("customs.all-declarations",),
                deadline=T0 + timedelta(minutes=10),
                item_sequences=(1,),
            ),
        ),
    )


async def run_until_idle(service: AggregatorService) -> None:
    stopping = asyncio.Event()
    task = asyncio.create_task(service.run(stopping))
    async with asyncio.timeout(5):
        await service.ready.wait()
        await asyncio.sleep(0.3)  # let it drain what is there; nothing new arrives
    stopping.set()
    async with asyncio.timeout(5):
        await task


@pytest.mark.timeout(30)
async def test_decision_saved_but_not_published_is_published_once_on_restore() -> None:
    async with open_app(Settings(partitions=1), memory=True) as app:
        topics, codec = Topics(app.settings.topic_prefix), Codec()
        await app.transport.producer().send_batch(
            [Outgoing(topics.routing, codec.encode(plan()), key=b"sub-1")]
        )

        crashing = CrashingTransport(app.transport, topics.decisions)
        first = AggregatorService(
            crashing,  # type: ignore[arg-type]
            codec,
            topics,
            Metrics(),
            lambda: T0,
        )
        with pytest.raises(ExceptionGroup) as crashed:
            await run_until_idle(first)
        assert crashed.group_contains(TransportError)

        saved = await app.transport.read_partition(topics.aggregator_changelog, 0)
        assert len(saved) == 1, "the state was saved before the crash"
        assert await app.transport.read_partition(topics.decisions, 0) == []

        for _ in range(2):  # the second restart finds the decision published: no copy
            again = AggregatorService(app.transport, codec, topics, Metrics(), lambda: T0)
            await run_until_idle(again)
            decisions = [
                codec.decode(r.value or b"", Decision)
                for r in await app.transport.read_partition(topics.decisions, 0)
            ]
            assert len(decisions) == 1
            restored = again.state("sub-1")
            assert restored is not None
            assert decisions[0].decision_id == restored.last_decision_id
            assert decisions[0].outcome.value == "PENDING"

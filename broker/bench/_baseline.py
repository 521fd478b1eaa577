"""The floor: bare aiokafka moving the same records through the same hops as the pipeline
(submission -> router -> plan + one request per agency -> agencies -> one response each ->
aggregator -> final decision), with pre-encoded bytes and no validation, routing, Avro or
aggregation: the least work any implementation must do to move these messages.

It is a fair floor, not a slowed one: the same broker, topics, partitions and client settings
as the pipeline (`KafkaSettings`: linger, batch size, fetch wait, max poll records, range
assignment, acks=all, the same partitioner), batched the same way (`getmany`, every send
queued before any is awaited, one commit per batch), one consumer group per hop and per
agency as in the pipeline, and the same split between processes when the pipeline's agencies
run apart. Requests and the plan are sent together (the pipeline writes requests first, then
the plan) and each submission gets one decision (the pipeline re-issues it on every change).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from broker.bench._driver import SendBatch, Tracker
from broker.bench._full import ROLES
from broker.bench._workload import Base
from broker.core.topics import Topics
from broker.runtime.kafka import KafkaTransport, KeyPartitioner
from broker.settings import Settings

__all__ = ["bare_hops", "bare_pipeline"]

#: What a hop does with one fetched record: queue its sends on the producer, return futures.
Hop = Callable[[Any], Awaitable[list[asyncio.Future[Any]]]]


def answers_by_agency(bases: Sequence[Base]) -> dict[str, bytes]:
    """One pre-encoded answer per agency: a bare agency reads no request, so it answers every
    submission with the same bytes (answers differ only in ids, not in size)."""
    answers: dict[str, bytes] = {}
    for base in bases:
        for agency, response in zip(base.agencies, base.responses, strict=True):
            answers.setdefault(agency, response)
    return answers


@contextlib.asynccontextmanager
async def bare_hops(
    settings: Settings,
    bases: Sequence[Base],
    roles: Collection[str] = ROLES,
    *,
    base_of: Mapping[bytes, int] | None = None,
    tracker: Tracker | None = None,
) -> AsyncIterator[SendBatch]:
    """Run the bare hops of `roles` (and, with a `tracker`, the trader's follower) on the
    broker of `settings`, whose topics exist; yields the function that submits (key, value).
    The router and the aggregator need `base_of` (which declaration each submission varies)."""
    assert settings.kafka_bootstrap_servers, "the baseline needs a Kafka broker"
    kafka = settings.kafka
    # The transport's own client options, so security settings apply here too.
    options = KafkaTransport(settings.kafka_bootstrap_servers, kafka)._client_options
    topics = Topics(settings.topic_prefix)
    producer = AIOKafkaProducer(
        acks="all",
        linger_ms=kafka.linger_ms,
        max_batch_size=kafka.max_batch_size,
        enable_idempotence=kafka.enable_idempotence,
        partitioner=KeyPartitioner(),  # as the transport's producer: a floor, not a handicap
        **options("bench-bare-producer"),
    )
    answers = answers_by_agency(bases)
    remaining: dict[bytes, int] = {}
    lookup = base_of or {}

    async def route(message: Any) -> list[asyncio.Future[Any]]:
        base = bases[lookup[message.key]]
        futures = [
            await producer.send(topics.requests(agency), request, key=message.key)
            for agency, request in zip(base.agencies, base.requests, strict=True)
        ]
        futures.append(await producer.send(topics.routing, base.plan, key=message.key))
        return futures

    def answer(agency: str) -> Hop:
        response = answers.get(agency, b"")

        async def hop(message: Any) -> list[asyncio.Future[Any]]:
            return [await producer.send(topics.responses(agency), response, key=message.key)]

        return hop

    async def aggregate(message: Any) -> list[asyncio.Future[Any]]:
        key = message.key
        base = bases[lookup[key]]
        left = remaining.get(key, 1 + len(base.agencies)) - 1
        remaining[key] = left
        if left:
            return []
        return [await producer.send(topics.decisions, base.decision, key=key)]

    async def follow(message: Any) -> list[asyncio.Future[Any]]:
        assert tracker is not None
        tracker.decided(message.key)
        return []

    hops: list[tuple[str, list[str], Hop]] = []
    if "router" in roles:
        hops.append(("router", [topics.submissions], route))
    if "aggregator" in roles:
        hops.append(("aggregator", [topics.routing, *topics.all_responses()], aggregate))
    if "agencies" in roles:
        hops += [(f"agency-{a}", [topics.requests(a)], answer(a)) for a in topics.agencies]
    if tracker is not None:
        hops.append(("follower", [topics.decisions], follow))  # the trader: never commits
    consumers = [
        AIOKafkaConsumer(
            *subscribed,
            group_id=f"{settings.topic_prefix}-bare-{name}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=kafka.fetch_max_wait_ms,
            max_poll_records=kafka.max_poll_records,
            session_timeout_ms=kafka.session_timeout_ms,
            heartbeat_interval_ms=kafka.heartbeat_interval_ms,
            partition_assignment_strategy=(RangePartitionAssignor,),
            **options(f"bench-bare-{name}"),
        )
        for name, subscribed, _ in hops
    ]
    stopping = asyncio.Event()

    async def run(consumer: AIOKafkaConsumer, hop: Hop, commits: bool) -> None:
        while not stopping.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            if not batches:
                continue
            futures: list[asyncio.Future[Any]] = []
            for messages in batches.values():
                for message in messages:
                    futures += await hop(message)
            if futures:
                await asyncio.gather(*futures)
            if commits:
                await consumer.commit()

    async def send(items: Sequence[tuple[bytes, bytes]]) -> None:
        futures = [await producer.send(topics.submissions, v, key=k) for k, v in items]
        await asyncio.gather(*futures)

    await producer.start()
    try:
        await asyncio.gather(*(consumer.start() for consumer in consumers))
        async with asyncio.TaskGroup() as tasks:
            for consumer, (name, _, hop) in zip(consumers, hops, strict=True):
                tasks.create_task(run(consumer, hop, commits=name != "follower"))
            try:
                yield send
            finally:
                stopping.set()
    finally:
        await asyncio.gather(*(c.stop() for c in consumers), return_exceptions=True)
        await producer.stop()


@contextlib.asynccontextmanager
async def bare_pipeline(
    settings: Settings,
    tracker: Tracker,
    base_of: Mapping[bytes, int],
    bases: Sequence[Base],
    roles: Collection[str] = ROLES,
) -> AsyncIterator[SendBatch]:
    """The bare hops of `roles` in this process, on topics created through the composition
    root (then only raw aiokafka clients), and the trader's follower."""
    from broker.bootstrap import open_app

    async with (
        open_app(settings) as app,
        bare_hops(
            settings.model_copy(update={"kafka_bootstrap_servers": app.bootstrap_servers}),
            bases,
            roles,
            base_of=base_of,
            tracker=tracker,
        ) as send,
    ):
        yield send

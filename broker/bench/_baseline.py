"""The floor: bare aiokafka moving the same records through the same hops as the pipeline
(submission -> router -> plan + one request per agency -> agencies -> one response each ->
aggregator -> final decision), with pre-encoded bytes and no validation, routing, Avro or
aggregation: the least work any implementation must do to move these messages.

It is a fair floor, not a slowed one: the same broker, topics, partitions and client settings
as the pipeline (`KafkaSettings`: batch size, fetch wait, max poll records, range assignment,
acks=all, the same partitioner), batched the same way (`getmany`, a batch's records written
as closed batches by the transport's `send_now`, one commit per batch), one consumer group per
hop and per agency as in the pipeline, and the same split between processes when the
pipeline's agencies run apart. Requests and the plan are sent together (the pipeline writes
requests first, then the plan) and each submission gets one decision (the pipeline issues an
interim decision per batch that changed it, and the final one).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.coordinator.assignors.range import RangePartitionAssignor

from broker.bench._driver import SendBatch, Tracker
from broker.bench._full import ROLES
from broker.bench._workload import Base
from broker.core.topics import Topics
from broker.runtime.kafka import KafkaTransport, KeyPartitioner, send_now
from broker.runtime.transport import Outgoing
from broker.settings import Settings

__all__ = ["bare_hops", "bare_pipeline"]

#: What a hop writes for one fetched record.
Hop = Callable[[Any], list[Outgoing]]


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
    partitioner = KeyPartitioner()
    producer = AIOKafkaProducer(
        acks="all",
        max_batch_size=kafka.max_batch_size,
        enable_idempotence=kafka.enable_idempotence,
        partitioner=partitioner,  # as the transport's producer: a floor, not a handicap
        **options("bench-bare-producer"),
    )
    answers = answers_by_agency(bases)
    remaining: dict[bytes, int] = {}
    lookup = base_of or {}

    def route(message: Any) -> list[Outgoing]:
        base = bases[lookup[message.key]]
        out = [
            Outgoing(topics.requests(agency), request, message.key)
            for agency, request in zip(base.agencies, base.requests, strict=True)
        ]
        out.append(Outgoing(topics.routing, base.plan, message.key))
        return out

    def answer(agency: str) -> Hop:
        response = answers.get(agency, b"")
        return lambda message: [Outgoing(topics.responses(agency), response, message.key)]

    def aggregate(message: Any) -> list[Outgoing]:
        key = message.key
        base = bases[lookup[key]]
        left = remaining.get(key, 1 + len(base.agencies)) - 1
        remaining[key] = left
        if left:
            return []
        return [Outgoing(topics.decisions, base.decision, key)]

    def follow(message: Any) -> list[Outgoing]:
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
            out = [o for messages in batches.values() for m in messages for o in hop(m)]
            if out:
                await _written(producer, partitioner, out)
            if commits:
                await consumer.commit()

    async def send(items: Sequence[tuple[bytes, bytes]]) -> None:
        await _written(
            producer, partitioner, [Outgoing(topics.submissions, v, k) for k, v in items]
        )

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


async def _written(
    producer: AIOKafkaProducer, partitioner: KeyPartitioner, records: Sequence[Outgoing]
) -> None:
    """As the transport writes a batch: closed batches, sent at once, acknowledged."""
    (queued,) = await send_now(producer, partitioner, [records])
    if isinstance(queued, BaseException):
        raise queued
    await asyncio.gather(*queued)


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

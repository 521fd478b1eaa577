"""The transport contract: the same tests on the in-memory transport and on Kafka (the embedded
Tansu broker). A service tested on the memory transport relies only on what is checked here."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence

import pytest
import pytest_asyncio

from broker.errors import TransportError
from broker.runtime.kafka import KafkaTransport
from broker.runtime.memory import MemoryTransport
from broker.runtime.transport import (
    Consumer,
    Outgoing,
    PartitionsCallback,
    Record,
    TopicPartition,
    Transport,
)
from broker.settings import KafkaSettings

# Kafka group rebalances take 3-4.5 s on Tansu; this only bounds a wait that should succeed.
WAIT_S = 30.0

# Tansu holds a JoinGroup for half the session timeout; 6 s is Apache Kafka's minimum.
KAFKA_SETTINGS = KafkaSettings(session_timeout_ms=6_000)

# Java client's murmur2 of these keys, from Kafka's own test suite (UtilsTest.testMurmur2):
# an oracle independent of the Python code under test.
JAVA_MURMUR2 = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    b"abc": 479470107,
}


@pytest.fixture(params=["memory", pytest.param("kafka", marks=pytest.mark.kafka)])
def bootstrap(request: pytest.FixtureRequest) -> str | None:
    """None for the memory transport; the session broker's address for Kafka."""
    if request.param == "memory":
        return None
    servers: str = request.getfixturevalue("kafka_bootstrap")
    return servers


@pytest_asyncio.fixture
async def transport(bootstrap: str | None) -> AsyncIterator[Transport]:
    started: Transport = (
        MemoryTransport() if bootstrap is None else KafkaTransport(bootstrap, KAFKA_SETTINGS)
    )
    await started.start()
    try:
        yield started
    finally:
        await started.stop()


async def poll_until(
    consumers: Sequence[Consumer], done: Callable[[list[Record]], bool]
) -> list[Record]:
    """Poll every consumer (which also drives Kafka's group protocol) until `done` holds for
    the records fetched so far."""
    fetched: list[Record] = []
    async with asyncio.timeout(WAIT_S):
        while not done(fetched):
            for consumer in consumers:
                fetched.extend(await consumer.getmany(timeout_ms=50))
    return fetched


def all_partitions(topics: Sequence[str], partitions: int) -> set[TopicPartition]:
    return {TopicPartition(topic, p) for topic in topics for p in range(partitions)}


def numbers(assignment: set[TopicPartition], topic: str) -> list[int]:
    return sorted(tp.partition for tp in assignment if tp.topic == topic)


async def test_batch_reads_back_in_order_with_keys_and_headers(
    transport: Transport, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.orders"
    await transport.create_topics([topic], 3)
    sent = [
        Outgoing(
            topic,
            value=None if i == 7 else f"value-{i}".encode(),
            key=None if i == 11 else f"key-{i % 5}".encode(),
            headers=(("seq", str(i).encode()), ("kind", b"\x00binary\xff")),
        )
        for i in range(40)
    ]
    await transport.producer().send_batch(sent)

    read = [r for p in range(3) for r in await transport.read_partition(topic, p)]

    assert len(read) == len(sent)
    partitions_of_key: dict[bytes | None, set[int]] = {}
    for p in range(3):
        records = [r for r in read if r.partition == p]
        assert [r.offset for r in records] == list(range(len(records)))
        seqs = [int(dict(r.headers)["seq"]) for r in records]
        assert seqs == sorted(seqs), "records of a partition come back in the order sent"
        for seq, record in zip(seqs, records, strict=True):
            original = sent[seq]
            assert (record.topic, record.key, record.value, record.headers) == (
                topic,
                original.key,
                original.value,
                original.headers,
            )
            partitions_of_key.setdefault(record.key, set()).add(p)
    assert all(len(ps) == 1 for key, ps in partitions_of_key.items() if key is not None)


async def test_concurrent_writes_all_land_in_call_order_per_partition(
    transport: Transport, topic_prefix: str
) -> None:
    """Many callers at once (as the SDK's lanes write), some with more bytes than one batch
    holds: every record lands once, and a partition keeps the order the calls were made in."""
    topic = f"{topic_prefix}.answers"
    await transport.create_topics([topic], 2)
    producer = transport.producer()

    def call(n: int) -> list[Outgoing]:
        size = 40 * 1024 if n % 10 == 0 else 100  # 8 x 40 KiB: more than a 256 KiB batch
        return [
            Outgoing(
                topic, bytes(size), f"key-{(n + i) % 7}".encode(), (("seq", f"{n}.{i}".encode()),)
            )
            for i in range(8)
        ]

    await asyncio.gather(*(producer.send_batch(call(n)) for n in range(60)))

    landed: list[tuple[int, int]] = []
    for p in range(2):
        seqs = [
            (int(call_no), int(index))
            for r in await transport.read_partition(topic, p)
            for call_no, index in [dict(r.headers)["seq"].split(b".")]
        ]
        assert seqs == sorted(seqs), "a partition keeps the order of the calls"
        landed += seqs
    assert sorted(landed) == [(n, i) for n in range(60) for i in range(8)]


async def test_key_picks_the_partition_of_kafkas_default_partitioner(
    transport: Transport, topic_prefix: str
) -> None:
    topics = [f"{topic_prefix}.plans", f"{topic_prefix}.responses"]
    await transport.create_topics(topics, 4)
    await transport.producer().send_batch(
        [Outgoing(topic, value=b"x", key=key) for topic in topics for key in JAVA_MURMUR2]
    )

    expected = {key: (h & 0x7FFFFFFF) % 4 for key, h in JAVA_MURMUR2.items()}
    for topic in topics:
        placed = {
            r.key: r.partition for p in range(4) for r in await transport.read_partition(topic, p)
        }
        assert placed == expected


async def test_new_member_resumes_after_the_committed_offset(
    transport: Transport, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.work"
    group = f"{topic_prefix}.workers"
    await transport.create_topics([topic], 2)
    await transport.producer().send_batch(
        [Outgoing(topic, value=str(i).encode(), key=str(i).encode()) for i in range(20)]
    )

    first = await transport.consumer(group, [topic])
    fetched = await poll_until([first], lambda got: len(got) >= 20)
    committed = {}
    for p in range(2):
        offsets = [r.offset for r in fetched if r.partition == p]
        assert offsets == list(range(len(offsets)))
        committed[TopicPartition(topic, p)] = len(offsets) // 2
    await first.commit(committed)
    await first.stop()

    remaining = 20 - sum(committed.values())
    second = await transport.consumer(group, [topic])
    resumed = await poll_until([second], lambda got: len(got) >= remaining)
    await second.stop()

    assert len(resumed) == remaining
    for tp, offset in committed.items():
        offsets = [r.offset for r in resumed if r.partition == tp.partition]
        assert offsets == list(range(offset, offset + len(offsets)))


async def test_members_split_co_partitioned_topics_range_style(
    transport: Transport, topic_prefix: str
) -> None:
    topics = [f"{topic_prefix}.routing", f"{topic_prefix}.responses"]
    group = f"{topic_prefix}.aggregators"
    await transport.create_topics(topics, 4)
    everything = all_partitions(topics, 4)
    events: dict[str, list[tuple[str, set[TopicPartition]]]] = {"one": [], "two": []}

    def recorder(name: str, event: str) -> PartitionsCallback:
        async def record(partitions: set[TopicPartition]) -> None:
            events[name].append((event, partitions))

        return record

    one = await transport.consumer(
        group, topics, on_assign=recorder("one", "assign"), on_revoke=recorder("one", "revoke")
    )
    await poll_until([one], lambda _: one.assignment() == everything)
    two = await transport.consumer(
        group, topics, on_assign=recorder("two", "assign"), on_revoke=recorder("two", "revoke")
    )

    def split() -> bool:
        a, b = one.assignment(), two.assignment()
        return bool(a) and bool(b) and a | b == everything and not a & b

    await poll_until([one, two], lambda _: split())

    for member, name in ((one, "one"), (two, "two")):
        owned = member.assignment()
        assert numbers(owned, topics[0]) == numbers(owned, topics[1])
        partition_numbers = numbers(owned, topics[0])
        assert len(partition_numbers) == 2
        assert partition_numbers[1] == partition_numbers[0] + 1, "range: contiguous"
        assert events[name][-1] == ("assign", owned)
    assert ("revoke", everything) in events["one"], "the old owner is told before it loses"

    await two.stop()
    await poll_until([one], lambda _: one.assignment() == everything)
    assert events["one"][-1] == ("assign", everything)
    await one.stop()


async def test_getmany_returns_as_soon_as_a_record_arrives(
    transport: Transport, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.live"
    await transport.create_topics([topic], 1)
    consumer = await transport.consumer(f"{topic_prefix}.g", [topic])
    await poll_until([consumer], lambda _: bool(consumer.assignment()))

    waiting = asyncio.create_task(consumer.getmany(timeout_ms=int(WAIT_S * 1000)))
    await transport.producer().send_batch([Outgoing(topic, value=b"hello", key=b"k")])
    records = await waiting
    await consumer.stop()

    assert [(r.key, r.value) for r in records] == [(b"k", b"hello")]


async def test_read_partition_returns_everything_to_the_end(
    transport: Transport, topic_prefix: str
) -> None:
    topic, empty = f"{topic_prefix}.changelog", f"{topic_prefix}.empty"
    await transport.create_topics([topic, empty], 1)
    # Several batches: Tansu's ListOffsets answers the last batch's base offset + 1.
    values = [f"v{i}".encode() for i in range(13)]
    for chunk in (values[:5], values[5:6], values[6:]):
        await transport.producer().send_batch([Outgoing(topic, value=v, key=v) for v in chunk])

    records = await transport.read_partition(topic, 0)

    assert [r.value for r in records] == values
    assert [r.offset for r in records] == list(range(13))
    assert await transport.read_partition(empty, 0) == []


async def test_create_topics_is_idempotent(transport: Transport, topic_prefix: str) -> None:
    first, second = f"{topic_prefix}.a", f"{topic_prefix}.b"
    await transport.create_topics([first], 2)
    await transport.create_topics([first, second], 2)
    await transport.create_topics([first, second], 5)  # existing topics are left as they are

    assert await transport.partitions_for(first) == 2
    assert await transport.partitions_for(second) == 2


async def test_partitions_for_an_unknown_topic_raises_and_does_not_create_it(
    transport: Transport, topic_prefix: str
) -> None:
    for _ in range(2):  # on Tansu, naming a topic in a metadata request would create it
        with pytest.raises(TransportError):
            await transport.partitions_for(f"{topic_prefix}.nowhere")


async def test_commit_of_an_unassigned_partition_raises(
    transport: Transport, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.mine"
    await transport.create_topics([topic], 1)
    consumer = await transport.consumer(f"{topic_prefix}.g", [topic])
    await poll_until([consumer], lambda _: bool(consumer.assignment()))

    with pytest.raises(TransportError):
        await consumer.commit({TopicPartition(topic, 7): 1})
    await consumer.stop()


async def test_stopped_consumer_refuses_to_fetch_and_stops_twice(
    transport: Transport, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.gone"
    await transport.create_topics([topic], 1)
    consumer = await transport.consumer(f"{topic_prefix}.g", [topic])
    await consumer.stop()
    await consumer.stop()

    with pytest.raises(TransportError):
        await consumer.getmany(timeout_ms=10)


async def test_stopping_the_transport_stops_its_consumers(
    transport: Transport, topic_prefix: str
) -> None:
    topic = f"{topic_prefix}.shutdown"
    await transport.create_topics([topic], 2)
    members = [await transport.consumer(f"{topic_prefix}.g", [topic]) for _ in range(2)]

    await transport.stop()

    for member in members:
        assert member.assignment() == set()
        with pytest.raises(TransportError):
            await member.getmany(timeout_ms=10)


async def test_ping_answers_while_started(transport: Transport) -> None:
    assert await transport.ping() is True
    await transport.stop()
    await transport.stop()
    assert await transport.ping() is False

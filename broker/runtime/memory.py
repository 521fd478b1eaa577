"""An in-memory transport with Kafka's semantics, for unit tests of services (no broker).

It passes the same contract tests as the Kafka transport: the same key → partition hash, range
assignment, rebalance callbacks, committed offsets, and redelivery from the last commit after
a rebalance. It is stricter where that catches bugs: unknown topics are errors, not auto-created.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import structlog
from aiokafka.partitioner import murmur2

from broker.errors import TransportError
from broker.runtime.transport import (
    Consumer,
    Outgoing,
    PartitionsCallback,
    Producer,
    Record,
    TopicPartition,
)

__all__ = ["MemoryTransport", "partition_for_key"]

log = structlog.get_logger("swb.transport")


def partition_for_key(key: bytes, partitions: int) -> int:
    """Kafka's default partitioner (Java client and aiokafka): murmur2, positive, modulo."""
    return _positive_murmur2(key) % partitions


@functools.lru_cache(maxsize=65_536)
def _positive_murmur2(key: bytes) -> int:
    """Remembered as kafka.KeyPartitioner does: murmur2 is pure Python (3.5 µs a key) and
    a submission's records all share its key."""
    hashed: int = murmur2(key)
    return hashed & 0x7FFFFFFF


def range_assignment(
    subscriptions: Mapping[str, Sequence[str]], partition_counts: Mapping[str, int]
) -> dict[str, set[TopicPartition]]:
    """Kafka's RangeAssignor: per topic, its subscribers in sorted member-id order take
    contiguous ranges, the first ones one partition more when it does not divide evenly."""
    assignment: dict[str, set[TopicPartition]] = {member: set() for member in subscriptions}
    for topic, count in partition_counts.items():
        ordered = sorted(m for m, topics in subscriptions.items() if topic in topics)
        if not ordered:
            continue
        share, extra = divmod(count, len(ordered))
        start = 0
        for index, member in enumerate(ordered):
            size = share + (1 if index < extra else 0)
            assignment[member].update(TopicPartition(topic, p) for p in range(start, start + size))
            start += size
    return assignment


@dataclass(eq=False)
class _Group:
    members: list[_MemoryConsumer] = field(default_factory=list)
    committed: dict[TopicPartition, int] = field(default_factory=dict)
    # Held while a rebalance runs callbacks; members fetch nothing meanwhile, as in Kafka.
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    rebalancing: bool = False


class _MemoryProducer:
    def __init__(self, transport: MemoryTransport) -> None:
        self._transport = transport

    async def send_batch(self, records: Sequence[Outgoing]) -> None:
        await self._transport._append(records)


class _MemoryConsumer:
    def __init__(
        self,
        transport: MemoryTransport,
        group: _Group,
        member_id: str,
        topics: Sequence[str],
        on_assign: PartitionsCallback | None,
        on_revoke: PartitionsCallback | None,
    ) -> None:
        self._transport = transport
        self._group = group
        self.member_id = member_id
        self.topics = tuple(dict.fromkeys(topics))
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._assignment: set[TopicPartition] = set()
        self._positions: dict[TopicPartition, int] = {}
        self._rotation = 0
        self._stopped = False

    async def getmany(self, timeout_ms: int, max_records: int | None = None) -> list[Record]:
        if self._stopped:
            raise TransportError("memory transport: consumer is stopped")
        limit = max_records or self._transport.max_poll_records
        try:
            async with asyncio.timeout(timeout_ms / 1000), self._transport._changed:
                await self._transport._changed.wait_for(self._ready)
        except TimeoutError:
            return []
        if self._stopped:
            raise TransportError("memory transport: consumer stopped while fetching")
        return self._take(limit)

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if self._stopped:
            raise TransportError("memory transport: consumer is stopped")
        foreign = set(offsets) - self._assignment
        if foreign:
            names = ", ".join(f"{tp.topic}[{tp.partition}]" for tp in foreign)
            raise TransportError(f"memory transport: cannot commit unassigned {names}")
        self._group.committed.update(offsets)

    def assignment(self) -> set[TopicPartition]:
        return set(self._assignment)

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        await self._transport._leave(self)

    # -- used by the transport -------------------------------------------------------------

    def _ready(self) -> bool:
        if self._stopped:
            return True
        if self._group.rebalancing:
            return False
        return any(self._positions[tp] < self._transport._end_offset(tp) for tp in self._assignment)

    def _take(self, limit: int) -> list[Record]:
        owned = sorted(self._assignment, key=lambda tp: (tp.topic, tp.partition))
        if not owned:
            return []
        # Start from a different partition each call so a busy one cannot starve the others.
        self._rotation = (self._rotation + 1) % len(owned)
        taken: list[Record] = []
        for tp in owned[self._rotation :] + owned[: self._rotation]:
            log_ = self._transport._log(tp)
            position = self._positions[tp]
            chunk = log_[position : position + limit - len(taken)]
            taken.extend(chunk)
            self._positions[tp] = position + len(chunk)
            if len(taken) >= limit:
                break
        return taken

    async def _revoke(self) -> None:
        # The callback runs while the partitions are still owned, so it may commit them.
        if self._assignment and self._on_revoke is not None:
            await _run_callback(self._on_revoke, set(self._assignment), "on_revoke")
        self._assignment = set()

    async def _assign(self, partitions: set[TopicPartition]) -> None:
        self._assignment = set(partitions)
        # Eager rebalance, as in Kafka: every partition restarts from the group's commit.
        self._positions = {tp: self._group.committed.get(tp, 0) for tp in partitions}
        if self._on_assign is not None:
            await _run_callback(self._on_assign, set(partitions), "on_assign")


async def _run_callback(
    callback: PartitionsCallback, partitions: set[TopicPartition], name: str
) -> None:
    """Like aiokafka: a failing callback is logged and the rebalance goes on."""
    try:
        await callback(partitions)
    except Exception:
        log.exception("rebalance_callback_failed", callback=name)


class MemoryTransport:
    """Topics, partitions, groups and commits in memory. `clock_ms` stamps records."""

    def __init__(
        self,
        *,
        max_poll_records: int = 500,
        clock_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.max_poll_records = max_poll_records
        self._clock_ms = clock_ms
        self._topics: dict[str, list[list[Record]]] = {}
        self._groups: dict[str, _Group] = {}
        self._member_ids = itertools.count()
        self._round_robin = itertools.count()
        self._changed = asyncio.Condition()
        self._producer = _MemoryProducer(self)
        self._started = False

    async def start(self) -> None:
        self._started = True

    async def stop(self) -> None:
        """Every member leaves at once, without the rebalances of one-by-one leaving. Topics,
        records and commits stay, like a broker's: a restarted service resumes from them."""
        self._started = False
        for group in self._groups.values():
            members, group.members = group.members, []
            for member in members:
                member._stopped = True
                member._assignment = set()
        async with self._changed:
            self._changed.notify_all()

    async def __aenter__(self) -> MemoryTransport:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def create_topics(self, topics: Sequence[str], partitions: int) -> None:
        self._check_started()
        if partitions < 1:
            raise TransportError("memory transport: a topic needs at least one partition")
        for topic in topics:
            self._topics.setdefault(topic, [[] for _ in range(partitions)])

    async def partitions_for(self, topic: str) -> int:
        return len(self._partitions(topic))

    def producer(self) -> Producer:
        return self._producer

    async def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
    ) -> Consumer:
        self._check_started()
        for topic in topics:
            self._partitions(topic)
        group = self._groups.setdefault(group_id, _Group())
        member = _MemoryConsumer(
            self, group, f"{group_id}-{next(self._member_ids):06d}", topics, on_assign, on_revoke
        )
        await self._rebalance(group, joining=member)
        return member

    async def read_partition(self, topic: str, partition: int) -> list[Record]:
        self._check_started()
        return list(self._log(TopicPartition(topic, partition)))

    async def ping(self) -> bool:
        return self._started

    # -- internals -------------------------------------------------------------------------

    def _check_started(self) -> None:
        if not self._started:
            raise TransportError("memory transport is not started: call start() first")

    def _partitions(self, topic: str) -> list[list[Record]]:
        try:
            return self._topics[topic]
        except KeyError:
            raise TransportError(f"memory transport: topic {topic!r} does not exist") from None

    def _log(self, tp: TopicPartition) -> list[Record]:
        partitions = self._partitions(tp.topic)
        if not 0 <= tp.partition < len(partitions):
            raise TransportError(f"memory transport: {tp.topic!r} has no partition {tp.partition}")
        return partitions[tp.partition]

    def _end_offset(self, tp: TopicPartition) -> int:
        return len(self._topics[tp.topic][tp.partition])

    async def _append(self, records: Sequence[Outgoing]) -> None:
        self._check_started()
        for outgoing in records:  # all or nothing: check every topic before writing
            self._partitions(outgoing.topic)
        for outgoing in records:
            partitions = self._topics[outgoing.topic]
            if outgoing.key is None:
                number = next(self._round_robin) % len(partitions)
            else:
                number = partition_for_key(outgoing.key, len(partitions))
            log_ = partitions[number]
            log_.append(
                Record(
                    topic=outgoing.topic,
                    partition=number,
                    offset=len(log_),
                    key=outgoing.key,
                    value=outgoing.value,
                    headers=tuple(outgoing.headers),
                    timestamp_ms=self._clock_ms(),
                )
            )
        async with self._changed:
            self._changed.notify_all()

    async def _leave(self, member: _MemoryConsumer) -> None:
        group = member._group
        await self._rebalance(group, leaving=member)

    async def _rebalance(
        self,
        group: _Group,
        *,
        joining: _MemoryConsumer | None = None,
        leaving: _MemoryConsumer | None = None,
    ) -> None:
        """Eager rebalance, as Kafka's classic protocol: everyone's partitions are revoked,
        then the range assignment over the new membership is handed out."""
        async with group.lock:
            group.rebalancing = True
            try:
                for member in list(group.members):
                    if member is not leaving:
                        await member._revoke()
                if leaving is not None and leaving in group.members:
                    group.members.remove(leaving)
                    leaving._assignment = set()
                if joining is not None:
                    group.members.append(joining)
                counts: dict[str, int] = {}
                for member in group.members:
                    for topic in member.topics:
                        counts[topic] = len(self._topics[topic])
                plan = range_assignment({m.member_id: m.topics for m in group.members}, counts)
                for member in group.members:
                    await member._assign(plan[member.member_id])
            finally:
                group.rebalancing = False
                async with self._changed:
                    self._changed.notify_all()

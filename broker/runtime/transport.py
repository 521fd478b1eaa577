"""The transport the services are written against: Kafka in production, memory in unit tests.

Both implementations pass the same contract tests (tests/contract). Services never import
aiokafka; they see records, batches of sends that return once acknowledged, explicit commits,
and partition assignment callbacks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class TopicPartition:
    topic: str
    partition: int


@dataclass(frozen=True, slots=True)
class Record:
    """A record read from a topic."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()
    timestamp_ms: int = 0


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A record to write. The key picks the partition (same hash as Kafka's default)."""

    topic: str
    value: bytes | None
    key: bytes | None = None
    headers: tuple[tuple[str, bytes], ...] = field(default=())


PartitionsCallback = Callable[[set[TopicPartition]], Awaitable[None]]


class Producer(Protocol):
    async def send_batch(self, records: Sequence[Outgoing]) -> None:
        """Write all records; return once every one is acknowledged (acks=all).

        Raises TransportError if any write fails; some may have landed (callers are idempotent).
        """


class Consumer(Protocol):
    async def getmany(self, timeout_ms: int, max_records: int | None = None) -> list[Record]:
        """Next records from the assigned partitions, in order within each partition."""

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit, per partition, the offset of the next record to read."""

    def assignment(self) -> set[TopicPartition]: ...

    async def stop(self) -> None:
        """Leave the group and close. Idempotent."""


class Transport(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def create_topics(self, topics: Sequence[str], partitions: int) -> None:
        """Create the topics that do not exist yet, each with `partitions` partitions."""

    async def partitions_for(self, topic: str) -> int: ...

    def producer(self) -> Producer:
        """The transport's shared producer (started with the transport)."""

    async def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
    ) -> Consumer:
        """A started group member. Assignment is range-style, so co-partitioned topics give a
        member the same partition numbers of every topic. No auto commit; a new group reads
        from the earliest offset. `on_revoke` runs before partitions are taken away, and
        `on_assign` before any record of the new partitions is returned."""

    async def read_partition(self, topic: str, partition: int) -> list[Record]:
        """Every record of one partition, from the beginning up to its current end, outside any
        consumer group (used to restore state from changelogs)."""

    async def ping(self) -> bool:
        """True when the broker answers a metadata request."""

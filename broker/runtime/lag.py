"""Consumer lag, measured periodically: per group, topic and partition, the end offset minus
the group's committed offset, exported as `swb_consumer_lag`.

It watches every consumer group that has committed on one of the broker's topics (router,
aggregator and each agency's connector), so a slow agency shows up as lag on its requests
topic. Lag is an operator's concern that needs admin requests the service `Transport` does not
offer, so the monitor has its own small client (`KafkaGroupOffsets`) behind a protocol.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

import structlog
from aiokafka import AIOKafkaConsumer
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from broker.errors import TransportError
from broker.runtime.metrics import Metrics
from broker.runtime.transport import TopicPartition

__all__ = ["GroupOffsets", "KafkaGroupOffsets", "LagMonitor", "PartitionLag"]

log = structlog.get_logger("swb.lag")


class GroupOffsets(Protocol):
    """What the monitor needs from the cluster. Raises TransportError when it cannot answer."""

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def groups(self) -> list[str]:
        """The consumer groups the cluster knows."""

    async def partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        """Every partition of those of `topics` that exist."""

    async def committed(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        """The group's committed offsets; partitions it never committed are left out."""

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        """The offset the next record written to each partition will get."""


@dataclass(frozen=True, slots=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    lag: int


def lag_of(
    committed: Mapping[TopicPartition, int], end: Mapping[TopicPartition, int]
) -> dict[TopicPartition, int]:
    """Lag of every partition of every topic the group committed on.

    A partition of such a topic without a commit is read from the beginning, so its whole end
    offset is lag (the broker keeps no retention-trimmed start we could subtract: a small
    overestimate on Apache Kafka after retention). Never negative: the embedded Tansu reports
    the base offset of the last stored batch + 1 as the end offset, which can trail a commit."""
    topics = {tp.topic for tp in committed}
    return {
        tp: max(0, end_offset - committed.get(tp, 0))
        for tp, end_offset in end.items()
        if tp.topic in topics
    }


class LagMonitor:
    """Measures lag every `interval_s` until stopped. Owns its `GroupOffsets` client."""

    def __init__(
        self,
        offsets: GroupOffsets,
        topics: Sequence[str],
        metrics: Metrics,
        *,
        interval_s: float = 15.0,
    ) -> None:
        self._offsets = offsets
        self._topics = list(dict.fromkeys(topics))
        self._metrics = metrics
        self._interval_s = interval_s

    async def run(self, stopping: asyncio.Event) -> None:
        try:
            while not stopping.is_set():
                await self.measure()
                try:
                    async with asyncio.timeout(self._interval_s):
                        await stopping.wait()
                except TimeoutError:
                    pass
        finally:
            await self._offsets.stop()

    async def measure(self) -> list[PartitionLag]:
        """One measurement (connecting first if needed). A failure is reported, never raised:
        the monitor runs beside a role, and must neither stop it nor stop trying while the
        role rides out a Kafka outage."""
        try:
            await self._offsets.start()
            lags = await self._measure()
        except TransportError as exc:
            log.warning("consumer lag not measured", error=str(exc))
            self._failed()
            return []
        except Exception:
            log.exception("consumer lag measurement failed")
            self._failed()
            return []
        self._metrics.kafka_reachable.set(1)
        self._metrics.lag_checks.labels("ok").inc()
        for item in lags:
            self._metrics.consumer_lag.labels(item.group, item.topic, str(item.partition)).set(
                item.lag
            )
        return lags

    def _failed(self) -> None:
        self._metrics.kafka_reachable.set(0)
        self._metrics.lag_checks.labels("failed").inc()

    async def _measure(self) -> list[PartitionLag]:
        partitions = await self._offsets.partitions(self._topics)
        if not partitions:
            return []
        end = await self._offsets.end_offsets(partitions)
        lags: list[PartitionLag] = []
        for group in sorted(await self._offsets.groups()):
            committed = await self._offsets.committed(group, partitions)
            for tp, lag in sorted(lag_of(committed, end).items(), key=_order):
                lags.append(PartitionLag(group, tp.topic, tp.partition, lag))
        return lags


def _order(item: tuple[TopicPartition, int]) -> tuple[str, int]:
    return item[0].topic, item[0].partition


@contextmanager
def _translated(action: str) -> Iterator[None]:
    try:
        yield
    except (KafkaError, OSError) as exc:
        raise TransportError(f"Kafka: could not {action}: {exc!r}") from exc


class KafkaGroupOffsets:
    """`GroupOffsets` on a Kafka-protocol broker: an admin client and a group-less consumer.

    Offsets are always fetched for named partitions: the embedded Tansu drops the connection
    on an OffsetFetch for "all partitions" (null topics)."""

    def __init__(self, client_options: Mapping[str, Any]) -> None:
        self._options = dict(client_options)
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None

    async def start(self) -> None:
        if self._admin is not None:
            return
        admin = AIOKafkaAdminClient(**self._options)
        consumer = AIOKafkaConsumer(group_id=None, enable_auto_commit=False, **self._options)
        try:
            with _translated("connect the lag monitor"):
                await admin.start()
                await consumer.start()
        except BaseException:
            await consumer.stop()
            await admin.close()
            raise
        self._admin, self._consumer = admin, consumer

    async def stop(self) -> None:
        admin, self._admin = self._admin, None
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()

    async def groups(self) -> list[str]:
        with _translated("list consumer groups"):
            listed = await self._started()[0].list_consumer_groups()
        return [str(group) for group, _protocol in listed]

    async def partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        wanted = set(topics)
        # Whole-cluster metadata: naming an unknown topic would create it on Tansu.
        with _translated("read topic metadata"):
            described = await self._started()[0].describe_topics()
        return [
            TopicPartition(topic["topic"], p["partition"])
            for topic in described
            if topic["topic"] in wanted and topic["error_code"] == 0
            for p in topic["partitions"]
        ]

    async def committed(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        with _translated(f"fetch the offsets of group {group!r}"):
            fetched = await self._started()[0].list_consumer_group_offsets(
                group, partitions=[KafkaTopicPartition(tp.topic, tp.partition) for tp in partitions]
            )
        return {
            TopicPartition(tp.topic, tp.partition): meta.offset
            for tp, meta in fetched.items()
            if meta.offset >= 0
        }

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        with _translated("list end offsets"):
            ends = await self._started()[1].end_offsets(
                [KafkaTopicPartition(tp.topic, tp.partition) for tp in partitions]
            )
        return {TopicPartition(tp.topic, tp.partition): int(o) for tp, o in ends.items()}

    def _started(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._consumer is None:
            raise TransportError("the lag monitor is not started: call start() first")
        return self._admin, self._consumer

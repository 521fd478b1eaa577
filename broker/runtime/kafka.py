"""The Kafka transport, on aiokafka: the only module that talks to a Kafka-protocol broker.

Tuned for the embedded Tansu broker (DESIGN §8) and standard on Apache Kafka. Every aiokafka
error is translated into TransportError here, so services never see aiokafka.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka import TopicPartition as KafkaTopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.errors import (
    ConsumerStoppedError,
    IllegalOperation,
    KafkaError,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.helpers import create_ssl_context
from aiokafka.partitioner import DefaultPartitioner, murmur2
from aiokafka.protocol.group import LeaveGroupRequest

from broker.errors import TransportError
from broker.runtime.transport import (
    Consumer,
    Outgoing,
    PartitionsCallback,
    Producer,
    Record,
    TopicPartition,
)
from broker.settings import KafkaSettings

__all__ = ["KafkaTransport", "KeyPartitioner", "send_now"]

log = structlog.get_logger("swb.transport")

_PING_TIMEOUT_S = 2.0
_METADATA_POLL_S = 0.05


@contextmanager
def _translated(action: str) -> Iterator[None]:
    """Turn aiokafka's errors into TransportError, saying what we were doing."""
    try:
        yield
    except (KafkaError, ConsumerStoppedError, IllegalOperation, OSError) as exc:
        raise TransportError(f"Kafka: could not {action}: {exc!r}") from exc


class KeyPartitioner:
    """aiokafka's default partitioner (murmur2 of the key, modulo the partition count: the same
    partition as every Kafka client picks), remembering the hashes of recent keys. One
    submission's records (requests, plan, responses, decisions, changelog) share its key, and
    murmur2 is pure Python: 3.5 µs a record, about 50 µs per decision before this cache."""

    def __init__(self, remember: int = 65_536) -> None:
        self._remember = remember
        self._hashes: dict[bytes, int] = {}

    def __call__(self, key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
        if key is None:
            partition: int = DefaultPartitioner()(key, all_partitions, available)
            return partition
        hashed = self._hashes.get(key)
        if hashed is None:
            if len(self._hashes) >= self._remember:
                del self._hashes[next(iter(self._hashes))]  # the oldest key
            hashed = self._hashes[key] = murmur2(key) & 0x7FFFFFFF
        return all_partitions[hashed % len(all_partitions)]


def _record(message: Any) -> Record:
    headers = message.headers  # usually empty: skip building a generator for each record
    return Record(
        message.topic,
        message.partition,
        message.offset,
        message.key,
        message.value,
        tuple((name, value or b"") for name, value in headers) if headers else (),
        message.timestamp,
    )


def _ours(partitions: Any) -> set[TopicPartition]:
    return {TopicPartition(tp.topic, tp.partition) for tp in partitions}


class _RebalanceListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Adapts aiokafka's listener to the transport's callbacks. aiokafka awaits them inside the
    rebalance (and logs, then swallows, what they raise). An empty revoke is not reported."""

    def __init__(
        self, on_assign: PartitionsCallback | None, on_revoke: PartitionsCallback | None
    ) -> None:
        self._on_assign = on_assign
        self._on_revoke = on_revoke

    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self._on_revoke is not None and revoked:
            await self._on_revoke(_ours(revoked))

    async def on_partitions_assigned(self, assigned: Any) -> None:
        if self._on_assign is not None:
            await self._on_assign(_ours(assigned))


class _KafkaProducer:
    """The transport's shared producer; usable once the transport is started.

    Group commit: the records of every `send_batch` call waiting while the writer is busy go
    out together in its next round, as closed batches (`send_now`). Under load many callers
    (the SDK's per-submission lanes, router and aggregator in one process) share one batch
    per partition; when quiet, a call is written at once instead of lingering."""

    def __init__(self, transport: KafkaTransport) -> None:
        self._transport = transport
        self._waiting: list[tuple[Sequence[Outgoing], asyncio.Future[list[Any]]]] = []
        self._writer: asyncio.Task[None] | None = None

    async def send_batch(self, records: Sequence[Outgoing]) -> None:
        if not records:
            return
        self._transport._started_producer()
        queued: asyncio.Future[list[Any]] = asyncio.get_running_loop().create_future()
        self._waiting.append((records, queued))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.create_task(self._write(), name="swb-kafka-writer")
        try:
            futures = await queued
        except TransportError:
            raise
        except Exception as exc:
            raise TransportError(f"Kafka: could not write {len(records)} records: {exc!r}") from exc
        results = await asyncio.gather(*futures, return_exceptions=True)
        failure = next((r for r in results if isinstance(r, BaseException)), None)
        if failure is not None:
            raise TransportError(
                f"Kafka: could not write {len(records)} records: {failure!r}"
            ) from failure

    async def _write(self) -> None:
        """Queue what callers left, round after round, until nothing waits."""
        while self._waiting:
            calls, self._waiting = self._waiting, []
            try:
                producer = self._transport._started_producer()
                per_call = await send_now(
                    producer, self._transport.partitioner, [records for records, _ in calls]
                )
            except BaseException as exc:  # handed to every caller of the round: none hangs
                failure = exc if isinstance(exc, Exception) else TransportError("writer stopped")
                for _, queued in calls:
                    if not queued.done():
                        queued.set_exception(failure)
                if not isinstance(exc, Exception):
                    raise  # cancelled: the loop is closing
                continue
            for (_, queued), futures in zip(calls, per_call, strict=True):
                if queued.done():  # a caller cancelled meanwhile: its records still go
                    continue
                if isinstance(futures, BaseException):
                    queued.set_exception(futures)
                else:
                    queued.set_result(futures)


async def send_now(
    producer: AIOKafkaProducer,
    partitioner: KeyPartitioner,
    groups: Sequence[Sequence[Outgoing]],
) -> list[list[Any] | KafkaError]:
    """Queue the records of `groups` as closed batches, one per partition (more where one
    fills up); return, for each group, the delivery futures of the batches holding its records,
    or why none of its records was queued (a topic without metadata).

    Every caller awaits its whole set before going on (requests before the plan, state before
    decisions), so lingering for more records would only add latency: up to the linger per
    hop, five times per submission. A closed batch goes out at once, and one `append` per
    record costs far less than `producer.send` (partition lookup and a future per record).
    Records of one partition keep their order; other batches for it wait their turn."""
    partitions: dict[str, list[int]] = {}
    open_batches: dict[tuple[str, int], tuple[Any, set[int]]] = {}
    futures: list[list[Any]] = [[] for _ in groups]
    failed: dict[int, KafkaError] = {}

    async def flush(topic: str, partition: int) -> None:
        batch, owners = open_batches.pop((topic, partition))
        batch.close()
        future = await producer.send_batch(batch, topic, partition=partition)
        for owner in owners:
            futures[owner].append(future)

    for owner, records in enumerate(groups):
        try:  # every topic first, so a group is queued whole or not at all
            for topic in {record.topic for record in records} - partitions.keys():
                partitions[topic] = sorted(await producer.partitions_for(topic))
        except KafkaError as exc:
            failed[owner] = exc
            continue
        for record in records:
            topic = record.topic
            all_partitions = partitions[topic]
            partition = partitioner(record.key, all_partitions, all_partitions)
            headers = list(record.headers)
            current = open_batches.get((topic, partition))
            if current is not None and not current[0].append(
                timestamp=None, key=record.key, value=record.value, headers=headers
            ):
                await flush(topic, partition)  # full: send it, this record starts the next
                current = None
            if current is None:
                current = open_batches[topic, partition] = (producer.create_batch(), set())
                # A batch takes its first record whatever its size (the broker may refuse it).
                current[0].append(
                    timestamp=None, key=record.key, value=record.value, headers=headers
                )
            current[1].add(owner)
    for topic, partition in list(open_batches):
        await flush(topic, partition)
    return [failed.get(owner, queued) for owner, queued in enumerate(futures)]


class _KafkaConsumer:
    def __init__(self, transport: KafkaTransport, consumer: AIOKafkaConsumer) -> None:
        self._transport = transport
        self._consumer = consumer
        self._stopped = False

    async def getmany(self, timeout_ms: int, max_records: int | None = None) -> list[Record]:
        with _translated("fetch records"):
            batches = await self._consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
        return [_record(message) for messages in batches.values() for message in messages]

    async def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        if not offsets:
            return
        with _translated("commit offsets"):
            await self._consumer.commit(
                {KafkaTopicPartition(tp.topic, tp.partition): o for tp, o in offsets.items()}
            )

    def assignment(self) -> set[TopicPartition]:
        if self._stopped:
            return set()
        return _ours(self._consumer.assignment())

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self._transport._consumers.discard(self)
        unannounced = _generation_zero_member(self._consumer)
        with _translated("leave the consumer group"):
            await self._consumer.stop()
        if unannounced is not None:
            await self._transport._leave_group(*unannounced)


def _generation_zero_member(consumer: AIOKafkaConsumer) -> tuple[str, str] | None:
    """(group, member id) when aiokafka will skip LeaveGroup on stop, else None.

    Tansu numbers a group's first generation 0 (Kafka starts at 1) and aiokafka sends
    LeaveGroup only for generation > 0, so the group would wait for this member's session
    timeout before the next member can join (18 s instead of 5 s at a 10 s session).
    """
    coordinator = getattr(consumer, "_coordinator", None)
    generation = getattr(coordinator, "generation", None)
    member_id = getattr(coordinator, "member_id", "")
    group_id = getattr(coordinator, "group_id", None)
    if generation == 0 and member_id and isinstance(group_id, str):
        return group_id, str(member_id)
    return None


class KafkaTransport:
    """The transport on a Kafka-protocol broker. `replication_factor` None means min(3, brokers).

    Quirks of the embedded Tansu 0.6 it works around:
    - a metadata request naming an unknown topic creates it with 4 partitions, so existence
      is checked on whole-cluster metadata only;
    - ListOffsets(latest) answers the base offset of the last stored batch + 1, not the high
      watermark, so `read_partition` also reads up to the high watermark the fetch reports;
    - a group's first generation is 0, for which aiokafka skips LeaveGroup: sent here instead;
    - a JoinGroup is held for half the session timeout, so a rebalance takes that long.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        settings: KafkaSettings,
        client_id: str = "swb",
        *,
        replication_factor: int | None = None,
    ) -> None:
        self._bootstrap_servers = bootstrap_servers
        self._settings = settings
        self._client_id = client_id
        self._replication_factor = replication_factor
        self._admin: AIOKafkaAdminClient | None = None
        self._producer: AIOKafkaProducer | None = None
        self.partitioner = KeyPartitioner()  # the producer's, and send_now's
        self._shared_producer = _KafkaProducer(self)
        self._consumers: set[_KafkaConsumer] = set()

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        if self._producer is not None:
            return
        admin = AIOKafkaAdminClient(**self._client_options("admin"))
        producer = AIOKafkaProducer(
            acks="all",
            max_batch_size=self._settings.max_batch_size,
            enable_idempotence=self._settings.enable_idempotence,
            partitioner=self.partitioner,
            **self._client_options("producer"),
        )
        try:
            with _translated(f"connect to {self._bootstrap_servers}"):
                await admin.start()
                await producer.start()
        except BaseException:
            await producer.stop()
            await admin.close()
            raise
        self._admin, self._producer = admin, producer

    async def stop(self) -> None:
        consumers, self._consumers = list(self._consumers), set()
        # Together, so the group does not rebalance onto members that are about to leave.
        outcomes = await asyncio.gather(*(c.stop() for c in consumers), return_exceptions=True)
        for outcome in outcomes:
            if isinstance(outcome, TransportError):
                log.warning("consumer_stop_failed", error=str(outcome))
            elif isinstance(outcome, BaseException):
                raise outcome
        producer, self._producer = self._producer, None
        admin, self._admin = self._admin, None
        if producer is not None:
            # Flushes what is queued; a broker that is gone surfaces as a logged warning.
            try:
                await producer.stop()
            except KafkaError as exc:
                log.warning("producer_stop_failed", error=repr(exc))
        if admin is not None:
            await admin.close()

    async def __aenter__(self) -> KafkaTransport:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # -- topics ----------------------------------------------------------------------------

    async def create_topics(self, topics: Sequence[str], partitions: int) -> None:
        admin = self._started_admin()
        wanted = list(dict.fromkeys(topics))
        with _translated("list topics"):
            existing = set(await admin.list_topics())
        missing = [topic for topic in wanted if topic not in existing]
        if missing:
            replication = self._replication_factor or min(3, await self._broker_count())
            with _translated(f"create topics {missing}"):
                response = await admin.create_topics(
                    [NewTopic(topic, partitions, replication) for topic in missing],
                    timeout_ms=self._settings.request_timeout_ms,
                )
            for topic, code, message in response.topic_errors:
                error = for_code(code)
                # Another instance may have created it between our listing and our request.
                if code and error is not TopicAlreadyExistsError:
                    raise TransportError(f"Kafka: could not create topic {topic!r}: {message}")
        await self._await_topics({topic: partitions for topic in missing}, set(wanted))

    async def partitions_for(self, topic: str) -> int:
        counts = await self._partition_counts()
        if topic not in counts:
            raise TransportError(f"Kafka: topic {topic!r} does not exist")
        return counts[topic]

    # -- clients ---------------------------------------------------------------------------

    def producer(self) -> Producer:
        return self._shared_producer

    async def consumer(
        self,
        group_id: str,
        topics: Sequence[str],
        *,
        on_assign: PartitionsCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
    ) -> Consumer:
        self._started_admin()
        aio_consumer = AIOKafkaConsumer(
            group_id=group_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._settings.fetch_max_wait_ms,
            max_poll_records=self._settings.max_poll_records,
            session_timeout_ms=self._settings.session_timeout_ms,
            heartbeat_interval_ms=self._settings.heartbeat_interval_ms,
            # Range, not aiokafka's round-robin default: a member gets the same partition
            # numbers of every co-partitioned topic (DESIGN §3).
            partition_assignment_strategy=(RangePartitionAssignor,),
            **self._client_options(f"consumer-{group_id}"),
        )
        aio_consumer.subscribe(list(topics), listener=_RebalanceListener(on_assign, on_revoke))
        try:
            with _translated(f"join consumer group {group_id!r}"):
                await aio_consumer.start()
        except BaseException:
            await aio_consumer.stop()
            raise
        consumer = _KafkaConsumer(self, aio_consumer)
        self._consumers.add(consumer)
        return consumer

    async def read_partition(self, topic: str, partition: int) -> list[Record]:
        self._started_admin()
        reader = AIOKafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            fetch_max_wait_ms=self._settings.fetch_max_wait_ms,
            **self._client_options("reader"),
        )
        tp = KafkaTopicPartition(topic, partition)
        records: list[Record] = []
        try:
            with _translated(f"read {topic}[{partition}]"):
                await reader.start()
                reader.assign([tp])
                end = (await reader.end_offsets([tp]))[tp]
                if end == 0:
                    return records
                await reader.seek_to_beginning(tp)
                highwater_seen = False
                async with asyncio.timeout(None) as stall:
                    while await reader.position(tp) < end:
                        stall.reschedule(self._stall_deadline())
                        batches = await reader.getmany(tp, timeout_ms=100)
                        records.extend(_record(message) for message in batches.get(tp, ()))
                        highwater = reader.highwater(tp)
                        if not highwater_seen and highwater is not None:
                            # Tansu's end offset stops at the last batch's first record;
                            # the fetch's high watermark is the real end.
                            end, highwater_seen = max(end, highwater), True
        except TimeoutError as exc:
            raise TransportError(f"Kafka: reading {topic}[{partition}] stalled") from exc
        finally:
            await reader.stop()
        return records

    async def ping(self) -> bool:
        if self._admin is None:
            return False
        try:
            async with asyncio.timeout(_PING_TIMEOUT_S):
                await self._admin.list_topics()
        except (KafkaError, OSError, TimeoutError):
            return False
        return True

    # -- internals -------------------------------------------------------------------------

    def _client_options(self, role: str) -> dict[str, Any]:
        s = self._settings
        options: dict[str, Any] = {
            "bootstrap_servers": self._bootstrap_servers,
            "client_id": f"{self._client_id}-{role}",
            "request_timeout_ms": s.request_timeout_ms,
            "security_protocol": s.security_protocol,
        }
        if s.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_context"] = self._ssl_context()
        if s.security_protocol.startswith("SASL"):
            options["sasl_mechanism"] = s.sasl_mechanism or "PLAIN"
            options["sasl_plain_username"] = s.sasl_username
            options["sasl_plain_password"] = s.sasl_password
        return options

    def _ssl_context(self) -> ssl.SSLContext:
        s = self._settings
        context: ssl.SSLContext = create_ssl_context(
            cafile=str(s.ssl_cafile) if s.ssl_cafile else None,
            certfile=str(s.ssl_certfile) if s.ssl_certfile else None,
            keyfile=str(s.ssl_keyfile) if s.ssl_keyfile else None,
        )
        return context

    def _stall_deadline(self) -> float:
        return asyncio.get_running_loop().time() + self._settings.request_timeout_ms / 1000

    def _started_admin(self) -> AIOKafkaAdminClient:
        if self._admin is None:
            raise TransportError("Kafka transport is not started: call start() first")
        return self._admin

    def _started_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise TransportError("Kafka transport is not started: call start() first")
        return self._producer

    async def _partition_counts(self) -> dict[str, int]:
        """Partition counts from whole-cluster metadata. Never name topics in the request: on
        Tansu that creates them."""
        admin = self._started_admin()
        with _translated("read topic metadata"):
            described = await admin.describe_topics()
        return {
            topic["topic"]: len(topic["partitions"])
            for topic in described
            if topic["error_code"] == 0
            and all(p["error_code"] == 0 and p["leader"] >= 0 for p in topic["partitions"])
        }

    async def _leave_group(self, group_id: str, member_id: str) -> None:
        """Best effort, like aiokafka's own LeaveGroup; only reached on Tansu (generation 0,
        one node, so any node is the coordinator)."""
        if self._admin is None:
            return
        try:
            await self._admin._send_request(LeaveGroupRequest(group_id, member_id))
        except (KafkaError, OSError) as exc:
            log.warning("leave_group_failed", group=group_id, error=repr(exc))

    async def _broker_count(self) -> int:
        admin = self._started_admin()
        with _translated("describe the cluster"):
            cluster = await admin.describe_cluster()
        return max(1, len(cluster["brokers"]))

    async def _await_topics(self, created: Mapping[str, int], wanted: set[str]) -> None:
        """Wait until metadata shows each created topic with all its partitions led."""
        try:
            async with asyncio.timeout(self._settings.request_timeout_ms / 1000):
                while True:
                    counts = await self._partition_counts()
                    if all(counts.get(t, 0) >= created.get(t, 1) for t in wanted):
                        return
                    await asyncio.sleep(_METADATA_POLL_S)
        except TimeoutError as exc:
            raise TransportError(
                f"Kafka: topics {sorted(wanted)} did not appear in metadata in time"
            ) from exc

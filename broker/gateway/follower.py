"""Keeps the read model, the idempotency store and the webhook registry up to date.

At start it reads every partition of `sw.submissions`, `sw.routing`, `sw.decisions`,
`sw.arrivals` and the webhooks topic from the beginning (one partition number at a time,
evicting finished submissions as it goes, so the peak stays near the bound), then follows them
with a consumer
in a group of its own: every gateway replica sees every partition. The consumer also starts
from the beginning and skips what the rebuild already applied. Ready once rebuilt and
assigned.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable

import structlog

from broker.core.codec import Codec
from broker.core.messages import ArrivalNotice, Decision, RoutingPlan, Submission
from broker.core.topics import Topics
from broker.errors import CodecError
from broker.gateway.idempotency import (
    FINGERPRINT_HEADER,
    KEY_HEADER,
    IdempotencyStore,
    StoredAnswer,
)
from broker.gateway.metrics import GatewayMetrics
from broker.gateway.read_model import ReadModel
from broker.gateway.views import SubmissionAccepted, json_bytes, status_url
from broker.gateway.webhooks import WebhookRegistry
from broker.runtime.transport import Record, Transport

log = structlog.get_logger("swb.gateway.follower")

_EVICT_EVERY_S = 1.0


class ReadModelFollower:
    def __init__(
        self,
        transport: Transport,
        codec: Codec,
        topics: Topics,
        read_model: ReadModel,
        idempotency: IdempotencyStore,
        webhooks: WebhookRegistry,
        metrics: GatewayMetrics,
    ) -> None:
        self._transport = transport
        self._codec = codec
        self._topics = topics
        self._read_model = read_model
        self._idempotency = idempotency
        self._webhooks = webhooks
        self._metrics = metrics
        self._group_id = f"{topics.prefix}.gateway-{uuid.uuid4().hex[:12]}"
        self.rebuilt = asyncio.Event()
        self.ready = asyncio.Event()
        self.rebuild_seconds: float | None = None

    @property
    def flow_topics(self) -> list[str]:
        return [
            self._topics.submissions,
            self._topics.routing,
            self._topics.decisions,
            self._topics.arrivals,
        ]

    async def run(self, stopping: asyncio.Event) -> None:
        ends = await self.rebuild()
        consumer = await self._transport.consumer(
            self._group_id, [self._webhooks.topic, *self.flow_topics]
        )
        try:
            loop = asyncio.get_running_loop()
            next_eviction = loop.time() + _EVICT_EVERY_S
            while not stopping.is_set():
                records = await consumer.getmany(timeout_ms=100)
                for record in records:
                    if record.offset >= ends.get((record.topic, record.partition), 0):
                        self.apply(record)
                if not self.ready.is_set() and consumer.assignment():
                    self.ready.set()
                    log.info("gateway read model following", group=self._group_id)
                if loop.time() >= next_eviction:
                    self._evict()
                    next_eviction = loop.time() + _EVICT_EVERY_S
        finally:
            self.ready.clear()
            await consumer.stop()

    async def rebuild(self) -> dict[tuple[str, int], int]:
        """Apply every record stored so far; the end offset read, per topic and partition."""
        started = asyncio.get_running_loop().time()
        ends: dict[tuple[str, int], int] = {}
        topic = self._webhooks.topic
        for partition in range(await self._transport.partitions_for(topic)):
            self._apply_all(await self._read(topic, partition, ends))
        counts = {t: await self._transport.partitions_for(t) for t in self.flow_topics}
        for partition in range(max(counts.values())):
            for topic in self.flow_topics:
                if partition < counts[topic]:
                    self._apply_all(await self._read(topic, partition, ends))
            self._evict()
        self.rebuild_seconds = asyncio.get_running_loop().time() - started
        self.rebuilt.set()
        log.info(
            "gateway read model rebuilt",
            submissions=len(self._read_model),
            webhooks=len(self._webhooks),
            seconds=round(self.rebuild_seconds, 3),
        )
        return ends

    async def _read(
        self, topic: str, partition: int, ends: dict[tuple[str, int], int]
    ) -> list[Record]:
        records = await self._transport.read_partition(topic, partition)
        ends[(topic, partition)] = records[-1].offset + 1 if records else 0
        return records

    def _apply_all(self, records: Iterable[Record]) -> None:
        for record in records:
            self.apply(record)

    def apply(self, record: Record) -> None:
        topics = self._topics
        try:
            if record.topic == self._webhooks.topic:
                self._webhooks.apply_record(record)
            elif record.topic == topics.decisions:
                self._read_model.apply_decision(self._codec.decode(record.value or b"", Decision))
            elif record.topic == topics.routing:
                self._read_model.apply_plan(self._codec.decode(record.value or b"", RoutingPlan))
            elif record.topic == topics.arrivals:
                notice = self._codec.decode(record.value or b"", ArrivalNotice)
                self._read_model.apply_arrival(notice)
            elif record.topic == topics.submissions:
                submission = self._codec.decode(record.value or b"", Submission)
                self._read_model.apply_submission(submission)
                self._remember_key(record, submission)
        except CodecError as exc:
            # Not ours to refuse: the router and the aggregator dead-letter bad records.
            log.debug("record skipped", topic=record.topic, offset=record.offset, error=str(exc))

    def _remember_key(self, record: Record, submission: Submission) -> None:
        headers = dict(record.headers)
        key, fingerprint = headers.get(KEY_HEADER), headers.get(FINGERPRINT_HEADER)
        if key is None or fingerprint is None:
            return
        answer = SubmissionAccepted(
            submission_id=submission.submission_id,
            version=submission.version,
            kind=submission.kind,
            status_url=status_url(submission.submission_id),
        )
        self._idempotency.put(
            submission.trader_id,
            key.decode(errors="replace"),
            StoredAnswer(fingerprint.decode(), 202, json_bytes(answer), submission.received_at),
        )

    def _evict(self) -> None:
        self._read_model.evict()
        self._metrics.read_model_submissions.set(len(self._read_model))

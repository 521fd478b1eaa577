"""Agency connector SDK: read `sw.agency.<code>.requests`, answer on `...responses`.

Every connector, simulated or bridged, has this anatomy: decode the request, call an async
handler, write its answer(s), then commit. At-least-once, idempotent by (submission, version,
kind): a re-delivered request is not handled twice while the connector runs, and handlers
answer deterministically, so a re-delivery after a restart gives the same answer, which the
aggregator ignores as a duplicate. Poison records go to the DLQ.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

import structlog
from broker.core.codec import Codec

from broker.core.messages import AgencyRequest, AgencyResponse
from broker.core.topics import Topics
from broker.errors import CodecError
from broker.runtime.dlq import dead_letter
from broker.runtime.transport import Outgoing, Record, TopicPartition, Transport

log = structlog.get_logger("swb.connector")

#: Takes one request (a review or a withdrawal), returns the answers to publish (often one;
#: none for a withdrawal; an interim answer followed later by a final one is published with
#: `AgencyConnector.publish`).
Handler = Callable[[AgencyRequest], Awaitable[Sequence[AgencyResponse]]]


class AgencyConnector:
    def __init__(
        self,
        agency: str,
        handler: Handler,
        transport: Transport,
        codec: Codec,
        topics: Topics,
        *,
        group_id: str | None = None,
        max_concurrency: int = 64,
    ) -> None:
        self.agency = agency
        self._handler = handler
        self._transport = transport
        self._codec = codec
        self._topics = topics
        self._group_id = group_id or f"swb-agency-{agency}"
        self._seen: set[tuple[str, int, str]] = set()
        self._limit = asyncio.Semaphore(max_concurrency)
        self.ready = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        consumer = await self._transport.consumer(
            self._group_id, [self._topics.requests(self.agency)]
        )
        self.ready.set()
        try:
            while not stopping.is_set():
                records = await consumer.getmany(timeout_ms=100)
                if not records:
                    continue
                # Requests of one batch are handled concurrently (agencies have latency);
                # the commit waits for all of them.
                answers = await asyncio.gather(*(self._handle(r) for r in records))
                await self.publish_records([o for batch in answers for o in batch])
                offsets: dict[TopicPartition, int] = {}
                for r in records:
                    offsets[TopicPartition(r.topic, r.partition)] = r.offset + 1
                await consumer.commit(offsets)
        finally:
            await consumer.stop()

    async def publish(self, responses: Sequence[AgencyResponse]) -> None:
        """Publish answers given outside a request's handling (after an inspection, say)."""
        await self.publish_records([self._outgoing(r) for r in responses])

    async def publish_records(self, records: Sequence[Outgoing]) -> None:
        await self._transport.producer().send_batch(records)

    async def _handle(self, record: Record) -> list[Outgoing]:
        with structlog.contextvars.bound_contextvars(
            agency=self.agency,
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
        ):
            try:
                request = self._codec.decode(record.value or b"", AgencyRequest)
            except CodecError as exc:
                log.warning("request refused", reason=exc.reason, error=str(exc))
                return [dead_letter(self._topics.dlq, record, exc.reason, str(exc), self.agency)]
            if request.agency != self.agency:
                message = f"request for {request.agency!r} on {self.agency!r}'s topic"
                return [
                    dead_letter(self._topics.dlq, record, "agency-mismatch", message, self.agency)
                ]
            seen_key = (request.submission_id, request.version, request.kind.value)
            if seen_key in self._seen:
                return []
            async with self._limit:
                responses = await self._handler(request)
            self._seen.add(seen_key)
            return [self._outgoing(r) for r in responses]

    def _outgoing(self, response: AgencyResponse) -> Outgoing:
        return Outgoing(
            self._topics.responses(self.agency),
            self._codec.encode(response),
            key=response.submission_id.encode(),
        )

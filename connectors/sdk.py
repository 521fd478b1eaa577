"""Agency connector SDK: read `sw.agency.<code>.requests`, answer on `...responses`.

Every connector, simulated or bridged, has this anatomy: parse the request (`parser`), call an
async handler, write its answers (`publisher`), then commit. The guarantees:

- at-least-once: an offset is committed only after the answers of every request up to it
  are acknowledged by the broker; a request still in the handler (an agency endpoint that is
  down, say) holds back the commit of its partition, so a restart delivers it again;
- idempotent by (submission id, version, kind): a re-delivered request is not handled twice
  while the connector runs (withdrawals have their own kind, so they reach the handler);
  handlers answer deterministically, so a re-delivery after a restart gives answers the
  aggregator ignores as duplicates;
- one submission's requests are handled in order; different submissions concurrently, so a
  request waiting on its agency never holds back the others (up to `max_in_flight`);
- poison records (undecodable, another agency's, a handler that refuses) go to the DLQ;
- graceful shutdown: stop fetching, give in-flight handlers `graceful_timeout_s`, publish
  and commit what finished, close.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Sequence

import structlog

from broker.core.codec import Codec
from broker.core.messages import AgencyRequest, AgencyResponse
from broker.core.topics import Topics
from broker.errors import CodecError, TransportError
from broker.runtime.dlq import dead_letter
from broker.runtime.logging import RecordContext
from broker.runtime.transport import Consumer, Outgoing, Record, TopicPartition, Transport
from connectors.errors import ConnectorError, RequestRefused
from connectors.offsets import OffsetTracker
from connectors.parser import parse_request
from connectors.publisher import ResponsePublisher
from connectors.retry import Backoff

__all__ = ["AgencyConnector", "ConnectorFactory", "Handler"]

log = structlog.get_logger("swb.connector")

#: Takes one request (a review or a withdrawal), returns the answers to publish (often one;
#: none for a withdrawal; an interim answer followed later by a final one is published with
#: `AgencyConnector.publish`). Raise `RequestRefused` to dead-letter the request and
#: `AgencyUnavailable` (or any error with `retriable = True`) to have it retried.
Handler = Callable[[AgencyRequest], Awaitable[Sequence[AgencyResponse]]]

_HandledKey = tuple[str, int, str]
_Result = tuple[tuple[_HandledKey, ...], list[Outgoing]]


class AgencyConnector:
    """Runs one agency's handler on its requests topic. `run` owns the consumer."""

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
        max_in_flight: int = 1000,
        dead_letters: bool = True,
        graceful_timeout_s: float = 5.0,
        retry: Backoff | None = None,
        remember: int = 100_000,
    ) -> None:
        """`dead_letters=False` logs refused requests instead of writing them to the DLQ: an
        agency holding only the ACLs of deploy/acls (read its requests, write its responses)
        may not write `sw.dlq`. `remember` bounds the memory of handled requests."""
        self.agency = agency
        self._handler = handler
        self._transport = transport
        self._codec = codec
        self._topics = topics
        self._group_id = group_id or f"swb-agency-{agency}"
        self._publisher = ResponsePublisher(agency, codec, topics, transport.producer())
        self._dead_letters = dead_letters
        self._graceful_timeout_s = graceful_timeout_s
        self._retry = retry or Backoff()
        self._remember = remember
        self._handled: OrderedDict[_HandledKey, None] = OrderedDict()
        self._limit = asyncio.Semaphore(max_concurrency)
        self._max_in_flight = max(max_in_flight, 1)
        self._offsets = OffsetTracker()
        self._lanes: dict[bytes | None, deque[Record]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        self._progress = asyncio.Event()
        self._service = f"connector-{agency}"
        self.ready = asyncio.Event()

    @property
    def requests_topic(self) -> str:
        return self._topics.requests(self.agency)

    async def run(self, stopping: asyncio.Event) -> None:
        self._offsets, self._lanes, self._in_flight = OffsetTracker(), {}, 0
        consumer = await self._transport.consumer(
            self._group_id, [self.requests_topic], on_revoke=self._revoked
        )
        self.ready.set()
        try:
            async with asyncio.TaskGroup() as lanes:
                while not stopping.is_set():
                    room = self._max_in_flight - self._in_flight
                    if room <= 0:  # back-pressure: the agency is slower than its requests
                        await self._progress_or(stopping, timeout_s=0.1)
                    else:
                        for record in await consumer.getmany(timeout_ms=100, max_records=room):
                            self._schedule(record, lanes)
                    await self._commit(consumer)
                await self._drain()
            await self._commit(consumer)
        finally:
            await consumer.stop()

    async def publish(self, responses: Sequence[AgencyResponse]) -> None:
        """Publish answers given outside a request's handling (after an inspection, or an
        agency's callback); returns once the broker acknowledged them."""
        await self._publisher.publish(responses)

    async def publish_records(self, records: Sequence[Outgoing]) -> None:
        await self._publisher.send(records)

    # --- the pipeline -------------------------------------------------------------------

    def _schedule(self, record: Record, lanes: asyncio.TaskGroup) -> None:
        """Queue the record on its submission's lane (key), starting the lane if idle."""
        self._offsets.add(record)
        self._in_flight += 1
        queue = self._lanes.get(record.key)
        if queue is not None:
            queue.append(record)
            return
        queue = self._lanes[record.key] = deque([record])
        task = lanes.create_task(self._lane(record.key, queue))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _lane(self, key: bytes | None, queue: deque[Record]) -> None:
        """One submission's requests, in order: a withdrawal never overtakes its review. Each
        request's answers are written before the next is handled, and before it counts as
        handled (so a crash never turns an unpublished answer into a 'duplicate')."""
        try:
            while queue:
                record = queue[0]
                handled, out = await self._handle(record)
                await self._publisher.send(out)
                self._remember_handled(handled)
                queue.popleft()
                self._offsets.done(record)
                self._in_flight -= 1
                self._progress.set()
        finally:
            if self._lanes.get(key) is queue:
                del self._lanes[key]

    async def _revoked(self, partitions: set[TopicPartition]) -> None:
        """Requests of revoked partitions still in flight finish (their answers are published,
        duplicates are harmless) but are no longer committed here."""
        self._offsets.forget(partitions)

    async def _commit(self, consumer: Consumer) -> None:
        offsets = self._offsets.committable()
        if not offsets:
            return
        try:
            await consumer.commit(offsets)
        except TransportError as exc:  # a rebalance: the records come again, handled or not
            log.warning("commit failed; requests will be redelivered", error=str(exc))

    async def _drain(self) -> None:
        """Shutdown: give in-flight requests `graceful_timeout_s`, then cancel the rest (they
        are not committed, so they come again)."""
        try:
            async with asyncio.timeout(self._graceful_timeout_s):
                while self._in_flight > 0:
                    await self._progress_or(None, timeout_s=None)
        except TimeoutError:
            log.info("shutdown left requests unhandled", unhandled=self._offsets.unhandled())
            for task in list(self._tasks):
                task.cancel()

    async def _progress_or(self, stopping: asyncio.Event | None, timeout_s: float | None) -> None:
        """Wait until a request is done (or `stopping`, or the timeout)."""
        self._progress.clear()
        waits = [asyncio.ensure_future(self._progress.wait())]
        if stopping is not None:
            waits.append(asyncio.ensure_future(stopping.wait()))
        try:
            await asyncio.wait(waits, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waits:
                waiter.cancel()

    # --- one record ---------------------------------------------------------------------

    async def _handle(self, record: Record) -> _Result:
        """The records to write for one request, and its key once handled (none if refused)."""
        with RecordContext(
            agency=self.agency, topic=record.topic, partition=record.partition, offset=record.offset
        ) as context:
            try:
                request = parse_request(record, self._codec, self.agency)
                context.bind(submission_id=request.submission_id, version=request.version)
                key = (request.submission_id, request.version, request.kind.value)
                if key in self._handled:
                    log.debug("duplicate request skipped", kind=request.kind.value)
                    return (), []
                responses = await self._call_handler(request)
                return (key,), [self._answer(request, response) for response in responses]
            except RequestRefused as exc:
                return (), self._refuse(record, exc.reason, str(exc))

    async def _call_handler(self, request: AgencyRequest) -> Sequence[AgencyResponse]:
        """Retry retriable failures with backoff until they succeed or shutdown cancels us."""
        attempt = 0
        while True:
            try:
                async with self._limit:
                    return await self._handler(request)
            except RequestRefused:
                raise
            except Exception as exc:
                if not getattr(exc, "retriable", False):
                    log.exception("handler failed; request refused")
                    raise RequestRefused("handler-failed", f"handler raised {exc!r}") from exc
                delay = self._retry.delay(attempt)
                attempt += 1
                log.warning(
                    "handler failed; retrying",
                    error=str(exc),
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                )
                await asyncio.sleep(delay)

    def _answer(self, request: AgencyRequest, response: AgencyResponse) -> Outgoing:
        if (response.submission_id, response.version) != (request.submission_id, request.version):
            raise RequestRefused(
                "answer-mismatch",
                f"handler answered {response.submission_id} v{response.version} to a request "
                f"for {request.submission_id} v{request.version}",
            )
        try:
            return self._publisher.outgoing(response)
        except ConnectorError as exc:
            raise RequestRefused("answer-mismatch", str(exc)) from exc
        except CodecError as exc:
            raise RequestRefused("unencodable-answer", str(exc)) from exc

    def _refuse(self, record: Record, reason: str, message: str) -> list[Outgoing]:
        if not self._dead_letters:
            log.error("request refused (not dead-lettered)", reason=reason, error=message)
            return []
        log.warning("request refused", reason=reason, error=message)
        return [dead_letter(self._topics.dlq, record, reason, message, self._service)]

    def _remember_handled(self, keys: tuple[_HandledKey, ...]) -> None:
        for key in keys:
            self._handled[key] = None
        while len(self._handled) > self._remember:
            self._handled.popitem(last=False)


#: Builds the connector for an agency around a handler (the composition root's `App.connector`).
ConnectorFactory = Callable[[str, Handler], AgencyConnector]

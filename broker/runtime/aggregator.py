"""Aggregator service: routing plans + agency responses → one coordinated decision.

Reads `sw.routing` and every `sw.agency.<code>.responses` in one consumer group with range
assignment: the topics are co-partitioned, so a member owns a submission's plan and answers.
Each batch is handled as: apply events to the pure state machine, write decisions, withdrawals
and dead letters, then the changed states to the changelog, then commit. A crash anywhere
replays events onto the last saved state; duplicates are idempotent and a re-issued decision
carries the same `decision_id`. SLA deadlines live in the state, so they survive restarts.
"""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable, Iterable
from datetime import datetime

import structlog

from broker.core.aggregation import (
    AgencyOverdue,
    AnswerNotCounted,
    AnswerRefused,
    DeadlineTick,
    DecisionIssued,
    Event,
    Output,
    PlanReceived,
    ResponseReceived,
    SubmissionState,
    WithdrawalRequested,
    new_state,
    step,
)
from broker.core.codec import Codec
from broker.core.messages import AgencyResponse, RoutingPlan
from broker.core.topics import Topics
from broker.errors import CodecError
from broker.runtime.dlq import dead_letter
from broker.runtime.metrics import Metrics
from broker.runtime.transport import Consumer, Outgoing, Record, TopicPartition, Transport

log = structlog.get_logger("swb.aggregator")

SERVICE = "aggregator"


class AggregatorService:
    def __init__(
        self,
        transport: Transport,
        codec: Codec,
        topics: Topics,
        metrics: Metrics,
        clock: Callable[[], datetime],
        *,
        group_id: str = "swb-aggregator",
        deadline_check_interval_s: float = 1.0,
    ) -> None:
        self._transport = transport
        self._codec = codec
        self._topics = topics
        self._metrics = metrics
        self._clock = clock
        self._group_id = group_id
        self._tick_interval = deadline_check_interval_s
        self._states: dict[str, SubmissionState] = {}
        self._partition_of: dict[str, int] = {}
        self._deadlines: list[tuple[datetime, str]] = []  # heap; stale entries are skipped
        self._lock = asyncio.Lock()
        self.ready = asyncio.Event()

    @property
    def states(self) -> dict[str, SubmissionState]:
        return self._states

    async def run(self, stopping: asyncio.Event) -> None:
        consumer = await self._transport.consumer(
            self._group_id,
            [self._topics.routing, *self._topics.all_responses()],
            on_assign=self._restore,
            on_revoke=self._release,
        )
        self.ready.set()
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._tick_deadlines(stopping))
                while not stopping.is_set():
                    records = await consumer.getmany(timeout_ms=100)
                    if records:
                        async with self._lock:
                            await self._process(consumer, records)
        finally:
            await consumer.stop()

    # --- records ------------------------------------------------------------------------

    async def _process(self, consumer: Consumer, records: list[Record]) -> None:
        started = asyncio.get_running_loop().time()
        now = self._clock()
        out: list[Outgoing] = []
        changed: set[str] = set()
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            with structlog.contextvars.bound_contextvars(
                topic=record.topic, partition=record.partition, offset=record.offset
            ):
                event = self._event_of(record, out)
                if event is None:
                    continue
                sid = _submission_of(event)
                structlog.contextvars.bind_contextvars(submission_id=sid)
                self._partition_of[sid] = record.partition
                state = self._states.get(sid) or new_state(sid)
                counted_before = _current_answer(state, event)
                state, outputs = step(state, event, now)
                self._states[sid] = state
                self._observe_answer(state, event, counted_before)
                changed.add(sid)
                out.extend(self._emit(state, outputs, record, now))
        await self._publish(out, changed)
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # a rebalance: the records come again, handling is idempotent
            log.warning("commit failed; records will be redelivered", error=str(exc))
        self._metrics.batch_seconds.labels(SERVICE).observe(
            asyncio.get_running_loop().time() - started
        )

    def _event_of(self, record: Record, out: list[Outgoing]) -> Event | None:
        def refuse(reason: str, message: str) -> None:
            log.warning("record refused", reason=reason, error=message)
            self._metrics.dlq.labels(reason, SERVICE).inc()
            out.append(dead_letter(self._topics.dlq, record, reason, message, SERVICE))

        try:
            if record.topic == self._topics.routing:
                event: Event = PlanReceived(self._codec.decode(record.value or b"", RoutingPlan))
            else:
                agency = self._topics.agency_of_response_topic(record.topic)
                if agency is None:
                    refuse("unknown-topic", f"no agency reads {record.topic}")
                    return None
                response = self._codec.decode(record.value or b"", AgencyResponse)
                event = ResponseReceived(response, agency)
        except CodecError as exc:
            refuse(exc.reason, str(exc))
            return None
        sid = _submission_of(event)
        if record.key is not None and record.key != sid.encode():
            refuse("key-mismatch", f"record key {record.key!r} is not the submission_id {sid}")
            return None
        return event

    def _emit(
        self,
        state: SubmissionState,
        outputs: Iterable[Output],
        record: Record | None,
        now: datetime,
    ) -> list[Outgoing]:
        out: list[Outgoing] = []
        key = state.submission_id.encode()
        for output in outputs:
            match output:
                case DecisionIssued(decision):
                    out.append(Outgoing(self._topics.decisions, self._codec.encode(decision), key))
                    self._observe_decision(state, decision.final, decision.outcome.value, now)
                    log.info(
                        "decision issued",
                        version=decision.version,
                        outcome=decision.outcome.value,
                        final=decision.final,
                        agencies={a.agency: a.status.value for a in decision.agencies},
                    )
                case WithdrawalRequested(request):
                    topic = self._topics.requests(request.agency)
                    out.append(Outgoing(topic, self._codec.encode(request), key))
                    self._metrics.agency_requests.labels(request.agency, "WITHDRAWAL").inc()
                case AnswerRefused(response, reason, detail):
                    log.warning("answer refused", agency=response.agency, reason=reason)
                    self._metrics.dlq.labels(reason, SERVICE).inc()
                    if record is not None:
                        out.append(dead_letter(self._topics.dlq, record, reason, detail, SERVICE))
                case AnswerNotCounted(response, reason):
                    log.info("answer kept for audit", agency=response.agency, reason=reason)
                    self._metrics.answers_not_counted.labels(response.agency, reason).inc()
                case AgencyOverdue(_, version, agency):
                    log.warning("agency overdue", version=version, agency=agency)
                    self._metrics.overdue.labels(agency).inc()
        deadline = state.next_deadline()
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, state.submission_id))
        return out

    def _observe_answer(
        self, state: SubmissionState, event: Event, before: AgencyResponse | None
    ) -> None:
        after = _current_answer(state, event)
        if after is None or after is before or state.plan is None:
            return
        self._metrics.agency_answers.labels(after.agency, after.status.value).inc()
        self._metrics.answer_latency.labels(after.agency).observe(
            max(0.0, (after.answered_at - state.plan.planned_at).total_seconds())
        )

    def _observe_decision(
        self, state: SubmissionState, final: bool, outcome: str, now: datetime
    ) -> None:
        self._metrics.decisions.labels(outcome, str(final).lower()).inc()
        if final and state.plan is not None:
            self._metrics.decision_latency.observe(
                max(0.0, (now - state.plan.planned_at).total_seconds())
            )

    async def _publish(self, out: list[Outgoing], changed: set[str]) -> None:
        """Effects first, then the state that remembers them: a crash between the two only
        repeats effects (same ids), never loses one."""
        producer = self._transport.producer()
        await producer.send_batch(out)
        changelog = [
            Outgoing(
                self._topics.aggregator_changelog,
                self._states[sid].model_dump_json().encode(),
                key=sid.encode(),
            )
            for sid in changed
        ]
        await producer.send_batch(changelog)
        self._refresh_gauges()

    def _refresh_gauges(self) -> None:
        open_states = [s for s in self._states.values() if s.plan is not None and not s.final]
        self._metrics.in_flight.set(len(open_states))
        overdue: dict[str, int] = {}
        for state in open_states:
            for agency in state.overdue:
                overdue[agency] = overdue.get(agency, 0) + 1
        for agency in self._topics.agencies:
            self._metrics.overdue_now.labels(agency).set(overdue.get(agency, 0))

    # --- deadlines ----------------------------------------------------------------------

    async def _tick_deadlines(self, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            try:
                async with asyncio.timeout(self._tick_interval):
                    await stopping.wait()
            except TimeoutError:
                pass
            now = self._clock()
            if self._deadlines and self._deadlines[0][0] <= now:
                async with self._lock:
                    await self._fire_deadlines(now)

    async def _fire_deadlines(self, now: datetime) -> None:
        out: list[Outgoing] = []
        changed: set[str] = set()
        while self._deadlines and self._deadlines[0][0] <= now:
            _, sid = heapq.heappop(self._deadlines)
            state = self._states.get(sid)
            if state is None:
                continue  # partition revoked meanwhile
            state, outputs = step(state, DeadlineTick(), now)
            if outputs:
                changed.add(sid)
                out.extend(self._emit(state, outputs, None, now))
        if changed:
            await self._publish(out, changed)

    # --- partitions ---------------------------------------------------------------------

    async def _restore(self, assigned: set[TopicPartition]) -> None:
        """Load the last saved state of every submission in the newly owned partitions."""
        partitions = sorted({tp.partition for tp in assigned})
        topic = self._topics.aggregator_changelog
        restored = 0
        for partition in partitions:
            for record in await self._transport.read_partition(topic, partition):
                if record.value is None or record.key is None:
                    continue
                state = SubmissionState.model_validate_json(record.value)
                self._states[state.submission_id] = state
                self._partition_of[state.submission_id] = partition
                restored += 1
        for sid, state in self._states.items():
            deadline = state.next_deadline()
            if deadline is not None and self._partition_of.get(sid) in partitions:
                heapq.heappush(self._deadlines, (deadline, sid))
        self._refresh_gauges()
        log.info("aggregator partitions assigned", partitions=partitions, restored=restored)

    async def _release(self, revoked: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in revoked}
        async with self._lock:  # the batch in hand is published and committed first
            for sid in [s for s, p in self._partition_of.items() if p in partitions]:
                self._states.pop(sid, None)
                self._partition_of.pop(sid, None)


def _current_answer(state: SubmissionState, event: Event) -> AgencyResponse | None:
    if isinstance(event, ResponseReceived):
        return state.answers.get(event.response.agency)
    return None


def _submission_of(event: Event) -> str:
    match event:
        case PlanReceived(plan):
            return plan.submission_id
        case ResponseReceived(response, _):
            return response.submission_id
    raise TypeError(f"no submission in {event!r}")

"""Aggregator service: routing plans + agency responses → one coordinated decision.

Reads `sw.routing` and every `sw.agency.<code>.responses` in one consumer group with range
assignment: the topics are co-partitioned, so a member owns a submission's plan and answers.
Each batch is handled as: apply events to the pure state machine, save the changed states to
the changelog, then write decisions, withdrawals and dead letters, then commit. Within a batch
a submission's open (interim) decision is issued once, with every change the batch brought; a
final decision is issued by the event that makes it final. Saving first matters: events from
different topics may be replayed in another order after a crash, and a rejection makes
finality order-dependent, so an effect is only published once the state that produced it is
durable. A crash before the save replays events onto the last saved state
(nothing of theirs was published); a crash after it is repaired on restore, by publishing the
last decision of every state whose `decision_id` is missing from `sw.decisions` (rebuilt from
the state, so the same id and content). SLA deadlines live in the state, so they survive
restarts.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
from collections.abc import Callable, Iterable
from datetime import datetime

import structlog
from pydantic import BaseModel

from broker.core.aggregation import (
    AgencyOverdue,
    AnswerNotCounted,
    AnswerRefused,
    ArrivalNoticed,
    ArrivalRefused,
    DeadlineTick,
    DecisionIssued,
    Event,
    Output,
    PlanReceived,
    ResponseReceived,
    SubmissionState,
    WithdrawalRequested,
    last_effects,
    new_state,
    settle,
    step,
)
from broker.core.codec import Codec
from broker.core.messages import AgencyResponse, ArrivalNotice, RoutingPlan
from broker.core.topics import Topics
from broker.errors import CodecError
from broker.runtime.consuming import consume_batches
from broker.runtime.dlq import dead_letter
from broker.runtime.logging import RecordContext, info_enabled
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
        self._states: dict[str, SubmissionState] = {}  # open submissions (and just finished)
        # Finished submissions, as the changelog bytes of their state: a few late answers or an
        # amendment may still come, but as live models they would cost twice the memory, and
        # every full garbage collection would walk their ~20 objects each (pauses of 70 ms
        # and more at a few thousand submissions, straight into the latency tail).
        self._parked: dict[str, bytes] = {}
        self._partition_of: dict[str, int] = {}
        self._deadlines: list[tuple[datetime, str]] = []  # heap; stale entries are skipped
        # The gauges, kept up to date per change: recounting every state per batch costs
        # O(submissions held) each batch.
        self._open_count = 0
        self._overdue_count: dict[str, int] = {}
        self._verbose = True  # INFO logs on: checked once per batch, not per record
        self._lock = asyncio.Lock()
        # Partitions whose states are restored and not revoked since: records of any other
        # partition are not ours to apply (see `_restore` and `_release`).
        self._owned: set[int] = set()
        self.ready = asyncio.Event()

    def state(self, sid: str) -> SubmissionState | None:
        """A submission's state, finished or not (for inspection and tests)."""
        return self._state_of(sid)

    @property
    def held(self) -> int:
        """How many submissions' states this instance holds, open or finished."""
        return len(self._states) + len(self._parked)

    def _state_of(self, sid: str) -> SubmissionState | None:
        """The live state; a parked one comes back to life for its next event."""
        state = self._states.get(sid)
        if state is None and (saved := self._parked.pop(sid, None)) is not None:
            state = self._states[sid] = _loaded(saved)
        return state

    def _park_finished(self, saved: dict[str, bytes]) -> None:
        for sid, data in saved.items():
            if self._states[sid].final:
                del self._states[sid]
                self._parked[sid] = data

    async def run(self, stopping: asyncio.Event) -> None:
        consumer = await self._transport.consumer(
            self._group_id,
            [self._topics.routing, self._topics.arrivals, *self._topics.all_responses()],
            on_assign=self._restore,
            on_revoke=self._release,
        )
        self.ready.set()

        async def handle(records: list[Record]) -> None:
            # Fetched before a revoke: left, uncommitted, to the new owner.
            owned = [r for r in records if r.partition in self._owned]
            if owned:
                await self._process(consumer, owned)

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(self._tick_deadlines(stopping))
            await consume_batches(consumer, stopping, self._lock, handle)

    # --- records ------------------------------------------------------------------------

    async def _process(self, consumer: Consumer, records: list[Record]) -> None:
        started = asyncio.get_running_loop().time()
        now = self._clock()
        out: list[Outgoing] = []
        changed: set[str] = set()
        offsets: dict[TopicPartition, int] = {}
        self._verbose = info_enabled(log)
        for record in records:
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            with RecordContext(
                topic=record.topic, partition=record.partition, offset=record.offset
            ) as context:
                event = self._event_of(record, out)
                if event is None:
                    continue
                sid = _submission_of(event)
                context.bind(submission_id=sid)
                self._partition_of[sid] = record.partition
                state = self._state_of(sid)
                if state is None:
                    state = _compact_state(new_state(sid))
                else:
                    self._count_gauges(state, -1)
                answers_before = dict(state.answers)
                state, outputs = step(state, event, now, coalesce=True)
                self._states[sid] = state
                self._count_gauges(state, +1)
                self._observe_answers(state, answers_before)
                changed.add(sid)
                out.extend(self._emit(state, outputs, record, now))
        for sid in changed:  # one interim decision per submission per batch, at most
            state = self._states[sid]
            out.extend(self._emit(state, settle(state), None, now))
            self._watch_deadline(state)
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
                plan = _compact_plan(self._codec.decode(record.value or b"", RoutingPlan))
                event: Event = PlanReceived(plan)
            elif record.topic == self._topics.arrivals:
                event = ArrivalNoticed(self._codec.decode(record.value or b"", ArrivalNotice))
            else:
                agency = self._topics.agency_of_response_topic(record.topic)
                if agency is None:
                    refuse("unknown-topic", f"no agency reads {record.topic}")
                    return None
                response = _compact_response(
                    self._codec.decode(record.value or b"", AgencyResponse)
                )
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
                case DecisionIssued(decision, on_arrival):
                    out.append(Outgoing(self._topics.decisions, self._codec.encode(decision), key))
                    self._observe_decision(
                        state, decision.final, decision.outcome.value, now, latency=not on_arrival
                    )
                    if self._verbose:  # its arguments cost more than the filtered call
                        log.info(
                            "decision issued",
                            submission_id=state.submission_id,
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
                case ArrivalRefused(_, reason, detail):
                    log.warning("arrival notice refused", reason=reason)
                    self._metrics.dlq.labels(reason, SERVICE).inc()
                    if record is not None:
                        out.append(dead_letter(self._topics.dlq, record, reason, detail, SERVICE))
                case AgencyOverdue(_, version, agency):
                    log.warning("agency overdue", version=version, agency=agency)
                    self._metrics.overdue.labels(agency).inc()
        return out

    def _watch_deadline(self, state: SubmissionState) -> None:
        """Once per changed state and batch: the heap keeps every entry until its time."""
        deadline = state.next_deadline()
        if deadline is not None:
            heapq.heappush(self._deadlines, (deadline, state.submission_id))

    def _observe_answers(self, state: SubmissionState, before: dict[str, AgencyResponse]) -> None:
        """Count every answer that became current, including held ones a plan released."""
        if state.plan is None:
            return
        for agency, after in state.answers.items():
            if before.get(agency) is after:
                continue
            self._metrics.agency_answers.labels(agency, after.status.value).inc()
            self._metrics.answer_latency.labels(agency).observe(
                max(0.0, (after.answered_at - state.plan.planned_at).total_seconds())
            )

    def _observe_decision(
        self,
        state: SubmissionState,
        final: bool,
        outcome: str,
        now: datetime,
        *,
        latency: bool = True,
    ) -> None:
        """`latency=False` for a final decision re-issued when the goods arrived: the version
        was decided earlier, and its arrival days later is not decision latency."""
        self._metrics.decisions.labels(outcome, str(final).lower()).inc()
        if final and latency and state.plan is not None:
            self._metrics.decision_latency.observe(
                max(0.0, (now - state.plan.planned_at).total_seconds())
            )

    async def _publish(self, out: list[Outgoing], changed: set[str]) -> None:
        """The changed states first, then their effects (see the module docstring)."""
        producer = self._transport.producer()
        saved = {sid: self._states[sid].model_dump_json().encode() for sid in changed}
        changelog = [
            Outgoing(self._topics.aggregator_changelog, data, key=sid.encode())
            for sid, data in saved.items()
        ]
        await producer.send_batch(changelog)
        await producer.send_batch(out)
        self._park_finished(saved)
        self._set_gauges()

    def _count_gauges(self, state: SubmissionState, sign: int) -> None:
        """Add (+1) or remove (-1) what one state contributes to the gauges: around every
        change to it, so the gauges never need a walk over all states."""
        if state.plan is None or state.final:
            return
        self._open_count += sign
        for agency in state.overdue:
            self._overdue_count[agency] = self._overdue_count.get(agency, 0) + sign

    def _refresh_gauges(self) -> None:
        """Recount from every state: only when partitions come or go."""
        self._open_count, self._overdue_count = 0, {}
        for state in self._states.values():
            self._count_gauges(state, +1)
        self._set_gauges()

    def _set_gauges(self) -> None:
        self._metrics.in_flight.set(self._open_count)
        for agency in self._topics.agencies:
            self._metrics.overdue_now.labels(agency).set(self._overdue_count.get(agency, 0))

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
        self._verbose = info_enabled(log)
        while self._deadlines and self._deadlines[0][0] <= now:
            _, sid = heapq.heappop(self._deadlines)
            state = self._states.get(sid)
            if state is None:
                continue  # partition revoked meanwhile
            self._count_gauges(state, -1)
            state, outputs = step(state, DeadlineTick(), now)
            self._count_gauges(state, +1)
            if outputs:
                changed.add(sid)
                with RecordContext(submission_id=sid):
                    out.extend(self._emit(state, outputs, None, now))
                self._watch_deadline(state)
        if changed:
            await self._publish(out, changed)

    # --- partitions ---------------------------------------------------------------------

    async def _restore(self, assigned: set[TopicPartition]) -> None:
        """Load the last saved state of every submission in the newly owned partitions.

        Under the lock: aiokafka hands out the new partitions before it awaits this callback,
        so `getmany` may already return their records; they must wait for the states."""
        async with self._lock:
            await self._restore_states(assigned)
            self._owned.update(tp.partition for tp in assigned)

    async def _restore_states(self, assigned: set[TopicPartition]) -> None:
        partitions = sorted({tp.partition for tp in assigned})
        topic = self._topics.aggregator_changelog
        saved: dict[str, bytes] = {}  # the last saved state of each submission
        for partition in partitions:
            for record in await self._transport.read_partition(topic, partition):
                if record.value is None or record.key is None:
                    continue
                sid = record.key.decode()
                saved[sid] = record.value
                self._partition_of[sid] = partition
        for sid, data in saved.items():
            state = self._states[sid] = _loaded(data)
            deadline = state.next_deadline()
            if deadline is not None:
                heapq.heappush(self._deadlines, (deadline, sid))
        repaired = await self._republish_unpublished(partitions)
        self._park_finished(saved)
        self._refresh_gauges()
        log.info(
            "aggregator partitions assigned",
            partitions=partitions,
            restored=len(saved),
            republished=repaired,
        )

    async def _republish_unpublished(self, partitions: list[int]) -> int:
        """Publish the last decision of states saved just before a crash but never published."""
        published: set[str] = set()
        for partition in partitions:
            for record in await self._transport.read_partition(self._topics.decisions, partition):
                try:
                    _, decision = self._codec.decode_dict(record.value or b"")
                except CodecError:
                    continue
                published.add(str(decision.get("decision_id")))
        out: list[Outgoing] = []
        owned = set(partitions)
        for sid, state in self._states.items():
            if self._partition_of.get(sid) not in owned or state.last_decision_id is None:
                continue
            if state.last_decision_id not in published:
                out.extend(self._emit(state, last_effects(state), None, self._clock()))
        await self._transport.producer().send_batch(out)
        return len(out)

    async def _release(self, revoked: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in revoked}
        async with self._lock:  # the batch in hand is published and committed first
            self._owned.difference_update(partitions)
            for sid in [s for s, p in self._partition_of.items() if p in partitions]:
                self._states.pop(sid, None)
                self._parked.pop(sid, None)
                self._partition_of.pop(sid, None)
            self._refresh_gauges()


#: One `__pydantic_fields_set__` per model class, shared by the instances the aggregator
#: keeps: a set per instance is ~0.7 KiB, most of an in-flight submission's memory.
_ALL_FIELDS: dict[type[BaseModel], set[str]] = {}


def _share_fields_set(model: BaseModel, *, all_set: bool = False) -> None:
    """Point the model at its class's shared set of every field name. Only where every field
    counts as set (a decoded record sets them all), or `all_set` for the mutable state, whose
    set only matters to `exclude_unset`, which nothing uses; adding a name already in the
    shared set (pydantic does on assignment) changes nothing."""
    fields = _ALL_FIELDS.get(type(model))
    if fields is None:
        fields = _ALL_FIELDS[type(model)] = set(type(model).model_fields)
    if all_set or model.__pydantic_fields_set__ == fields:
        object.__setattr__(model, "__pydantic_fields_set__", fields)


def _compact_plan(plan: RoutingPlan) -> RoutingPlan:
    """The same plan in less memory: shared field sets, one string object per agency code,
    reason and trader (the plan is kept for as long as its submission is open)."""
    _share_fields_set(plan)
    plan.__dict__["trader_id"] = sys.intern(plan.trader_id)
    if plan.submitted_by is not None:  # the same trader, as authenticated: one string object
        plan.__dict__["submitted_by"] = sys.intern(plan.submitted_by)
    for route in plan.agencies:
        _share_fields_set(route)
        route.__dict__["agency"] = sys.intern(route.agency)
        route.__dict__["reasons"] = tuple(sys.intern(reason) for reason in route.reasons)
    return plan


def _compact_response(response: AgencyResponse) -> AgencyResponse:
    _share_fields_set(response)
    response.__dict__["agency"] = sys.intern(response.agency)
    return response


def _loaded(saved: bytes) -> SubmissionState:
    """A state from its changelog bytes, compacted as every state kept."""
    state = _compact_state(SubmissionState.model_validate_json(saved))
    if state.plan is not None:
        _compact_plan(state.plan)
    return state


def _compact_state(state: SubmissionState) -> SubmissionState:
    _share_fields_set(state, all_set=True)
    return state


def _submission_of(event: Event) -> str:
    match event:
        case PlanReceived(plan):
            return plan.submission_id
        case ResponseReceived(response, _):
            return response.submission_id
        case ArrivalNoticed(notice):
            return notice.submission_id
    raise TypeError(f"no submission in {event!r}")

"""The coordinated-decision state machine (DESIGN §5), pure: `step(state, event, now)`.

One `SubmissionState` per submission. Events are routing plans, agency responses and deadline
ticks; outputs are decisions to publish, withdrawals to send, and answers refused or not
counted (for the DLQ, the audit trail and the metrics). The same events in any order give the
same final decision, and each version gets at most one final decision.

A runtime that handles events in batches may pass `coalesce=True`: a change that leaves the
decision open is then not issued by the event, and `settle`, called once per batch for every
state the batch changed, issues one interim decision with every change in it (a final decision
is still issued by the event that makes it final).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from pydantic import BaseModel, ConfigDict

from broker.core.messages import (
    AgencyDecision,
    AgencyRequest,
    AgencyResponse,
    AgencyRoute,
    AgencyState,
    AgencyStatus,
    ArrivalNotice,
    Decision,
    JointInspection,
    Outcome,
    RequestKind,
    RequiredDocument,
    Requirement,
    RoutingPlan,
    SubmissionKind,
)

# Worst wins: the coordinated outcome is the highest rank over the agencies concerned.
_RANK: dict[AgencyState, tuple[int, Outcome]] = {
    AgencyState.CLEARED: (1, Outcome.RELEASED),
    AgencyState.CLEARED_WITH_CONDITIONS: (2, Outcome.RELEASED_WITH_CONDITIONS),
    AgencyState.PENDING: (3, Outcome.PENDING),
    AgencyState.OVERDUE: (3, Outcome.PENDING),
    AgencyState.DOCUMENTS_REQUIRED: (4, Outcome.DOCUMENTS_REQUIRED),
    AgencyState.INSPECTION: (5, Outcome.INSPECTION),
    AgencyState.HOLD: (6, Outcome.HOLD),
    AgencyState.REJECTED: (7, Outcome.REJECTED),
}
_TERMINAL_STATES = frozenset(
    {
        AgencyState.CLEARED,
        AgencyState.CLEARED_WITH_CONDITIONS,
        AgencyState.REJECTED,
        AgencyState.NOT_CONCERNED,
    }
)


# --- events -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlanReceived:
    plan: RoutingPlan


@dataclass(frozen=True, slots=True)
class ResponseReceived:
    response: AgencyResponse
    topic_agency: str  # the agency whose responses topic carried it: identity is the topic


@dataclass(frozen=True, slots=True)
class DeadlineTick:
    pass


@dataclass(frozen=True, slots=True)
class ArrivalNoticed:
    """The goods of a (pre-arrival) submission arrived: a release takes effect now."""

    notice: ArrivalNotice


Event = PlanReceived | ResponseReceived | DeadlineTick | ArrivalNoticed


# --- outputs ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DecisionIssued:
    decision: Decision
    # Re-issued because the goods arrived after the version's final decision: not a new
    # decision on the declaration (latency metrics skip it).
    on_arrival: bool = False


@dataclass(frozen=True, slots=True)
class WithdrawalRequested:
    request: AgencyRequest


@dataclass(frozen=True, slots=True)
class AnswerRefused:
    """An answer that breaks the rules: it goes to the DLQ with the reason."""

    response: AgencyResponse
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class AnswerNotCounted:
    """A well-formed answer kept for audit that does not change the decision."""

    response: AgencyResponse
    reason: str  # late-after-final | superseded-version | after-cancellation | older-answer


@dataclass(frozen=True, slots=True)
class AgencyOverdue:
    submission_id: str
    version: int
    agency: str


@dataclass(frozen=True, slots=True)
class ArrivalRefused:
    """An arrival notice that breaks the rules (another trader's submission): to the DLQ."""

    notice: ArrivalNotice
    reason: str
    detail: str


Output = (
    DecisionIssued
    | WithdrawalRequested
    | AnswerRefused
    | AnswerNotCounted
    | AgencyOverdue
    | ArrivalRefused
)


# --- state --------------------------------------------------------------------------------


class SubmissionState(BaseModel):
    """Everything the aggregator knows about one submission; serialises for the changelog.

    Mutable on purpose: `step` updates it in place and returns it (the hot path would
    otherwise copy it on every answer)."""

    model_config = ConfigDict(extra="forbid")

    submission_id: str
    plan: RoutingPlan | None = None
    answers: dict[str, AgencyResponse] = {}
    overdue: list[str] = []
    # Answers to a version whose plan has not arrived yet.
    held: list[AgencyResponse] = []
    # Answers kept for audit that do not count (older versions, late, superseded).
    audit: list[AgencyResponse] = []
    # Digests of answers refused for this submission, so a re-delivered one changes nothing.
    refused: list[str] = []
    last_decision_id: str | None = None
    final: bool = False
    # The first arrival notice (pre-arrival processing); it outlives amendments: goods arrive
    # once, whatever version is current.
    arrival: ArrivalNotice | None = None

    @property
    def version(self) -> int:
        return self.plan.version if self.plan else 0

    @property
    def cancelled(self) -> bool:
        return self.plan is not None and self.plan.kind is SubmissionKind.CANCELLATION

    def next_deadline(self) -> datetime | None:
        """When the next agency becomes overdue, if the decision is still open."""
        if self.plan is None or self.final:
            return None
        pending = [
            route.deadline
            for route in self.plan.agencies
            if route.agency not in self.answers and route.agency not in self.overdue
        ]
        return min(pending, default=None)


def new_state(submission_id: str) -> SubmissionState:
    return SubmissionState(submission_id=submission_id)


# --- transitions --------------------------------------------------------------------------


def step(
    state: SubmissionState, event: Event, now: datetime, *, coalesce: bool = False
) -> tuple[SubmissionState, list[Output]]:
    """Apply one event. Returns the (same, updated) state and what to emit. With `coalesce`,
    an interim decision is left for `settle` (call it before emitting or saving the state)."""
    match event:
        case PlanReceived(plan):
            outputs = _apply_plan(state, plan)
        case ResponseReceived(response, topic_agency):
            outputs = _apply_response(state, response, topic_agency)
        case DeadlineTick():
            outputs = _apply_tick(state, now)
        case ArrivalNoticed(notice):
            outputs = _apply_arrival(state, notice)
    if not coalesce:
        outputs += settle(state)
    return state, outputs


def settle(state: SubmissionState) -> list[Output]:
    """The open decision, if its content changed since the last one issued (nothing when the
    submission has no plan yet or its version is decided)."""
    if state.plan is None or state.final:
        return []
    return _issue(state)


def _apply_plan(state: SubmissionState, plan: RoutingPlan) -> list[Output]:
    if plan.version <= state.version:
        return []  # a re-delivered or stale plan: already applied
    if state.plan is not None:
        state.audit.extend(state.answers.values())
    state.plan = plan
    state.answers = {}
    state.overdue = []
    state.final = False
    outputs: list[Output] = []
    waiting, state.held = state.held, []
    for response in sorted(waiting, key=_answer_order):
        if state.cancelled:  # as `_apply_response` does once cancelled, so a redelivery agrees
            state.audit.append(response)
            outputs.append(AnswerNotCounted(response, "after-cancellation"))
        elif response.version < plan.version:
            state.audit.append(response)
            outputs.append(AnswerNotCounted(response, "superseded-version"))
        elif response.version > plan.version:
            state.held.append(response)
        else:
            outputs.extend(_count_answer(state, response))
    return outputs + _reissue(state)


def _apply_response(
    state: SubmissionState, response: AgencyResponse, topic_agency: str
) -> list[Output]:
    if response.agency != topic_agency:
        detail = f"payload says agency {response.agency!r} but it came from {topic_agency!r}"
        return [AnswerRefused(response, "agency-mismatch", detail)]
    if state.refused and _digest(response) in state.refused:
        return []
    if response.version > state.version and not state.cancelled:
        if response not in state.held:
            state.held.append(response)
        return []
    if response in state.audit:
        return []
    if state.cancelled:
        state.audit.append(response)
        return [AnswerNotCounted(response, "after-cancellation")]
    if response.version < state.version:
        state.audit.append(response)
        return [AnswerNotCounted(response, "superseded-version")]
    return _count_answer(state, response) + _reissue(state)


def _count_answer(state: SubmissionState, response: AgencyResponse) -> list[Output]:
    """Place an answer to the current version; the caller re-issues the decision."""
    assert state.plan is not None
    route = _route_of(state.plan, response.agency)
    if route is None:
        detail = f"agency {response.agency!r} was not routed version {response.version}"
        state.refused.append(_digest(response))
        return [AnswerRefused(response, "agency-not-routed", detail)]
    if response.status is AgencyStatus.NOT_CONCERNED and route.requirement is Requirement.REQUIRED:
        detail = f"{response.agency} was routed as required ({', '.join(route.reasons)})"
        state.refused.append(_digest(response))
        return [AnswerRefused(response, "not-concerned-refused", detail)]
    current = state.answers.get(response.agency)
    if current == response or response in state.audit:
        return []  # duplicate delivery: already counted, or already kept for audit
    if state.final:
        state.audit.append(response)
        return [AnswerNotCounted(response, "late-after-final")]
    if current is not None and _answer_order(response) <= _answer_order(current):
        state.audit.append(response)
        return [AnswerNotCounted(response, "older-answer")]
    if current is not None:
        state.audit.append(current)
    state.answers[response.agency] = response
    if response.agency in state.overdue:
        state.overdue.remove(response.agency)
    return []


def _apply_tick(state: SubmissionState, now: datetime) -> list[Output]:
    if state.plan is None or state.final:
        return []
    outputs: list[Output] = []
    for route in state.plan.agencies:
        late = route.agency not in state.answers and route.agency not in state.overdue
        if late and now >= route.deadline:
            state.overdue.append(route.agency)
            outputs.append(AgencyOverdue(state.submission_id, state.version, route.agency))
    if not outputs:
        return []
    return outputs + _reissue(state)


def _apply_arrival(state: SubmissionState, notice: ArrivalNotice) -> list[Output]:
    """The first notice counts (re-deliveries and later notices change nothing). A notice
    before the plan is kept: the plan's first decision carries it. After a final decision the
    decision is re-issued, still final, with the goods arrived."""
    plan = state.plan
    if plan is not None and notice.trader_id != plan.trader_id:
        detail = f"the notice names trader {notice.trader_id!r}, not the submission's"
        return [ArrivalRefused(notice, "trader-mismatch", detail)]
    kept = state.arrival
    if kept is not None and (plan is None or kept.trader_id == plan.trader_id):
        return []
    state.arrival = notice
    if plan is None:
        return []
    was_final = state.final
    outputs = _reissue(state)
    if not was_final:
        return outputs
    return [
        DecisionIssued(output.decision, on_arrival=True)
        if isinstance(output, DecisionIssued)
        else output
        for output in outputs
    ]


def _reissue(state: SubmissionState) -> list[Output]:
    """Publish a final decision now, withdrawing work after a rejection; an open one is left to
    `settle`: building and hashing a decision is the costliest part of an event, and one per
    batch says as much as one per event."""
    assert state.plan is not None
    if not _verdict(state, [_status(state, route) for route in state.plan.agencies])[1]:
        return []
    return _issue(state)


def _issue(state: SubmissionState) -> list[Output]:
    decision = build_decision(state)
    if decision.decision_id == state.last_decision_id:
        return []
    state.last_decision_id = decision.decision_id
    outputs: list[Output] = [DecisionIssued(decision)]
    if decision.final:
        state.final = True
        if decision.outcome is Outcome.REJECTED:
            outputs.extend(_withdrawals(state, decision))
    return outputs


def last_effects(state: SubmissionState) -> list[Output]:
    """The outputs of the last decision issued, rebuilt from the state alone.

    The runtime saves the state before publishing its effects; after a crash in between, it
    publishes these again (same `decision_id`, same withdrawal ids)."""
    if state.plan is None or state.last_decision_id is None:
        return []
    decision = build_decision(state)
    outputs: list[Output] = [DecisionIssued(decision)]
    if decision.final and decision.outcome is Outcome.REJECTED:
        outputs.extend(_withdrawals(state, decision))
    return outputs


def _withdrawals(state: SubmissionState, decision: Decision) -> list[Output]:
    assert state.plan is not None
    rejected_by = [line.agency for line in decision.agencies if line.status is AgencyState.REJECTED]
    reason = f"rejected by {', '.join(rejected_by)}"
    return [
        WithdrawalRequested(
            AgencyRequest(
                request_id=f"{state.submission_id}:{state.version}:{line.agency}:withdrawal",
                submission_id=state.submission_id,
                version=state.version,
                agency=line.agency,
                kind=RequestKind.WITHDRAWAL,
                requirement=line.requirement,
                reasons=(),
                deadline=line.deadline,
                sent_at=decision.decided_at,
                withdrawal_reason=reason,
            )
        )
        for line in decision.agencies
        if line.status not in _TERMINAL_STATES
    ]


# --- the decision -------------------------------------------------------------------------


def _status(state: SubmissionState, route: AgencyRoute) -> AgencyState:
    answer = state.answers.get(route.agency)
    if answer is not None:
        return AgencyState(answer.status.value)
    return AgencyState.OVERDUE if route.agency in state.overdue else AgencyState.PENDING


def _verdict(state: SubmissionState, statuses: list[AgencyState]) -> tuple[Outcome, bool]:
    """The coordinated outcome over the agencies' statuses (worst wins), and whether final."""
    if state.cancelled:
        return Outcome.CANCELLED, True
    concerned = [status for status in statuses if status is not AgencyState.NOT_CONCERNED]
    outcome = max((_RANK[status] for status in concerned), default=_RANK[AgencyState.CLEARED])[1]
    final = outcome is Outcome.REJECTED or all(status in _TERMINAL_STATES for status in concerned)
    return outcome, final


def agency_line(state: SubmissionState, route: AgencyRoute) -> AgencyDecision:
    answer = state.answers.get(route.agency)
    status = _status(state, route)
    # model_construct: every value comes from validated models, so validation would only
    # copy them (a decision is built on every event: this is the aggregator's hot path).
    return AgencyDecision.model_construct(
        agency=route.agency,
        requirement=route.requirement,
        status=status,
        reasons=answer.reasons if answer else route.reasons,
        conditions=answer.conditions if answer else (),
        answered_at=answer.answered_at if answer else None,
        deadline=route.deadline,
    )


def build_decision(state: SubmissionState) -> Decision:
    """The coordinated decision for the current version, from the state alone (so a replay
    after a crash rebuilds the same content and the same `decision_id`)."""
    plan = state.plan
    assert plan is not None, "a decision needs a routing plan"
    lines = tuple(agency_line(state, route) for route in plan.agencies)
    outcome, final = _verdict(state, [line.status for line in lines])
    inspecting = tuple(line.agency for line in lines if line.status is AgencyState.INSPECTION)
    documents = tuple(
        RequiredDocument(
            agency=answer.agency,
            type_code=doc.type_code,
            description=doc.description,
            deadline=doc.deadline,
        )
        for answer in sorted(state.answers.values(), key=lambda a: a.agency)
        if answer.status is AgencyStatus.DOCUMENTS_REQUIRED
        for doc in answer.documents_required
    )
    times = [plan.planned_at]
    times += [line.answered_at for line in lines if line.answered_at is not None]
    times += [line.deadline for line in lines if line.status is AgencyState.OVERDUE]
    arrived_at, release_on_arrival = _arrival_of(state, plan, outcome)
    if arrived_at is not None and state.arrival is not None:
        times.append(state.arrival.received_at)
    joint = JointInspection(agencies=inspecting) if inspecting else None
    decision = Decision(
        decision_id="",
        submission_id=plan.submission_id,
        version=plan.version,
        trader_id=plan.trader_id,
        outcome=outcome,
        final=final,
        decided_at=max(times),
        payload_sha256=plan.payload_sha256,
        agencies=lines,
        joint_inspection=joint,
        documents_required=documents,
        submitted_by=plan.submitted_by,
        received_at=plan.received_at,
        release_on_arrival=release_on_arrival,
        arrived_at=arrived_at,
        shared_with=plan.shared_with,
    )
    content = decision.model_dump_json(exclude={"decision_id"}).encode()
    # Not yet shared with anyone: set the id in place rather than copy the decision.
    decision.__dict__["decision_id"] = hashlib.sha256(content).hexdigest()[:32]
    return decision


def _arrival_of(
    state: SubmissionState, plan: RoutingPlan, outcome: Outcome
) -> tuple[datetime | None, bool]:
    """(arrived_at, release_on_arrival): only a version lodged before arrival waits for its
    goods, and a rejection or a cancellation releases nothing, so neither shows an arrival."""
    if not plan.pre_arrival or outcome in (Outcome.REJECTED, Outcome.CANCELLED):
        return None, False
    notice = state.arrival
    if notice is None or notice.trader_id != plan.trader_id:
        return None, True
    return notice.arrived_at, False


def _route_of(plan: RoutingPlan, agency: str) -> AgencyRoute | None:
    return next((route for route in plan.agencies if route.agency == agency), None)


def _digest(response: AgencyResponse) -> str:
    return hashlib.sha256(response.model_dump_json().encode()).hexdigest()[:16]


def _answer_order(response: AgencyResponse) -> tuple[int, datetime, int, int, str]:
    """Latest answer wins by the agency's own answer time, then its sequence (DESIGN §5).

    Two different answers with the same time and sequence are an agency's mistake; the worse
    status, then the content, breaks the tie so the decision never depends on arrival order."""
    severity = _RANK.get(AgencyState(response.status.value), (0, Outcome.RELEASED))[0]
    return (
        response.version,
        response.answered_at,
        response.sequence,
        severity,
        response.model_dump_json(),
    )

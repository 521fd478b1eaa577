"""Builders for the aggregation tests: plans, routes and answers with sane defaults.

Every time is a fixed UTC instant counted in minutes from `T0`, so a test reads `at(5)` as
"five minutes after the plan" and nothing depends on the wall clock.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from broker.core.aggregation import (
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
from broker.core.messages import (
    AgencyResponse,
    AgencyRoute,
    AgencyState,
    AgencyStatus,
    Decision,
    DocumentRequest,
    Requirement,
    RoutingPlan,
    SubmissionKind,
)

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
SUBMISSION_ID = "TRADER1-LRN0001"
TRADER_ID = "TRADER1"
PAYLOAD_SHA256 = "ab" * 32
SLA_MINUTES = 60


def at(minutes: float) -> datetime:
    """A fixed instant `minutes` after T0."""
    return T0 + timedelta(minutes=minutes)


def route(
    agency: str,
    requirement: Requirement = Requirement.REQUIRED,
    *,
    deadline: datetime | None = None,
    reasons: tuple[str, ...] | None = None,
) -> AgencyRoute:
    return AgencyRoute(
        agency=agency,
        requirement=requirement,
        reasons=reasons if reasons is not None else (f"rule:{agency}",),
        deadline=deadline if deadline is not None else at(SLA_MINUTES),
        item_sequences=(1,),
    )


def plan(
    *routes: AgencyRoute | str,
    version: int = 1,
    kind: SubmissionKind | None = None,
    planned_at: datetime | None = None,
    submission_id: str = SUBMISSION_ID,
) -> RoutingPlan:
    """A plan routing the given agencies (a bare code means a REQUIRED route)."""
    if kind is None:
        kind = SubmissionKind.NEW if version == 1 else SubmissionKind.AMENDMENT
    return RoutingPlan(
        submission_id=submission_id,
        version=version,
        kind=kind,
        trader_id=TRADER_ID,
        planned_at=planned_at if planned_at is not None else at(0),
        payload_sha256=PAYLOAD_SHA256,
        agencies=tuple(route(r) if isinstance(r, str) else r for r in routes),
    )


def cancellation(version: int, *, planned_at: datetime | None = None) -> RoutingPlan:
    return plan(version=version, kind=SubmissionKind.CANCELLATION, planned_at=planned_at)


def answer(
    agency: str,
    status: AgencyStatus,
    *,
    minute: float = 1,
    sequence: int = 0,
    version: int = 1,
    reasons: tuple[str, ...] = (),
    conditions: tuple[str, ...] = (),
    documents: tuple[DocumentRequest, ...] = (),
    submission_id: str = SUBMISSION_ID,
) -> AgencyResponse:
    return AgencyResponse(
        submission_id=submission_id,
        version=version,
        agency=agency,
        status=status,
        answered_at=at(minute),
        sequence=sequence,
        reasons=reasons,
        conditions=conditions,
        documents_required=documents,
    )


def document(type_code: str, description: str = "", minute: float | None = None) -> DocumentRequest:
    return DocumentRequest(
        type_code=type_code,
        description=description or f"document {type_code}",
        deadline=at(minute) if minute is not None else None,
    )


# --- reading outputs ----------------------------------------------------------------------


def decisions(outputs: Iterable[Output]) -> list[Decision]:
    return [out.decision for out in outputs if isinstance(out, DecisionIssued)]


def final_decisions(outputs: Iterable[Output]) -> list[Decision]:
    return [decision for decision in decisions(outputs) if decision.final]


def withdrawn_agencies(outputs: Iterable[Output]) -> list[str]:
    return [out.request.agency for out in outputs if isinstance(out, WithdrawalRequested)]


def refusals(outputs: Iterable[Output]) -> list[str]:
    return [out.reason for out in outputs if isinstance(out, AnswerRefused)]


def not_counted(outputs: Iterable[Output]) -> list[str]:
    return [out.reason for out in outputs if isinstance(out, AnswerNotCounted)]


# --- driving the state machine ------------------------------------------------------------


class Harness:
    """Feeds events to `step` and keeps the returned state and every output, in order."""

    def __init__(self, submission_id: str = SUBMISSION_ID) -> None:
        self.state: SubmissionState = new_state(submission_id)
        self.outputs: list[Output] = []

    def feed(self, event: Event, now: datetime | None = None) -> list[Output]:
        self.state, outputs = step(self.state, event, now if now is not None else at(0))
        self.outputs.extend(outputs)
        return outputs

    def plan(self, routing_plan: RoutingPlan) -> list[Output]:
        return self.feed(PlanReceived(routing_plan))

    def answer(self, response: AgencyResponse, topic_agency: str | None = None) -> list[Output]:
        topic = topic_agency if topic_agency is not None else response.agency
        return self.feed(ResponseReceived(response, topic))

    def tick(self, now: datetime) -> list[Output]:
        return self.feed(DeadlineTick(), now)

    @property
    def last_decision(self) -> Decision:
        issued = decisions(self.outputs)
        assert issued, "no decision issued yet"
        return issued[-1]

    def statuses(self) -> dict[str, AgencyState]:
        return {line.agency: line.status for line in self.last_decision.agencies}

"""A permit agency's answers, pure: a request and the ledger in, the settlement and answers out.

REVIEW: the package's citations of this agency's permits are written off (all or nothing,
replacing what an earlier version held). All accepted → CLEARED, saying what was written off
and what is left. A refusal → REJECTED when a cited permit forbids the use (another holder's,
other goods, more than is left) and DOCUMENTS_REQUIRED when a valid permit or a quantity is
missing (unknown, expired or not yet valid permit, no quantity): every problem is listed.
Routed as "required" but citing none of its permits → DOCUMENTS_REQUIRED for one; "may be
required" → NOT_CONCERNED. WITHDRAWAL: the submission's write-offs are given back; no answer.

Answers are timed at the request's `sent_at` (the single window's receipt time), the time
validity is judged at, so a re-delivered request gets the same answer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from broker.core.messages import (
    AgencyRequest,
    AgencyResponse,
    AgencyStatus,
    DocumentRequest,
    RequestKind,
    Requirement,
)
from broker.core.permits import PermitLedger, Settlement, citations, holder_of
from connectors.permits.config import PermitConfig

__all__ = ["PermitAnswer", "settle"]


@dataclass(frozen=True, slots=True)
class PermitAnswer:
    settlement: Settlement
    responses: tuple[AgencyResponse, ...] = field(default=())


def settle(ledger: PermitLedger, request: AgencyRequest, config: PermitConfig) -> PermitAnswer:
    """Apply one request to the ledger (mutating it) and build the agency's answer."""
    if request.kind is RequestKind.WITHDRAWAL:
        reason = request.withdrawal_reason or f"version {request.version} withdrawn"
        return PermitAnswer(
            ledger.settle_withdrawal(
                submission_id=request.submission_id,
                version=request.version,
                reason=reason,
                at=request.sent_at,
            )
        )
    package = request.package
    if package is None:
        raise ValueError("a review request carries a package")
    holder = holder_of(package)
    cited = citations(package, config.type_codes)
    settlement = ledger.settle_review(
        cited,
        holder_id=holder.identifier if holder is not None else None,
        submission_id=request.submission_id,
        version=request.version,
        at=request.sent_at,
    )
    if settlement.superseded:
        return PermitAnswer(settlement)  # a newer version already counts; nothing to say
    return PermitAnswer(settlement, (_answer(request, settlement, bool(cited), config),))


def _answer(
    request: AgencyRequest, settlement: Settlement, cited: bool, config: PermitConfig
) -> AgencyResponse:
    base: dict[str, Any] = {
        "submission_id": request.submission_id,
        "version": request.version,
        "agency": request.agency,
        "answered_at": request.sent_at,
        "sequence": 1,
    }
    deadline = request.sent_at + timedelta(hours=config.documents_deadline_h)
    if not cited:
        if request.requirement is Requirement.MAY_BE_REQUIRED:
            return AgencyResponse(
                **base,
                status=AgencyStatus.NOT_CONCERNED,
                reasons=("no permit of this agency is cited and none is required for these goods",),
            )
        code, description = config.permit_types[0]
        return AgencyResponse(
            **base,
            status=AgencyStatus.DOCUMENTS_REQUIRED,
            reasons=(f"{description} ({code}) not cited in the declaration",),
            documents_required=(
                DocumentRequest(type_code=code, description=description, deadline=deadline),
            ),
        )
    if settlement.refusals:
        reasons = tuple(
            f"{refusal.problem.value}: {refusal.message}" for refusal in settlement.refusals
        )
        if any(refusal.problem.rejects for refusal in settlement.refusals):
            return AgencyResponse(**base, status=AgencyStatus.REJECTED, reasons=reasons)
        documents = tuple(
            DocumentRequest(
                type_code=refusal.citation.type_code, description=refusal.message, deadline=deadline
            )
            for refusal in settlement.refusals
        )
        return AgencyResponse(
            **base,
            status=AgencyStatus.DOCUMENTS_REQUIRED,
            reasons=reasons,
            documents_required=documents,
        )
    return AgencyResponse(
        **base,
        status=AgencyStatus.CLEARED,
        reasons=tuple(write_off.explain() for write_off in settlement.written_off),
    )

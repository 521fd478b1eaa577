"""The simulated agency's decisions, pure: a request (and a profile) in, answers out.

Rule-driven first (a veterinary service without its health certificate asks for it, an agency
routed as "may be required" often disclaims), then random in realistic proportions. Seeded by
the request, so the same request always gets the same answer: a re-delivered request gives a
duplicate the aggregator ignores.
"""

from __future__ import annotations

import hashlib
import random
from datetime import datetime, timedelta
from typing import Any

from broker.core.messages import (
    AgencyRequest,
    AgencyResponse,
    AgencyStatus,
    DocumentRequest,
    Requirement,
)
from connectors.simulated.config import CONDITIONS, EXPECTED_DOCUMENTS, SimulationProfile

__all__ = ["decide", "followup"]


def _rng(request: AgencyRequest, seed: int, salt: str = "") -> random.Random:
    key = f"{seed}:{request.submission_id}:{request.version}:{request.agency}:{salt}"
    return random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))


def _cited(request: AgencyRequest) -> set[str]:
    package = request.package
    if package is None:
        return set()
    codes = {doc.type_code for doc in package.documents}
    for item in package.items:
        codes.update(doc.type_code for doc in item.documents)
    return codes


def decide(request: AgencyRequest, profile: SimulationProfile) -> AgencyResponse:
    """The agency's first answer to a review request."""
    rng = _rng(request, profile.seed)
    answered_at = request.sent_at + timedelta(seconds=profile.latency_s)
    base: dict[str, Any] = {
        "submission_id": request.submission_id,
        "version": request.version,
        "agency": request.agency,
        "answered_at": answered_at,
        "sequence": 1,
    }
    if request.requirement is Requirement.MAY_BE_REQUIRED and rng.random() < profile.disclaim_rate:
        return AgencyResponse(
            **base,
            status=AgencyStatus.NOT_CONCERNED,
            reasons=("goods outside this agency's control on inspection of the package",),
        )
    expected = EXPECTED_DOCUMENTS.get(request.agency)
    if expected is not None and expected[0] not in _cited(request):
        return _documents_required(base, expected)
    statuses = [status for status, _ in profile.proportions]
    weights = [weight for _, weight in profile.proportions]
    status = rng.choices(statuses, weights)[0]
    if status is AgencyStatus.DOCUMENTS_REQUIRED:
        return _documents_required(base, ("N935", "Invoice certified by the exporter"))
    reasons, conditions = _explain(request.agency, status)
    return AgencyResponse(**base, status=status, reasons=reasons, conditions=conditions)


def followup(
    request: AgencyRequest, first: AgencyResponse, profile: SimulationProfile
) -> AgencyResponse | None:
    """After an inspection or a hold, the agency's final word."""
    if first.status not in (AgencyStatus.INSPECTION, AgencyStatus.HOLD):
        return None
    rng = _rng(request, profile.seed, "followup")
    roll = rng.random()
    if roll < 0.85:
        status = AgencyStatus.CLEARED
    elif roll < 0.96:
        status = AgencyStatus.CLEARED_WITH_CONDITIONS
    else:
        status = AgencyStatus.REJECTED
    reasons, conditions = _explain(request.agency, status, after=first.status)
    return first.model_copy(
        update={
            "status": status,
            "sequence": first.sequence + 1,
            "answered_at": first.answered_at + timedelta(seconds=profile.followup_s),
            "reasons": reasons,
            "conditions": conditions,
            "documents_required": (),
        }
    )


def _documents_required(base: dict[str, Any], document: tuple[str, str]) -> AgencyResponse:
    code, description = document
    answered_at: datetime = base["answered_at"]
    deadline = answered_at + timedelta(days=2)
    return AgencyResponse(
        **base,
        status=AgencyStatus.DOCUMENTS_REQUIRED,
        reasons=(f"{description} ({code}) not cited in the declaration",),
        documents_required=(
            DocumentRequest(type_code=code, description=description, deadline=deadline),
        ),
    )


def _explain(
    agency: str, status: AgencyStatus, after: AgencyStatus | None = None
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    prefix = f"after {after.value.lower()}: " if after else ""
    match status:
        case AgencyStatus.CLEARED:
            return (f"{prefix}no objection",), ()
        case AgencyStatus.CLEARED_WITH_CONDITIONS:
            condition = CONDITIONS.get(agency, "Post-clearance audit within 90 days")
            return (f"{prefix}cleared subject to conditions",), (condition,)
        case AgencyStatus.INSPECTION:
            return ("selected for physical examination by risk profile",), ()
        case AgencyStatus.HOLD:
            return ("held pending intelligence review",), ()
        case AgencyStatus.REJECTED:
            return (f"{prefix}goods do not meet import requirements",), ()
        case _:
            return (), ()

"""The customs risk agency's answers, pure: a request in, a lane and its answers out.

Lanes map to statuses (DESIGN §5): green → CLEARED, blue → CLEARED_WITH_CONDITIONS (post-
clearance audit), yellow → DOCUMENTS_REQUIRED for the documents a documentary check needs (or
CLEARED once they are all cited, typically in the amendment that answers the request), red →
INSPECTION, followed by the examination's final answer. Every answer's `reasons` carry the
assessment's explanation: lane, score, the profiles that fired, AEO relief, random selection.
Seeded by the request, so a re-delivered request gets the same answers (duplicates).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from datetime import timedelta

from broker.core.messages import AgencyRequest, AgencyResponse, AgencyStatus, DocumentRequest
from broker.core.risk import Assessment, Lane, assess
from connectors.customs_risk.config import CustomsRiskConfig

__all__ = ["RiskAnswer", "decide", "examination_result"]


@dataclass(frozen=True, slots=True)
class RiskAnswer:
    assessment: Assessment
    first: AgencyResponse
    final: AgencyResponse | None  # the examination's result, published later (red lane)


def decide(request: AgencyRequest, config: CustomsRiskConfig) -> RiskAnswer:
    """Assess a review request; the first answer, and for the red lane the final one."""
    if request.package is None:
        raise ValueError("a review request carries a package")
    assessment = assess(
        request.package, config.policy, submission_id=request.submission_id, seed=config.seed
    )
    answered_at = request.sent_at + timedelta(seconds=config.latency_s)
    first = AgencyResponse(
        submission_id=request.submission_id,
        version=request.version,
        agency=request.agency,
        status=AgencyStatus.CLEARED,
        answered_at=answered_at,
        sequence=1,
        reasons=assessment.explain(),
    )
    match assessment.lane:
        case Lane.GREEN:
            return RiskAnswer(assessment, first, None)
        case Lane.BLUE:
            blue = first.model_copy(
                update={
                    "status": AgencyStatus.CLEARED_WITH_CONDITIONS,
                    "conditions": (config.policy.post_clearance_condition,),
                }
            )
            return RiskAnswer(assessment, blue, None)
        case Lane.YELLOW:
            checked = _documentary_check(request, first, assessment, config)
            return RiskAnswer(assessment, checked, None)
        case Lane.RED:
            inspection = first.model_copy(update={"status": AgencyStatus.INSPECTION})
            final = examination_result(request, inspection, config)
            return RiskAnswer(assessment, inspection, final)


def _documentary_check(
    request: AgencyRequest, first: AgencyResponse, assessment: Assessment, config: CustomsRiskConfig
) -> AgencyResponse:
    """Ask for the documents not cited yet; once all are cited, the check is passed."""
    assert request.package is not None
    cited = {doc.type_code for doc in request.package.documents}
    cited.update(doc.type_code for item in request.package.items for doc in item.documents)
    missing = [doc for doc in assessment.documents if doc.type_code not in cited]
    if not missing:
        codes = ", ".join(doc.type_code for doc in assessment.documents)
        return first.model_copy(
            update={"reasons": (*first.reasons, f"documentary check passed: {codes} cited")}
        )
    deadline = first.answered_at + timedelta(hours=config.documents_deadline_h)
    return first.model_copy(
        update={
            "status": AgencyStatus.DOCUMENTS_REQUIRED,
            "documents_required": tuple(
                DocumentRequest(type_code=d.type_code, description=d.description, deadline=deadline)
                for d in missing
            ),
        }
    )


def examination_result(
    request: AgencyRequest, inspection: AgencyResponse, config: CustomsRiskConfig
) -> AgencyResponse:
    """The final answer after a red-lane examination (seed + submission + version)."""
    key = f"{config.seed}\x1fexamination\x1f{request.submission_id}\x1f{request.version}"
    rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    statuses = [status for status, _ in config.inspection_outcomes]
    weights = [weight for _, weight in config.inspection_outcomes]
    status = rng.choices(statuses, weights)[0]
    found = {
        AgencyStatus.CLEARED: "examination: goods match the declaration",
        AgencyStatus.CLEARED_WITH_CONDITIONS: "examination: minor discrepancy, released subject "
        "to a corrected declaration within 10 days",
        AgencyStatus.REJECTED: "examination: goods do not match the declaration "
        "(description, quantity or origin)",
    }.get(status, f"examination: {status.value.lower()}")
    conditions: tuple[str, ...] = ()
    if status is AgencyStatus.CLEARED_WITH_CONDITIONS:
        conditions = ("Lodge a corrected declaration within 10 days",)
    return inspection.model_copy(
        update={
            "status": status,
            "sequence": inspection.sequence + 1,
            "answered_at": inspection.answered_at + timedelta(seconds=config.inspection_s),
            "reasons": (found, *inspection.reasons),
            "conditions": conditions,
        }
    )

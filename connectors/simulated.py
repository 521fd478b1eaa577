"""Simulated border agencies for the demo, the tests and the benchmark.

Rule-driven first (a veterinary service without its health certificate asks for it, an agency
routed as "may be required" often disclaims), then random in realistic proportions: most
answers clear, some add conditions, ask for documents or inspect, a few hold or reject.
Deterministic under a seed: the same request always gets the same answer (so a re-delivered
request gives a duplicate the aggregator ignores). Inspections and holds are followed by a
final answer after `followup_s`.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from broker.core.messages import (
    AgencyRequest,
    AgencyResponse,
    AgencyStatus,
    DocumentRequest,
    RequestKind,
    Requirement,
)
from connectors.sdk import AgencyConnector, Handler

#: Builds the connector for an agency around a handler (the composition root provides it).
ConnectorFactory = Callable[[str, Handler], AgencyConnector]

#: The certificate each agency expects to see cited (EU TARIC document codes).
EXPECTED_DOCUMENTS: dict[str, tuple[str, str]] = {
    "veterinary": ("N853", "Common Health Entry Document for animal products (CHED-P)"),
    "plant": ("N851", "Phytosanitary certificate"),
    "wildlife": ("C400", "CITES permit"),
    "strategic": ("X002", "Dual-use export authorisation"),
    "police": ("C079", "Firearms import licence / end-user certificate"),
}

#: (status, weight) for an agency's first answer once its rules are satisfied.
PROPORTIONS: tuple[tuple[AgencyStatus, float], ...] = (
    (AgencyStatus.CLEARED, 0.80),
    (AgencyStatus.CLEARED_WITH_CONDITIONS, 0.08),
    (AgencyStatus.DOCUMENTS_REQUIRED, 0.03),
    (AgencyStatus.INSPECTION, 0.06),
    (AgencyStatus.HOLD, 0.02),
    (AgencyStatus.REJECTED, 0.01),
)

_CONDITIONS = {
    "veterinary": "Keep under cold chain below -18 °C to the approved store",
    "plant": "Fumigate at the border inspection post before release",
    "food": "Release to bonded store pending laboratory sample results",
    "standards": "Affix conformity marking before sale",
    "environment": "Quantity counts against the importer's annual quota",
    "excise": "Release under excise duty suspension to the tax warehouse",
}


@dataclass(frozen=True, slots=True)
class SimulationProfile:
    seed: int = 7
    latency_s: float = 0.0  # how long the agency "thinks" before its first answer
    followup_s: float = 0.0  # how long an inspection or a hold takes
    disclaim_rate: float = 0.5  # share of "may be required" routes answered NOT_CONCERNED
    proportions: tuple[tuple[AgencyStatus, float], ...] = PROPORTIONS


class SimulatedAgency:
    """Answers one agency's requests. `run` owns the connector and the follow-up tasks."""

    def __init__(
        self,
        agency: str,
        connector_factory: ConnectorFactory,
        profile: SimulationProfile = SimulationProfile(),
    ) -> None:
        self.agency = agency
        self.profile = profile
        self.connector = connector_factory(agency, self.answer)
        self._followups: asyncio.TaskGroup | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as followups:
            self._followups = followups
            await self.connector.run(stopping)

    async def answer(self, request: AgencyRequest) -> Sequence[AgencyResponse]:
        if request.kind is RequestKind.WITHDRAWAL:
            return []
        if self.profile.latency_s:
            await asyncio.sleep(self.profile.latency_s)
        first = decide(request, self.profile)
        follow = followup(request, first, self.profile)
        if follow is not None and self._followups is not None:
            self._followups.create_task(self._publish_later(follow))
        return [first]

    async def _publish_later(self, response: AgencyResponse) -> None:
        await asyncio.sleep(self.profile.followup_s)
        await self.connector.publish([response])


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
            condition = _CONDITIONS.get(agency, "Post-clearance audit within 90 days")
            return (f"{prefix}cleared subject to conditions",), (condition,)
        case AgencyStatus.INSPECTION:
            return ("selected for physical examination by risk profile",), ()
        case AgencyStatus.HOLD:
            return ("held pending intelligence review",), ()
        case AgencyStatus.REJECTED:
            return (f"{prefix}goods do not meet import requirements",), ()
        case _:
            return (), ()

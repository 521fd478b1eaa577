"""What the HTTP API answers: its own models, so the wire records (Avro) can evolve apart from
the trader-facing JSON. Every model carries examples for /openapi.json."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

from broker.core.declaration import Timestamp
from broker.core.messages import (
    AgencyDecision,
    Decision,
    JointInspection,
    Outcome,
    RequiredDocument,
    SubmissionKind,
)

SUBMISSION_ID_EXAMPLE = "sub-3f1c9a52b0e74d8a61c2f0aa"
_STATUS_URL_EXAMPLE = f"/v1/submissions/{SUBMISSION_ID_EXAMPLE}"


def status_url(submission_id: str) -> str:
    return f"/v1/submissions/{submission_id}"


class View(BaseModel):
    model_config = ConfigDict(frozen=True)


class SubmissionAccepted(View):
    """The broker acknowledged the write (acks=all); follow `status_url` for the decision."""

    submission_id: str = Field(examples=[SUBMISSION_ID_EXAMPLE])
    version: int = Field(ge=1, examples=[1])
    kind: SubmissionKind = Field(examples=[SubmissionKind.NEW])
    status_url: str = Field(examples=[_STATUS_URL_EXAMPLE])


class DecisionView(View):
    """The coordinated decision for one version (DESIGN §5): worst outcome over the agencies
    concerned, each agency's status with reasons, conditions and answer time."""

    decision_id: str = Field(
        description="changes with every re-issued decision; the SSE and webhook event id",
        examples=["9b0f4c1de2a3b4c5d6e7f8a9b0c1d2e3"],
    )
    version: int = Field(ge=1, examples=[1])
    outcome: Outcome = Field(examples=[Outcome.DOCUMENTS_REQUIRED])
    final: bool = Field(examples=[False])
    decided_at: datetime
    agencies: tuple[AgencyDecision, ...] = ()
    joint_inspection: JointInspection | None = None
    documents_required: tuple[RequiredDocument, ...] = ()
    release_on_arrival: bool = Field(
        default=False,
        description="lodged before the goods arrived and not arrived yet: the release takes "
        "effect once you POST the arrival (or the terminal reports it)",
    )
    arrived_at: datetime | None = Field(
        default=None, description="when the goods arrived (pre-arrival declarations)"
    )
    submitted_by: str | None = Field(
        default=None, description="who lodged the version decided on, as authenticated"
    )
    received_at: datetime | None = Field(
        default=None, description="when the single window received the version decided on"
    )
    payload_sha256: str | None = Field(
        default=None, description="SHA-256 of the body of the version decided on, as received"
    )
    shared_with: str | None = Field(
        default=None,
        description="the partner country's single window this export is shared with once "
        "released (Globally Networked Customs)",
    )

    @classmethod
    def of(cls, decision: Decision) -> DecisionView:
        return cls(
            decision_id=decision.decision_id,
            version=decision.version,
            outcome=decision.outcome,
            final=decision.final,
            decided_at=decision.decided_at,
            agencies=decision.agencies,
            joint_inspection=decision.joint_inspection,
            documents_required=decision.documents_required,
            release_on_arrival=decision.release_on_arrival,
            arrived_at=decision.arrived_at,
            submitted_by=decision.submitted_by,
            received_at=decision.received_at,
            payload_sha256=decision.payload_sha256,
            shared_with=decision.shared_with,
        )


class VersionView(View):
    """One version as the single window received it, and where the router sent it."""

    version: int = Field(ge=1, examples=[1])
    kind: SubmissionKind | None = Field(default=None, examples=[SubmissionKind.NEW])
    received_at: datetime | None = None
    payload_sha256: str | None = Field(default=None, description="SHA-256 of the body as sent")
    submitted_by: str | None = Field(default=None, description="who sent it, as authenticated")
    routed_at: datetime | None = None
    agencies: tuple[str, ...] = Field(default=(), examples=[("customs", "veterinary", "food")])


class SubmissionView(View):
    """A submission: its current decision, whether it may still change, and its history."""

    submission_id: str = Field(examples=[SUBMISSION_ID_EXAMPLE])
    lrn: str | None = Field(default=None, examples=["BEEF-2026-0042"])
    version: int = Field(ge=1, description="latest version accepted", examples=[2])
    cancelled: bool = False
    changes_allowed: bool = Field(description="whether PUT and DELETE are still accepted")
    changes_refused_because: str | None = Field(
        default=None, examples=["version 2 has a final decision (RELEASED)"]
    )
    decision: DecisionView | None = Field(
        default=None, description="the latest decision; null until the first one is issued"
    )
    versions: tuple[VersionView, ...] = ()
    arrived_at: datetime | None = Field(
        default=None, description="when the goods arrived, once an arrival notice was accepted"
    )
    status_url: str = Field(examples=[_STATUS_URL_EXAMPLE])
    events_url: str = Field(examples=[_STATUS_URL_EXAMPLE + "/events"])
    arrival_url: str = Field(
        examples=[_STATUS_URL_EXAMPLE + "/arrival"],
        description="POST here when the goods of a declaration lodged before arrival arrive",
    )


class ArrivalRequest(BaseModel):
    """The goods arrived. Without `arrived_at`, they arrived when the gateway received this."""

    model_config = ConfigDict(extra="forbid")

    arrived_at: Timestamp | None = Field(
        default=None,
        description="when the goods arrived, with a time zone; not in the future",
        examples=["2026-12-02T06:10:00Z"],
    )
    means_id: str | None = Field(
        default=None,
        min_length=1,
        max_length=35,
        description="the means of transport that arrived (vessel IMO, flight, plate)",
        examples=["IMO9321483"],
    )


class ArrivalAccepted(View):
    """The arrival is recorded (acks=all); the decision is re-issued with `arrived_at`."""

    submission_id: str = Field(examples=[SUBMISSION_ID_EXAMPLE])
    arrived_at: datetime
    received_at: datetime
    status_url: str = Field(examples=[_STATUS_URL_EXAMPLE])


class WebhookRequest(BaseModel):
    """Where to POST each decision change of your submissions."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        min_length=8,
        max_length=2000,
        pattern=r"^https?://[^\s]+$",
        examples=["https://erp.example.com/swb/decisions"],
    )


class WebhookView(View):
    webhook_id: str = Field(examples=["wh-5d1e0c7a9b3f"])
    url: str = Field(examples=["https://erp.example.com/swb/decisions"])
    created_at: datetime


class WebhookCreated(WebhookView):
    """Shown once: keep `secret` to verify the `Swb-Signature` header of each delivery."""

    secret: str = Field(examples=["whsec_2n9X4kq0S1l7nWc3bA8yFq"])


class Health(View):
    status: str = Field(examples=["ok"])
    checks: dict[str, bool] = Field(default_factory=dict, examples=[{"broker": True}])


def json_bytes(model: BaseModel) -> bytes:
    """The one serialisation of an answer, so a replayed answer is byte-identical."""
    return model.model_dump_json().encode()

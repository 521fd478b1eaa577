"""What the HTTP API answers: its own models, so the wire records (Avro) can evolve apart from
the trader-facing JSON. Every model carries examples for /openapi.json."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict, Field

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
        )


class VersionView(View):
    """One version as the single window received it, and where the router sent it."""

    version: int = Field(ge=1, examples=[1])
    kind: SubmissionKind | None = Field(default=None, examples=[SubmissionKind.NEW])
    received_at: datetime | None = None
    payload_sha256: str | None = Field(default=None, description="SHA-256 of the body as sent")
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
    status_url: str = Field(examples=[_STATUS_URL_EXAMPLE])
    events_url: str = Field(examples=[_STATUS_URL_EXAMPLE + "/events"])


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

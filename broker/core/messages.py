"""The records that travel on the topics (DESIGN §3-5), one model per Avro schema in `schemas/`.

Field names, types and enum symbols match `schemas/swb.v1.*.avsc` exactly; a property test
round-trips every model through the Avro codec to keep them in step.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import Field, model_validator

from broker.core.declaration import (
    AdditionalDocument,
    Declaration,
    DeclarationType,
    GoodsItem,
    Invoice,
    Party,
    Quantity,
    Strict,
    Timestamp,
    Transport,
)
from broker.core.reference import MAX_GOODS_ITEMS

AgencyCode = str  # lower-case code such as "food"; the topic name carries it (DESIGN §3)

AGENCY_CODES: tuple[str, ...] = (
    "customs",
    "veterinary",
    "plant",
    "food",
    "medicines",
    "standards",
    "police",
    "environment",
    "wildlife",
    "radiation",
    "strategic",
    "excise",
)


class SubmissionKind(StrEnum):
    NEW = "NEW"
    AMENDMENT = "AMENDMENT"
    CANCELLATION = "CANCELLATION"


class Requirement(StrEnum):
    """US ACE tariff flags: R (required) and M (may be required, can be disclaimed)."""

    REQUIRED = "REQUIRED"
    MAY_BE_REQUIRED = "MAY_BE_REQUIRED"


class RequestKind(StrEnum):
    REVIEW = "REVIEW"
    WITHDRAWAL = "WITHDRAWAL"


class AgencyStatus(StrEnum):
    """What an agency may answer (DESIGN §5)."""

    CLEARED = "CLEARED"
    CLEARED_WITH_CONDITIONS = "CLEARED_WITH_CONDITIONS"
    DOCUMENTS_REQUIRED = "DOCUMENTS_REQUIRED"
    INSPECTION = "INSPECTION"
    HOLD = "HOLD"
    REJECTED = "REJECTED"
    NOT_CONCERNED = "NOT_CONCERNED"


TERMINAL_STATUSES = frozenset(
    {
        AgencyStatus.CLEARED,
        AgencyStatus.CLEARED_WITH_CONDITIONS,
        AgencyStatus.REJECTED,
        AgencyStatus.NOT_CONCERNED,
    }
)


class AgencyState(StrEnum):
    """An agency's place in a decision: its last answer, or PENDING / OVERDUE."""

    PENDING = "PENDING"
    OVERDUE = "OVERDUE"
    CLEARED = "CLEARED"
    CLEARED_WITH_CONDITIONS = "CLEARED_WITH_CONDITIONS"
    DOCUMENTS_REQUIRED = "DOCUMENTS_REQUIRED"
    INSPECTION = "INSPECTION"
    HOLD = "HOLD"
    REJECTED = "REJECTED"
    NOT_CONCERNED = "NOT_CONCERNED"


class Outcome(StrEnum):
    """The coordinated outcome, worst over the agencies concerned (DESIGN §5)."""

    RELEASED = "RELEASED"
    RELEASED_WITH_CONDITIONS = "RELEASED_WITH_CONDITIONS"
    PENDING = "PENDING"
    DOCUMENTS_REQUIRED = "DOCUMENTS_REQUIRED"
    INSPECTION = "INSPECTION"
    HOLD = "HOLD"
    REJECTED = "REJECTED"
    CANCELLED = "CANCELLED"


class Submission(Strict):
    """What a trader lodges: a new declaration, an amendment, or a cancellation."""

    submission_id: str = Field(min_length=1, max_length=80)
    version: int = Field(ge=1)
    kind: SubmissionKind
    trader_id: str = Field(min_length=1, max_length=80)
    channel: str = Field(min_length=1, max_length=20)
    received_at: Timestamp
    payload_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    declaration: Declaration | None = None
    reason: str | None = Field(default=None, max_length=512)
    # Non-repudiation: who the single window authenticated (the gateway's API-key trader).
    submitted_by: str | None = Field(default=None, max_length=80)

    @model_validator(mode="after")
    def _declaration_matches_kind(self) -> Self:
        if self.kind is SubmissionKind.CANCELLATION:
            if self.declaration is not None:
                raise ValueError("declaration: a cancellation carries no declaration")
        elif self.declaration is None:
            raise ValueError(f"declaration: required for a {self.kind.value} submission")
        if self.kind is SubmissionKind.NEW and self.version != 1:
            raise ValueError(f"version: a NEW submission is version 1, not {self.version}")
        return self


class PartnerLinkStatus(StrEnum):
    """Whether a partner's export data was found for an import's UCR (Globally Networked
    Customs)."""

    LINKED = "LINKED"
    NOT_RECEIVED = "NOT_RECEIVED"
    NO_EXCHANGE = "NO_EXCHANGE"


class PartnerExport(Strict):
    """One consignment's export data, shared by the exporting single window with the
    destination's once the export is finally released; keyed by the UCR on the wire."""

    ucr: str
    export_country: str
    destination_country: str
    export_reference: str
    version: int = Field(ge=1)
    customs_office: str
    exporter: Party | None = None
    importer: Party | None = None
    transport: Transport
    invoice: Invoice
    items: tuple[GoodsItem, ...]
    outcome: Outcome
    released_at: Timestamp
    decision_id: str


class PartnerMismatch(Strict):
    """One point where an import declaration disagrees with its partner's export data."""

    subject: str
    exported: str | None = None
    declared: str | None = None
    detail: str


class PartnerLink(Strict):
    """What customs' package says about the partner's export data for the import's UCR."""

    ucr: str
    partner_country: str
    status: PartnerLinkStatus
    export: PartnerExport | None = None
    mismatches: tuple[PartnerMismatch, ...] = ()
    note: str


class InformationPackage(Strict):
    """The part of a declaration one agency receives ("My Information Package").

    Header identity is always there; the rest is present only where the agency's rules include
    it, and `items` holds only the goods items that concern the agency."""

    lrn: str
    type: DeclarationType
    procedure_code: str
    issued_at: Timestamp
    customs_office: str
    declarant: Party | None = None
    importer: Party | None = None
    exporter: Party | None = None
    transport: Transport | None = None
    export_country: str | None = None
    destination_country: str | None = None
    invoice: Invoice | None = None
    items: tuple[GoodsItem, ...] = ()
    documents: tuple[AdditionalDocument, ...] = ()
    ucr: str | None = None
    partner: PartnerLink | None = None  # customs' package of an import quoting a UCR only


class AgencyRequest(Strict):
    """Asks one agency to review its package for one version, or withdraws that request."""

    request_id: str
    submission_id: str
    version: int = Field(ge=1)
    agency: AgencyCode
    kind: RequestKind
    requirement: Requirement
    reasons: tuple[str, ...] = ()
    deadline: Timestamp
    sent_at: Timestamp
    package: InformationPackage | None = None
    withdrawal_reason: str | None = None


class DocumentRequest(Strict):
    """A document an agency asks for before it decides."""

    type_code: str
    description: str
    deadline: Timestamp | None = None


class AgencyResponse(Strict):
    """One agency's answer to one version of a submission."""

    submission_id: str
    version: int = Field(ge=1)
    agency: AgencyCode
    status: AgencyStatus
    answered_at: Timestamp
    sequence: int = Field(ge=0, description="the agency's own answer counter")
    reasons: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    documents_required: tuple[DocumentRequest, ...] = ()


class AgencyRoute(Strict):
    """Why one agency must see a submission, by when, and which items it gets."""

    agency: AgencyCode
    requirement: Requirement
    reasons: tuple[str, ...]
    deadline: Timestamp
    item_sequences: tuple[Annotated[int, Field(ge=1, le=MAX_GOODS_ITEMS)], ...]


class RoutingPlan(Strict):
    """The router's verdict for one version: the agencies concerned (empty on cancellation)."""

    submission_id: str
    version: int = Field(ge=1)
    kind: SubmissionKind
    trader_id: str
    planned_at: Timestamp
    payload_sha256: str
    agencies: tuple[AgencyRoute, ...] = ()
    # Audit: who lodged the version and when, copied from the Submission into the decision.
    submitted_by: str | None = None
    received_at: Timestamp | None = None
    pre_arrival: bool = False  # lodged before the goods arrived: release takes effect on arrival
    shared_with: str | None = None  # partner country the export is shared with once released


class AgencyDecision(Strict):
    """One agency's line in the coordinated decision."""

    agency: AgencyCode
    requirement: Requirement
    status: AgencyState
    reasons: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    answered_at: Timestamp | None = None
    deadline: Timestamp


class RequiredDocument(Strict):
    agency: AgencyCode
    type_code: str
    description: str
    deadline: Timestamp | None = None


class JointInspection(Strict):
    """RKC Standard 3.35: one inspection, held together by every agency that asked for one."""

    agencies: tuple[AgencyCode, ...]


class Decision(Strict):
    """The one coordinated answer the trader follows, re-issued on every change."""

    decision_id: str
    submission_id: str
    version: int = Field(ge=1)
    trader_id: str
    outcome: Outcome
    final: bool
    decided_at: Timestamp
    payload_sha256: str
    agencies: tuple[AgencyDecision, ...] = ()
    joint_inspection: JointInspection | None = None
    documents_required: tuple[RequiredDocument, ...] = ()
    submitted_by: str | None = None
    received_at: Timestamp | None = None
    release_on_arrival: bool = False
    arrived_at: Timestamp | None = None
    shared_with: str | None = None


class ArrivalNotice(Strict):
    """The goods of a submission lodged before arrival have arrived: its release takes effect."""

    submission_id: str = Field(min_length=1, max_length=80)
    trader_id: str = Field(min_length=1, max_length=80)
    arrived_at: Timestamp
    received_at: Timestamp
    channel: str = Field(min_length=1, max_length=20)
    submitted_by: str | None = Field(default=None, max_length=80)
    means_id: str | None = Field(default=None, max_length=35)


class PermitUsage(Strict):
    """One write-off of a permit by one goods item of one version of a submission (UK DE 2/3,
    EU CSW-CERTEX). Released (given back) when the version is amended, cancelled or withdrawn;
    kept as released so a re-delivered request cannot write it off twice."""

    submission_id: str
    version: int = Field(ge=1)
    item_sequence: int = Field(ge=1, le=MAX_GOODS_ITEMS)
    quantity: Quantity
    written_off_at: Timestamp
    released_at: Timestamp | None = None
    release_reason: str | None = None


class Permit(Strict):
    """A licence, permit or certificate with a quantity (LPCO), as its issuing agency keeps it:
    the permit itself and every write-off against it. The last record per permit id on the
    permits topic is the permit's current state."""

    permit_id: str = Field(min_length=1, max_length=35)
    type_code: str = Field(pattern=r"^[A-Z0-9]{4}$")
    issuing_agency: AgencyCode
    holder_id: str = Field(min_length=2, max_length=35)
    hs_prefixes: tuple[str, ...] = Field(min_length=1)
    unit: str = Field(min_length=1, max_length=8)
    total_quantity: Quantity
    valid_from: Timestamp
    valid_to: Timestamp
    issued_at: Timestamp
    usages: tuple[PermitUsage, ...] = ()

    @model_validator(mode="after")
    def _valid_period(self) -> Self:
        if self.valid_to <= self.valid_from:
            raise ValueError(f"valid_to {self.valid_to} is not after valid_from {self.valid_from}")
        return self

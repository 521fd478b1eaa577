"""The permit ledger (LPCO with quantities), sans I/O: issue, write off, release.

A licence, permit or certificate often authorises a quantity that several consignments use up
(UK DE 2/3 says whether an item uses a permit entirely or partly; the EU's CSW-CERTEX writes
quantities off automatically and gives them back when a declaration is invalidated). The
issuing agency owns its permits and is the only writer of their balances.

The ledger holds each permit as its wire record (`Permit`, with every write-off in `usages`),
so the state to persist after a change is simply the changed permits: the permits topic keeps
the last record per permit id, and replaying it restores the ledger exactly.

Rules, all deterministic given the request's time (the single window's receipt time, not the
trader's own date):

- write-offs are idempotent by (permit, submission, version, item): a write-off already on
  the ledger, active or released, is never applied again, so a re-delivered request after a
  crash changes nothing and gets the same answer;
- a review of version n first releases what versions < n of the submission hold (an amendment
  replaces the old write-off), then writes off version n's citations *all or nothing*: if any
  citation is refused, none of version n's write-offs stay;
- a withdrawal of version n (amended away from this agency, cancelled, rejected elsewhere)
  releases everything versions <= n hold;
- the balance never goes below zero: a write-off above what is left is refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from enum import StrEnum

from broker.core.declaration import DeclarationType, GoodsItem, Party
from broker.core.messages import InformationPackage, Permit, PermitUsage

__all__ = [
    "REJECTING",
    "Citation",
    "PermitLedger",
    "Problem",
    "Refusal",
    "Release",
    "Settlement",
    "WriteOff",
    "amount",
    "citations",
    "holder_of",
    "remaining",
]

#: Net mass in kilograms (UN/ECE Rec. 20): the unit whose quantity an item always states.
KILOGRAMS = "KGM"


class Problem(StrEnum):
    """Why a citation cannot write a permit off."""

    UNKNOWN = "unknown"  # no permit of this agency has this id
    NOT_YET_VALID = "not-yet-valid"
    EXPIRED = "expired"
    NO_QUANTITY = "no-quantity"  # the item states no quantity in the permit's unit
    FOREIGN = "foreign"  # the permit belongs to another trader
    OTHER_GOODS = "other-goods"  # the permit does not cover the item's HS code
    OVERUSE = "overuse"  # more than the balance left

    @property
    def rejects(self) -> bool:
        return self in REJECTING


#: Problems that reject the declaration. The cited permit exists but cannot authorise these
#: goods for this trader (another holder's permit, other goods, more than is left): that is
#: not a missing document but a use the permit forbids, so the answer is REJECTED. The others
#: (unknown id, outside the validity period, no quantity stated) are put right by citing a
#: valid permit or the quantity in an amendment: DOCUMENTS_REQUIRED.
REJECTING = frozenset({Problem.FOREIGN, Problem.OTHER_GOODS, Problem.OVERUSE})


@dataclass(frozen=True, slots=True)
class Citation:
    """A goods item citing a permit: the quantity is what it writes off (None: not stated and
    not derivable from the item in the permit's unit, decided once the permit is known)."""

    permit_id: str
    type_code: str
    item_sequence: int
    hs_code: str
    quantity_used: Decimal | None
    net_mass_kg: Decimal
    supplementary_quantity: Decimal | None
    supplementary_unit: str | None
    on_header: bool = False

    def quantity_in(self, unit: str) -> Decimal | None:
        """The quantity to write off in `unit`: as declared, else derived from the item."""
        if self.quantity_used is not None:
            return self.quantity_used
        if unit == KILOGRAMS:
            return self.net_mass_kg
        if self.supplementary_unit == unit:
            return self.supplementary_quantity
        return None

    @property
    def where(self) -> str:
        cited = "the header" if self.on_header else f"item {self.item_sequence}"
        return f"permit {self.permit_id} ({self.type_code}) cited on {cited}"


@dataclass(frozen=True, slots=True)
class Refusal:
    citation: Citation
    problem: Problem
    message: str


@dataclass(frozen=True, slots=True)
class WriteOff:
    citation: Citation
    quantity: Decimal
    unit: str
    left: Decimal
    total: Decimal
    repeated: bool  # already on the ledger (a re-delivered request): nothing changed

    def explain(self) -> str:
        return (
            f"permit {self.citation.permit_id} ({self.citation.type_code}): item "
            f"{self.citation.item_sequence} writes off {amount(self.quantity)} {self.unit}; "
            f"{amount(self.left)} of {amount(self.total)} {self.unit} left"
        )


@dataclass(frozen=True, slots=True)
class Release:
    permit_id: str
    usage: PermitUsage  # as released


@dataclass
class Settlement:
    """What one request did to the ledger, and what the answer must say."""

    written_off: list[WriteOff] = field(default_factory=list)
    refusals: list[Refusal] = field(default_factory=list)
    released: list[Release] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # permit ids to persist
    superseded: bool = False  # the request is for a version older than one already settled

    @property
    def accepted(self) -> bool:
        return not self.refusals


def amount(quantity: Decimal) -> str:
    """A quantity as people write it: 90, 4.5 (the wire keeps three decimals: 90.000)."""
    return f"{quantity.normalize():f}"


def remaining(permit: Permit) -> Decimal:
    """What is left: the total minus every write-off not released."""
    used = sum((u.quantity for u in permit.usages if u.released_at is None), Decimal(0))
    return permit.total_quantity - used


def holder_of(package: InformationPackage) -> Party | None:
    """The trader a permit must belong to: the importer on import, the exporter on export, the
    declarant otherwise (the transit principal) or when that party is not in the package."""
    match package.type:
        case DeclarationType.IMPORT:
            party = package.importer
        case DeclarationType.EXPORT:
            party = package.exporter
        case _:
            party = None
    return party or package.declarant


def citations(package: InformationPackage, type_codes: Iterable[str]) -> list[Citation]:
    """The package's citations of permits of these types. An item citation writes off its
    `quantity_used` (or the item's quantity in the permit's unit); a header citation counts for
    every item of the package, each writing off its own quantity (routing rules treat header
    documents the same way)."""
    types = set(type_codes)
    found: list[Citation] = []
    header = [doc for doc in package.documents if doc.type_code in types]
    for item in package.items:
        for doc in item.documents:
            if doc.type_code in types:
                found.append(_citation(doc.id, doc.type_code, item, doc.quantity_used, False))
        for doc in header:
            if not any(d.id == doc.id for d in item.documents):
                found.append(_citation(doc.id, doc.type_code, item, None, True))
    return found


def _citation(
    permit_id: str, type_code: str, item: GoodsItem, quantity: Decimal | None, on_header: bool
) -> Citation:
    return Citation(
        permit_id=permit_id,
        type_code=type_code,
        item_sequence=item.sequence,
        hs_code=item.hs_code,
        quantity_used=quantity,
        net_mass_kg=item.net_mass_kg,
        supplementary_quantity=item.supplementary_quantity,
        supplementary_unit=item.supplementary_unit,
        on_header=on_header,
    )


_UsageKey = tuple[str, int, int]  # submission, version, item


class PermitLedger:
    """One agency's permits and their write-offs. Pure and in memory; its owner persists the
    permits `Settlement.changed` names and restores them with `restore`."""

    def __init__(self, permits: Iterable[Permit] = ()) -> None:
        self._permits: dict[str, Permit] = {}
        # Indexes over the usages: which permits a submission used, and its latest version.
        self._held_by: dict[str, set[str]] = {}
        self._latest: dict[str, int] = {}
        for permit in permits:
            self.restore(permit)

    # --- state ---------------------------------------------------------------------------

    def get(self, permit_id: str) -> Permit | None:
        return self._permits.get(permit_id)

    def permits(self) -> tuple[Permit, ...]:
        return tuple(self._permits[key] for key in sorted(self._permits))

    def remaining(self, permit_id: str) -> Decimal:
        return remaining(self._permits[permit_id])

    def copy(self) -> PermitLedger:
        """A snapshot to roll back to (permits are immutable, so a shallow copy suffices)."""
        twin = PermitLedger()
        twin._permits = dict(self._permits)
        twin._held_by = {key: set(ids) for key, ids in self._held_by.items()}
        twin._latest = dict(self._latest)
        return twin

    def restore(self, permit: Permit) -> None:
        """Adopt a persisted permit as is (the last record per permit id wins)."""
        self._permits[permit.permit_id] = permit
        for usage in permit.usages:
            self._index(permit.permit_id, usage)

    def latest_version(self, submission_id: str) -> int:
        """The newest version of the submission that wrote anything off here (0: none)."""
        return self._latest.get(submission_id, 0)

    def _index(self, permit_id: str, usage: PermitUsage) -> None:
        self._held_by.setdefault(usage.submission_id, set()).add(permit_id)
        latest = self._latest.get(usage.submission_id, 0)
        self._latest[usage.submission_id] = max(latest, usage.version)

    def issue(self, permit: Permit) -> Permit:
        """Issue a permit, or re-issue one (new validity, quantity...): write-offs already on
        the ledger are kept; the permit's own `usages` are ignored."""
        known = self._permits.get(permit.permit_id)
        usages = known.usages if known is not None else ()
        issued = permit.model_copy(update={"usages": usages})
        self._permits[permit.permit_id] = issued
        return issued

    # --- the three operations --------------------------------------------------------------

    def check(self, citation: Citation, holder_id: str | None, at: datetime) -> Refusal | None:
        """Everything but the balance: the permit exists, is valid at `at`, belongs to the
        holder, covers the goods, and the quantity is known."""
        permit = self._permits.get(citation.permit_id)
        if permit is None:
            return Refusal(
                citation,
                Problem.UNKNOWN,
                f"{citation.where} is not a permit this agency issued: check the number or "
                "cite a permit issued to you",
            )
        if at < permit.valid_from:
            return Refusal(
                citation,
                Problem.NOT_YET_VALID,
                f"{citation.where} is valid from {permit.valid_from:%Y-%m-%d %H:%M} UTC, after "
                f"the declaration was received ({at:%Y-%m-%d %H:%M} UTC)",
            )
        if at >= permit.valid_to:
            return Refusal(
                citation,
                Problem.EXPIRED,
                f"{citation.where} expired on {permit.valid_to:%Y-%m-%d %H:%M} UTC, before the "
                f"declaration was received ({at:%Y-%m-%d %H:%M} UTC): cite a valid permit",
            )
        if holder_id != permit.holder_id:
            return Refusal(
                citation,
                Problem.FOREIGN,
                f"{citation.where} is held by {permit.holder_id}, not by "
                f"{holder_id or 'an unnamed trader'}: only its holder may use a permit",
            )
        if not citation.hs_code.startswith(permit.hs_prefixes):
            return Refusal(
                citation,
                Problem.OTHER_GOODS,
                f"{citation.where} covers HS {', '.join(permit.hs_prefixes)}, not item "
                f"{citation.item_sequence}'s HS {citation.hs_code}",
            )
        if citation.quantity_in(permit.unit) is None:
            return Refusal(
                citation,
                Problem.NO_QUANTITY,
                f"{citation.where}: state the quantity written off (quantity_used) in "
                f"{permit.unit}, the permit's unit",
            )
        return None

    def write_off(
        self, citation: Citation, submission_id: str, version: int, at: datetime
    ) -> WriteOff | Refusal:
        """Write the citation's quantity off its permit, once (checked with `check` first)."""
        permit = self._permits[citation.permit_id]
        quantity = citation.quantity_in(permit.unit)
        assert quantity is not None, "check() refuses citations without a quantity"
        key = (submission_id, version, citation.item_sequence)
        existing = next((u for u in permit.usages if _key(u) == key), None)
        left = remaining(permit)
        if existing is not None:
            return WriteOff(
                citation, existing.quantity, permit.unit, left, permit.total_quantity, repeated=True
            )
        if quantity > left:
            return Refusal(
                citation,
                Problem.OVERUSE,
                f"{citation.where}: item {citation.item_sequence} would write off "
                f"{amount(quantity)} {permit.unit} but only {amount(left)} of "
                f"{amount(permit.total_quantity)} {permit.unit} are left",
            )
        usage = PermitUsage(
            submission_id=submission_id,
            version=version,
            item_sequence=citation.item_sequence,
            quantity=quantity,
            written_off_at=at,
        )
        self._permits[permit.permit_id] = permit.model_copy(
            update={"usages": (*permit.usages, usage)}
        )
        self._index(permit.permit_id, usage)
        return WriteOff(
            citation, quantity, permit.unit, left - quantity, permit.total_quantity, repeated=False
        )

    def release(
        self, submission_id: str, through_version: int, reason: str, at: datetime
    ) -> list[Release]:
        """Give back every active write-off of the submission's versions <= `through_version`."""
        released: list[Release] = []
        for permit_id in sorted(self._held_by.get(submission_id, ())):
            permit = self._permits[permit_id]
            usages = tuple(
                usage.model_copy(update={"released_at": at, "release_reason": reason})
                if usage.submission_id == submission_id
                and usage.version <= through_version
                and usage.released_at is None
                else usage
                for usage in permit.usages
            )
            changed = [new for old, new in zip(permit.usages, usages, strict=True) if old != new]
            if changed:
                released += [Release(permit_id, usage) for usage in changed]
                self._permits[permit_id] = permit.model_copy(update={"usages": usages})
        return released

    # --- one request -----------------------------------------------------------------------

    def settle_review(
        self,
        cited: Iterable[Citation],
        *,
        holder_id: str | None,
        submission_id: str,
        version: int,
        at: datetime,
    ) -> Settlement:
        """Version `version` replaces the earlier ones; its citations are written off all or
        nothing. Every refusal is reported, not only the first."""
        settlement = Settlement()
        if self.latest_version(submission_id) > version:
            settlement.superseded = True  # a re-delivered old request: a newer one counts
            return settlement
        settlement.released = self.release(
            submission_id, version - 1, f"replaced by version {version}", at
        )
        before = self.copy()
        for citation in cited:
            refusal = self.check(citation, holder_id, at)
            outcome = refusal or self.write_off(citation, submission_id, version, at)
            if isinstance(outcome, Refusal):
                settlement.refusals.append(outcome)
            else:
                settlement.written_off.append(outcome)
        if settlement.refusals:
            self._permits, self._held_by, self._latest = (
                before._permits,
                before._held_by,
                before._latest,
            )
            settlement.written_off = []
        settlement.changed = {r.permit_id for r in settlement.released} | {
            w.citation.permit_id for w in settlement.written_off if not w.repeated
        }
        return settlement

    def settle_withdrawal(
        self, *, submission_id: str, version: int, reason: str, at: datetime
    ) -> Settlement:
        released = self.release(submission_id, version, reason, at)
        return Settlement(released=released, changed={r.permit_id for r in released})


def _key(usage: PermitUsage) -> _UsageKey:
    return (usage.submission_id, usage.version, usage.item_sequence)

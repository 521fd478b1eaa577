"""Partner-customs exchange (WCO Globally Networked Customs, UN/CEFACT Recommendation 36),
sans I/O.

The exporting single window shares an export declaration with the destination country's
single window once it is finally released: one `PartnerExport` per consignment, keyed by the
WCO UCR. The importing single window links an import declaration quoting that UCR to it, and
customs' information package carries the export data with every point where the import
disagrees (countries, parties, goods by HS subheading, masses, quantities, values), so
under-declared quantities or values show up before customs decides.

Goods are compared per HS subheading (the first six digits, the level the Harmonized System
fixes for every country; national digits beyond it differ between partners), with tolerances
for masses (packing, moisture) and values (rounding, exchange of documents), and values only
when both sides declare them in the same currency.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from decimal import Decimal

from broker.core.declaration import Declaration, DeclarationType, GoodsItem, Party
from broker.core.messages import (
    Decision,
    Outcome,
    PartnerExport,
    PartnerLink,
    PartnerLinkStatus,
    PartnerMismatch,
)

__all__ = [
    "DEFAULT_MASS_TOLERANCE",
    "DEFAULT_VALUE_TOLERANCE",
    "export_record",
    "is_final_release",
    "link_partner_export",
    "mismatches",
    "replaces",
    "shared_with",
]

#: Relative difference in net mass accepted between export and import (2 %).
DEFAULT_MASS_TOLERANCE = Decimal("0.02")
#: Relative difference in goods value accepted, same currency only (5 %).
DEFAULT_VALUE_TOLERANCE = Decimal("0.05")

_RELEASES = (Outcome.RELEASED, Outcome.RELEASED_WITH_CONDITIONS)


def shared_with(declaration: Declaration | None, partners: Collection[str]) -> str | None:
    """The partner country an export declaration is shared with once released: its
    destination, when that country's single window is a partner and the trader quoted a UCR
    (the key both sides link on). None for anything else."""
    if declaration is None or declaration.type is not DeclarationType.EXPORT:
        return None
    if declaration.ucr is None or declaration.destination_country not in partners:
        return None
    return declaration.destination_country


def is_final_release(decision: Decision) -> bool:
    """Only a final release is shared: a pending, rejected or cancelled export says nothing
    the partner could rely on."""
    return decision.final and decision.outcome in _RELEASES


def export_record(declaration: Declaration, decision: Decision) -> PartnerExport:
    """The record shared for a released export: the goods, quantities and values as declared
    and the release that makes them reliable. Built from the declaration of the version the
    decision is for, so a re-shared record is identical."""
    if declaration.ucr is None:
        raise ValueError("an export is shared by its UCR: the declaration quotes none")
    if not is_final_release(decision):
        raise ValueError(f"decision {decision.decision_id} is not a final release")
    return PartnerExport(
        ucr=declaration.ucr,
        export_country=declaration.export_country,
        destination_country=declaration.destination_country,
        export_reference=decision.submission_id,
        version=decision.version,
        customs_office=declaration.customs_office,
        exporter=declaration.exporter,
        importer=declaration.importer,
        transport=declaration.transport,
        invoice=declaration.invoice,
        items=declaration.items,
        outcome=decision.outcome,
        released_at=decision.decided_at,
        decision_id=decision.decision_id,
    )


def replaces(current: PartnerExport | None, candidate: PartnerExport) -> bool:
    """Whether `candidate` becomes the export data known for its UCR: the later release wins
    (a UCR re-used for a later consignment), whatever order the records are read in."""
    if current is None:
        return True
    return _order(candidate) > _order(current)


def _order(export: PartnerExport) -> tuple[object, ...]:
    return (export.released_at, export.version, export.export_reference, export.decision_id)


def link_partner_export(
    declaration: Declaration,
    export: PartnerExport | None,
    partners: Collection[str],
    *,
    mass_tolerance: Decimal = DEFAULT_MASS_TOLERANCE,
    value_tolerance: Decimal = DEFAULT_VALUE_TOLERANCE,
) -> PartnerLink | None:
    """What customs' package says about the partner's export data for an import quoting a
    UCR; None for anything else. `export` is what had arrived when the version was routed:
    routing never waits for a partner, so NOT_RECEIVED says customs decides without it."""
    if declaration.type is not DeclarationType.IMPORT or declaration.ucr is None:
        return None
    country = declaration.export_country
    if export is not None:
        found = mismatches(
            declaration, export, mass_tolerance=mass_tolerance, value_tolerance=value_tolerance
        )
        if found:
            note = (
                f"{len(found)} difference(s) from the export data {export.export_country} "
                f"shared (export {export.export_reference} v{export.version}, released "
                f"{export.released_at.isoformat()}): "
                + "; ".join(mismatch.detail for mismatch in found)
            )
        else:
            note = (
                f"agrees with the export data {export.export_country} shared (export "
                f"{export.export_reference} v{export.version}, released "
                f"{export.released_at.isoformat()})"
            )
        if export.invoice.currency != declaration.invoice.currency:
            note += (
                f"; values not compared: exported in {export.invoice.currency}, declared in "
                f"{declaration.invoice.currency}"
            )
        return PartnerLink(
            ucr=declaration.ucr,
            partner_country=country,
            status=PartnerLinkStatus.LINKED,
            export=export,
            mismatches=found,
            note=note,
        )
    if country not in partners:
        return PartnerLink(
            ucr=declaration.ucr,
            partner_country=country,
            status=PartnerLinkStatus.NO_EXCHANGE,
            note=f"{country} does not share export data with this single window",
        )
    return PartnerLink(
        ucr=declaration.ucr,
        partner_country=country,
        status=PartnerLinkStatus.NOT_RECEIVED,
        note=f"no export data from {country} for UCR {declaration.ucr} had arrived when this "
        "version was routed; routed without it",
    )


@dataclass(frozen=True, slots=True)
class _Goods:
    """The goods items of one HS subheading, summed."""

    items: int
    net_mass_kg: Decimal
    value: Decimal
    quantity: Decimal | None  # None when any item has no supplementary quantity
    units: frozenset[str]


def _by_subheading(items: Iterable[GoodsItem]) -> dict[str, _Goods]:
    grouped: dict[str, list[GoodsItem]] = {}
    for item in items:
        grouped.setdefault(item.hs_code[:6], []).append(item)
    out: dict[str, _Goods] = {}
    for hs6, group in grouped.items():
        quantities = [i.supplementary_quantity for i in group]
        out[hs6] = _Goods(
            items=len(group),
            net_mass_kg=sum((i.net_mass_kg for i in group), Decimal(0)),
            value=sum((i.value for i in group), Decimal(0)),
            quantity=None if None in quantities else sum((q for q in quantities if q), Decimal(0)),
            units=frozenset(i.supplementary_unit for i in group if i.supplementary_unit),
        )
    return out


def _differs(exported: Decimal, declared: Decimal, tolerance: Decimal) -> bool:
    largest = max(exported, declared)
    return largest > 0 and abs(exported - declared) / largest > tolerance


def _percent(exported: Decimal, declared: Decimal) -> str:
    if exported == 0:
        return "n/a"
    change = (declared - exported) / exported * 100
    return f"{change:+.1f} %"


def _party(subject: str, exported: Party | None, declared: Party | None) -> list[PartnerMismatch]:
    if exported is None or declared is None or exported.identifier == declared.identifier:
        return []
    return [
        PartnerMismatch(
            subject=subject,
            exported=exported.identifier,
            declared=declared.identifier,
            detail=f"{subject} {declared.identifier} is not the {subject} of the export "
            f"({exported.identifier})",
        )
    ]


def mismatches(
    declaration: Declaration,
    export: PartnerExport,
    *,
    mass_tolerance: Decimal = DEFAULT_MASS_TOLERANCE,
    value_tolerance: Decimal = DEFAULT_VALUE_TOLERANCE,
) -> tuple[PartnerMismatch, ...]:
    """Every point where the import declaration disagrees with the partner's export data, in
    a fixed order (countries, parties, then goods by HS subheading)."""
    found: list[PartnerMismatch] = []
    for field in ("export_country", "destination_country"):
        exported, declared = getattr(export, field), getattr(declaration, field)
        if exported != declared:
            found.append(
                PartnerMismatch(
                    subject=field,
                    exported=exported,
                    declared=declared,
                    detail=f"{field} {declared} on import, {exported} on export",
                )
            )
    found += _party("exporter", export.exporter, declaration.exporter)
    found += _party("importer", export.importer, declaration.importer)
    same_currency = export.invoice.currency == declaration.invoice.currency
    exported_goods = _by_subheading(export.items)
    declared_goods = _by_subheading(declaration.items)
    for hs6 in sorted(exported_goods.keys() | declared_goods.keys()):
        subject = f"items HS {hs6}"
        out, into = exported_goods.get(hs6), declared_goods.get(hs6)
        if into is None:
            assert out is not None
            found.append(
                PartnerMismatch(
                    subject=subject,
                    exported=f"{out.items} item(s), {out.net_mass_kg} kg",
                    detail=f"HS {hs6} was exported ({out.net_mass_kg} kg) but is not declared",
                )
            )
            continue
        if out is None:
            found.append(
                PartnerMismatch(
                    subject=subject,
                    declared=f"{into.items} item(s), {into.net_mass_kg} kg",
                    detail=f"HS {hs6} is declared ({into.net_mass_kg} kg) but was not exported",
                )
            )
            continue
        if _differs(out.net_mass_kg, into.net_mass_kg, mass_tolerance):
            change = _percent(out.net_mass_kg, into.net_mass_kg)
            found.append(
                PartnerMismatch(
                    subject=f"{subject} net_mass_kg",
                    exported=str(out.net_mass_kg),
                    declared=str(into.net_mass_kg),
                    detail=f"HS {hs6} net mass {into.net_mass_kg} kg declared, "
                    f"{out.net_mass_kg} kg exported ({change})",
                )
            )
        if (
            out.quantity is not None
            and into.quantity is not None
            and out.units == into.units
            and out.quantity != into.quantity
        ):
            found.append(
                PartnerMismatch(
                    subject=f"{subject} supplementary_quantity",
                    exported=str(out.quantity),
                    declared=str(into.quantity),
                    detail=f"HS {hs6} quantity {into.quantity} declared, {out.quantity} exported",
                )
            )
        if same_currency and _differs(out.value, into.value, value_tolerance):
            currency = declaration.invoice.currency
            found.append(
                PartnerMismatch(
                    subject=f"{subject} value",
                    exported=f"{out.value} {currency}",
                    declared=f"{into.value} {currency}",
                    detail=f"HS {hs6} value {into.value} {currency} declared, {out.value} "
                    f"{currency} exported ({_percent(out.value, into.value)})",
                )
            )
    return tuple(found)

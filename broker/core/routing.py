"""Routing (DESIGN §6): which agencies must see a declaration, why, by when, and what each gets.

Pure functions of the declaration, the rules and a clock passed in: the same input always gives
the same plan, so a re-delivered submission is routed identically and a plan can be explained
without sending anything (`swb route FILE`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from broker.core.declaration import Declaration, GoodsItem
from broker.core.messages import (
    AgencyRoute,
    InformationPackage,
    Requirement,
    RoutingPlan,
    SubmissionKind,
)
from broker.core.rules import AgencyRules, RuleBook, Trigger

__all__ = ["explain_plan", "information_package", "route", "selected_items"]


def _item_matches(trigger: Trigger, item: GoodsItem, header_documents: frozenset[str]) -> bool:
    """Every item condition of the trigger holds for this goods item."""
    if trigger.hs_prefixes and not item.hs_code.startswith(trigger.hs_prefixes):
        return False
    if trigger.origin_countries and item.origin_country not in trigger.origin_countries:
        return False
    if trigger.dangerous_goods or trigger.un_numbers:
        if item.un_number is None:
            return False
        if trigger.un_numbers and item.un_number not in trigger.un_numbers:
            return False
    if trigger.cites and not item.cites:
        return False
    if trigger.document_types:
        cited = header_documents | {doc.type_code for doc in item.documents}
        if cited.isdisjoint(trigger.document_types):
            return False
    return True


def selected_items(trigger: Trigger, declaration: Declaration) -> tuple[int, ...]:
    """The sequences of the goods items a trigger selects; empty when it does not fire."""
    every_item = tuple(item.sequence for item in declaration.items)
    if trigger.all_declarations:
        return every_item
    if trigger.procedures and declaration.type not in trigger.procedures:
        return ()
    if (
        trigger.destination_countries
        and declaration.destination_country not in trigger.destination_countries
    ):
        return ()
    if not trigger.selects_items:
        return every_item
    header_documents = frozenset(doc.type_code for doc in declaration.documents)
    return tuple(
        item.sequence
        for item in declaration.items
        if _item_matches(trigger, item, header_documents)
    )


def _agency_route(
    agency: AgencyRules, declaration: Declaration, now: datetime
) -> AgencyRoute | None:
    reasons: list[str] = []
    sequences: set[int] = set()
    requirement = Requirement.MAY_BE_REQUIRED
    for trigger in agency.triggers:
        selected = selected_items(trigger, declaration)
        if not selected:
            continue
        reasons.append(trigger.id)
        sequences.update(selected)
        if trigger.flag is Requirement.REQUIRED:
            requirement = Requirement.REQUIRED
    if not reasons:
        return None
    return AgencyRoute(
        agency=agency.code,
        requirement=requirement,
        reasons=tuple(reasons),
        deadline=now + agency.sla,
        item_sequences=tuple(sorted(sequences)),
    )


def route(
    declaration: Declaration | None,
    rules: RuleBook,
    *,
    submission_id: str,
    version: int,
    kind: SubmissionKind,
    trader_id: str,
    payload_sha256: str,
    now: datetime,
) -> RoutingPlan:
    """Plan one version of a submission. A cancellation concerns no agency (its plan is empty,
    so every agency of the previous version gets a withdrawal); anything else needs a
    declaration. Agencies come in AGENCY_CODES order, reasons in rules-file order."""
    if now.tzinfo is None:
        raise ValueError("now must include a time zone")
    routes: list[AgencyRoute] = []
    if kind is not SubmissionKind.CANCELLATION:
        if declaration is None:
            raise ValueError(f"a {kind.value} submission needs a declaration to route")
        for agency in rules.in_order():
            agency_route = _agency_route(agency, declaration, now)
            if agency_route is not None:
                routes.append(agency_route)
    return RoutingPlan(
        submission_id=submission_id,
        version=version,
        kind=kind,
        trader_id=trader_id,
        planned_at=now,
        payload_sha256=payload_sha256,
        agencies=tuple(routes),
    )


def information_package(
    declaration: Declaration, route: AgencyRoute, rules: RuleBook
) -> InformationPackage:
    """Only what the agency needs: its header fields (identity always) and its goods items.

    Header documents travel when the agency's package lists `documents`; an item's own
    documents always travel with the item."""
    package = set(rules.agency(route.agency).package)
    wanted = set(route.item_sequences)
    return InformationPackage(
        lrn=declaration.lrn,
        type=declaration.type,
        procedure_code=declaration.procedure_code,
        issued_at=declaration.issued_at,
        customs_office=declaration.customs_office,
        declarant=declaration.declarant if "declarant" in package else None,
        importer=declaration.importer if "importer" in package else None,
        exporter=declaration.exporter if "exporter" in package else None,
        transport=declaration.transport if "transport" in package else None,
        export_country=declaration.export_country if "export_country" in package else None,
        destination_country=(
            declaration.destination_country if "destination_country" in package else None
        ),
        invoice=declaration.invoice if "invoice" in package else None,
        items=tuple(item for item in declaration.items if item.sequence in wanted),
        documents=declaration.documents if "documents" in package else (),
        ucr=declaration.ucr if "ucr" in package else None,
    )


def explain_plan(plan: RoutingPlan, rules: RuleBook | None = None) -> dict[str, Any]:
    """A plan as plain JSON-ready data; with the rules, each reason also carries its
    description and each agency its name, so a trader can read why without the rules file."""
    agencies: list[dict[str, Any]] = []
    for agency_route in plan.agencies:
        entry: dict[str, Any] = {
            "agency": agency_route.agency,
            "requirement": agency_route.requirement.value,
            "reasons": list(agency_route.reasons),
            "deadline": agency_route.deadline.isoformat(),
            "item_sequences": list(agency_route.item_sequences),
        }
        if rules is not None:
            entry["name"] = rules.agency(agency_route.agency).name
            entry["reason_descriptions"] = {
                reason: trigger.description
                for reason in agency_route.reasons
                if (trigger := rules.trigger(reason)) is not None
            }
        agencies.append(entry)
    return {
        "submission_id": plan.submission_id,
        "version": plan.version,
        "kind": plan.kind.value,
        "trader_id": plan.trader_id,
        "planned_at": plan.planned_at.isoformat(),
        "payload_sha256": plan.payload_sha256,
        "agencies": agencies,
    }

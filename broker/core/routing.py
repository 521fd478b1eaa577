"""Routing (DESIGN §6): which agencies must see a declaration, why, by when, and what each gets.

Pure functions of the declaration, the rules and a clock passed in: the same input always gives
the same plan, so a re-delivered submission is routed identically and a plan can be explained
without sending anything (`swb route FILE`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from broker.core.declaration import Declaration
from broker.core.ids import request_id_for
from broker.core.messages import (
    AgencyRequest,
    AgencyRoute,
    InformationPackage,
    RequestKind,
    Requirement,
    RoutingPlan,
    SubmissionKind,
)
from broker.core.rules import RuleBook, Trigger

__all__ = ["explain_plan", "information_package", "review_request", "route", "selected_items"]


def selected_items(trigger: Trigger, declaration: Declaration) -> tuple[int, ...]:
    """The sequences of the goods items a trigger selects; empty when it does not fire."""
    match = trigger.match
    if not match.header_holds(declaration):
        return ()
    if not match.selects_items:
        return tuple(item.sequence for item in declaration.items)
    header_documents = frozenset(doc.type_code for doc in declaration.documents)
    return tuple(
        item.sequence for item in declaration.items if match.item_holds(item, header_documents)
    )


def _agency_routes(declaration: Declaration, rules: RuleBook, now: datetime) -> list[AgencyRoute]:
    """One route per agency some trigger fires for. The trigger index finds every trigger's
    items in one pass over the goods items: what `selected_items` gives trigger by trigger."""
    index = rules.index
    selected = index.select(declaration)
    fired: dict[str, list[int]] = {}  # agency -> its triggers that fired, in routing order
    for number in sorted(selected):
        fired.setdefault(index.agency_of[number].code, []).append(number)
    routes: list[AgencyRoute] = []
    for code, numbers in fired.items():
        triggers = [index.triggers[number] for number in numbers]
        required = any(trigger.flag is Requirement.REQUIRED for trigger in triggers)
        routes.append(
            AgencyRoute(
                agency=code,
                requirement=Requirement.REQUIRED if required else Requirement.MAY_BE_REQUIRED,
                reasons=tuple(trigger.id for trigger in triggers),
                deadline=now + rules.agency(code).sla,
                item_sequences=tuple(sorted(set().union(*(selected[n] for n in numbers)))),
            )
        )
    return routes


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
        routes = _agency_routes(declaration, rules, now)
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


def review_request(
    plan: RoutingPlan, route: AgencyRoute, declaration: Declaration, rules: RuleBook
) -> AgencyRequest:
    """Ask one agency of the plan to review its information package, by its deadline."""
    return AgencyRequest(
        request_id=request_id_for(
            plan.submission_id, plan.version, route.agency, RequestKind.REVIEW
        ),
        submission_id=plan.submission_id,
        version=plan.version,
        agency=route.agency,
        kind=RequestKind.REVIEW,
        requirement=route.requirement,
        reasons=route.reasons,
        deadline=route.deadline,
        sent_at=plan.planned_at,
        package=information_package(declaration, route, rules),
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

"""Routing: each sample reaches the agencies a border officer would expect, and no other; each
agency gets only its goods items and header fields; the plan is a pure function of its input."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources

import pytest

from broker.core.declaration import Declaration, DeclarationType
from broker.core.messages import AGENCY_CODES, RoutingPlan, SubmissionKind
from broker.core.routing import explain_plan, information_package, route, selected_items
from broker.core.rules import RuleBook, Trigger, load_rules

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
R = "REQUIRED"
M = "MAY_BE_REQUIRED"

#: sample -> {agency: requirement}, in AGENCY_CODES order. Written out by hand on purpose.
EXPECTED: dict[str, dict[str, str]] = {
    "01-cut-flowers-kenya.json": {"customs": R, "plant": R},
    "02-frozen-beef-argentina.json": {"customs": R, "veterinary": R, "food": R},
    "03-vaccines-india.json": {"customs": R, "medicines": R},
    "04-hunting-rifle-usa.json": {"customs": R, "police": R},
    "05-lithium-batteries-china.json": {"customs": R, "standards": R},
    "06-used-car-japan.json": {"customs": R, "standards": R},
    "07-ivory-carving-cites.json": {"customs": R, "wildlife": R},
    "08-refrigerant-hcfc22-china.json": {"customs": R, "environment": R},
    "09-whisky-uk-singapore.json": {"customs": R, "food": R, "excise": R},
    "10-x-ray-tubes-germany.json": {"customs": R, "medicines": M, "radiation": R},
    "11-dual-use-machine-tools-export.json": {"customs": R, "strategic": R},
    "12-transit-electronics.json": {"customs": R, "strategic": M},
    "13-cakes-malaysia-singapore.json": {"customs": R, "food": R},
    "14-sapele-logs-cameroon.json": {"customs": R, "plant": R, "wildlife": M},
}

#: The reasons that explain the less obvious routes.
EXPECTED_REASONS: dict[tuple[str, str], tuple[str, ...]] = {
    ("04-hunting-rifle-usa.json", "police"): (
        "police.firearms-and-ammunition",
        "police.explosive-dangerous-goods",
    ),
    ("05-lithium-batteries-china.json", "standards"): (
        "standards.conformity",
        "standards.lithium-batteries",
    ),
    ("06-used-car-japan.json", "standards"): (
        "standards.conformity",
        "standards.used-vehicle-inspection",
    ),
    ("07-ivory-carving-cites.json", "wildlife"): (
        "wildlife.cites-species",
        "wildlife.cites-permit",
        "wildlife.wildlife-products",
    ),
    ("08-refrigerant-hcfc22-china.json", "environment"): (
        "environment.ozone-depleting-substances",
        "environment.hazardous-chemicals",
    ),
    ("10-x-ray-tubes-germany.json", "radiation"): ("radiation.x-ray-equipment",),
    ("11-dual-use-machine-tools-export.json", "strategic"): (
        "strategic.dual-use-screening",
        "strategic.controlled-machine-tools",
        "strategic.dual-use-licence",
    ),
    ("12-transit-electronics.json", "strategic"): ("strategic.dual-use-screening",),
    ("14-sapele-logs-cameroon.json", "wildlife"): ("wildlife.wildlife-products",),
}


@pytest.fixture(scope="module")
def rules() -> RuleBook:
    return load_rules()


def _sample_names() -> list[str]:
    folder = resources.files("broker.samples")
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".json"))


def _sample(name: str) -> Declaration:
    text = (resources.files("broker.samples") / name).read_text(encoding="utf-8")
    return Declaration.model_validate_json(text)


def _plan(
    declaration: Declaration | None,
    rules: RuleBook,
    *,
    submission_id: str = "trader-1:LRN-1",
    version: int = 1,
    kind: SubmissionKind = SubmissionKind.NEW,
    trader_id: str = "trader-1",
    now: datetime = NOW,
) -> RoutingPlan:
    return route(
        declaration,
        rules,
        submission_id=submission_id,
        version=version,
        kind=kind,
        trader_id=trader_id,
        payload_sha256="ab" * 32,
        now=now,
    )


def _changed(declaration: Declaration, **update: object) -> Declaration:
    """A copy with some fields replaced, validated again like a trader's submission."""
    return Declaration.model_validate({**declaration.model_dump(), **update})


def _beef_and_rifle() -> Declaration:
    """A mixed consignment: item 1 frozen beef, item 2 a hunting rifle."""
    beef = _sample("02-frozen-beef-argentina.json")
    rifle = _sample("04-hunting-rifle-usa.json").items[0].model_dump() | {"sequence": 2}
    amount = beef.items[0].value + _sample("04-hunting-rifle-usa.json").items[0].value
    invoice = beef.invoice.model_dump() | {"amount": amount}
    return _changed(beef, items=[beef.items[0].model_dump(), rifle], invoice=invoice)


def test_the_expected_table_covers_every_shipped_sample() -> None:
    assert _sample_names() == sorted(EXPECTED)
    assert len(EXPECTED) >= 12


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_sample_routes_to_the_expected_agencies(rules: RuleBook, name: str) -> None:
    plan = _plan(_sample(name), rules)
    got = {a.agency: a.requirement.value for a in plan.agencies}
    assert got == EXPECTED[name]
    assert [a.agency for a in plan.agencies] == [c for c in AGENCY_CODES if c in got]
    for agency_route in plan.agencies:
        assert agency_route.reasons, "every route says why"
        expected_reasons = EXPECTED_REASONS.get((name, agency_route.agency))
        if expected_reasons is not None:
            assert agency_route.reasons == expected_reasons


def test_the_samples_together_reach_all_twelve_agencies(rules: RuleBook) -> None:
    reached = {a.agency for name in EXPECTED for a in _plan(_sample(name), rules).agencies}
    assert reached == set(AGENCY_CODES)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_customs_always_sees_every_item(rules: RuleBook, name: str) -> None:
    declaration = _sample(name)
    customs = _plan(declaration, rules).agencies[0]
    assert customs.agency == "customs"
    assert customs.reasons == ("customs.all-declarations",)
    assert customs.item_sequences == tuple(sorted(i.sequence for i in declaration.items))


def test_an_agency_gets_only_its_items(rules: RuleBook) -> None:
    declaration = _beef_and_rifle()
    routes = {a.agency: a for a in _plan(declaration, rules).agencies}
    assert set(routes) == {"customs", "veterinary", "food", "police"}
    assert routes["customs"].item_sequences == (1, 2)
    assert routes["veterinary"].item_sequences == (1,)
    assert routes["food"].item_sequences == (1,)
    assert routes["police"].item_sequences == (2,)

    veterinary = information_package(declaration, routes["veterinary"], rules)
    police = information_package(declaration, routes["police"], rules)
    assert [item.hs_code for item in veterinary.items] == ["02023090"]
    assert [item.hs_code for item in police.items] == ["93033000"]


def test_police_package_carries_no_invoice(rules: RuleBook) -> None:
    declaration = _sample("04-hunting-rifle-usa.json")
    police = next(a for a in _plan(declaration, rules).agencies if a.agency == "police")
    package = information_package(declaration, police, rules)
    assert package.invoice is None
    assert package.transport == declaration.transport
    assert package.importer == declaration.importer
    assert package.lrn == declaration.lrn and package.customs_office == "NLAMS000"


def test_customs_package_is_the_whole_declaration(rules: RuleBook) -> None:
    declaration = _sample("02-frozen-beef-argentina.json")
    customs = _plan(declaration, rules).agencies[0]
    package = information_package(declaration, customs, rules)
    # `partner` is not the declaration's: the router adds the partner's export data (issue 8).
    assert package.partner is None
    assert package.model_dump(exclude={"partner"}) == declaration.model_dump()


def test_header_fields_follow_the_agency_package(rules: RuleBook) -> None:
    declaration = _sample("09-whisky-uk-singapore.json")
    excise = next(a for a in _plan(declaration, rules).agencies if a.agency == "excise")
    package = information_package(declaration, excise, rules)
    assert package.invoice == declaration.invoice  # duty is assessed on value
    assert package.transport is None  # not in the excise package
    assert package.documents == declaration.documents


def test_item_documents_travel_with_their_item(rules: RuleBook) -> None:
    declaration = _sample("07-ivory-carving-cites.json")
    wildlife = next(a for a in _plan(declaration, rules).agencies if a.agency == "wildlife")
    package = information_package(declaration, wildlife, rules)
    assert [d.type_code for d in package.items[0].documents] == ["C400"]


def test_header_documents_stay_home_when_the_package_omits_them(rules: RuleBook) -> None:
    food = rules.agency("food")
    trimmed = food.model_copy(update={"package": ("importer",)})
    narrow = rules.model_copy(update={"agencies": {**rules.agencies, "food": trimmed}})
    declaration = _sample("02-frozen-beef-argentina.json")
    food_route = next(a for a in _plan(declaration, narrow).agencies if a.agency == "food")
    package = information_package(declaration, food_route, narrow)
    assert package.documents == ()
    assert package.importer == declaration.importer
    assert package.declarant is None and package.exporter is None
    assert len(package.items) == 2


def test_required_wins_over_may_be_required(rules: RuleBook) -> None:
    declaration = _sample("11-dual-use-machine-tools-export.json")
    strategic = next(a for a in _plan(declaration, rules).agencies if a.agency == "strategic")
    screening = rules.trigger("strategic.dual-use-screening")
    assert screening is not None and screening.requirement == "may_be_required"
    assert strategic.requirement.value == R


def test_procedure_decides_strategic_and_veterinary_control(rules: RuleBook) -> None:
    exported = _changed(
        _sample("02-frozen-beef-argentina.json"), type=DeclarationType.EXPORT, procedure_code="1000"
    )
    assert [a.agency for a in _plan(exported, rules).agencies] == ["customs"]
    imported = _changed(
        _sample("12-transit-electronics.json"), type=DeclarationType.IMPORT, procedure_code="4000"
    )
    assert [a.agency for a in _plan(imported, rules).agencies] == ["customs", "standards"]


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_deadline_is_now_plus_the_agency_sla(rules: RuleBook, name: str) -> None:
    plan = _plan(_sample(name), rules)
    assert plan.planned_at == NOW
    for agency_route in plan.agencies:
        assert agency_route.deadline == NOW + rules.agency(agency_route.agency).sla


def test_wildlife_and_strategic_deadlines_are_days_away(rules: RuleBook) -> None:
    ivory = _plan(_sample("07-ivory-carving-cites.json"), rules)
    assert ivory.agencies[1].deadline == NOW + timedelta(hours=48)
    export = _plan(_sample("11-dual-use-machine-tools-export.json"), rules)
    assert export.agencies[1].deadline == NOW + timedelta(days=5)


def test_a_clock_in_another_zone_gives_the_same_deadlines(rules: RuleBook) -> None:
    nairobi = NOW.astimezone(timezone(timedelta(hours=3)))
    declaration = _sample("03-vaccines-india.json")
    assert _plan(declaration, rules, now=nairobi) == _plan(declaration, rules)


def test_a_naive_clock_is_refused(rules: RuleBook) -> None:
    with pytest.raises(ValueError, match="time zone"):
        _plan(_sample("03-vaccines-india.json"), rules, now=NOW.replace(tzinfo=None))


def test_the_plan_is_deterministic(rules: RuleBook) -> None:
    declaration = _beef_and_rifle()
    first = _plan(declaration, rules)
    assert _plan(declaration, rules) == first
    shuffled = _changed(declaration, items=[i.model_dump() for i in declaration.items[::-1]])
    assert _plan(shuffled, rules) == first
    assert json.dumps(explain_plan(first)) == json.dumps(explain_plan(_plan(declaration, rules)))


def test_the_plan_carries_the_submission_identity(rules: RuleBook) -> None:
    plan = _plan(
        _sample("01-cut-flowers-kenya.json"),
        rules,
        submission_id="NL823456789:AFS-2026-118734",
        version=2,
        kind=SubmissionKind.AMENDMENT,
        trader_id="NL823456789",
    )
    assert (plan.submission_id, plan.version, plan.kind) == (
        "NL823456789:AFS-2026-118734",
        2,
        SubmissionKind.AMENDMENT,
    )
    assert plan.trader_id == "NL823456789" and plan.payload_sha256 == "ab" * 32


def test_a_cancellation_concerns_no_agency(rules: RuleBook) -> None:
    plan = _plan(None, rules, kind=SubmissionKind.CANCELLATION, version=2)
    assert plan.agencies == ()
    with pytest.raises(ValueError, match="needs a declaration"):
        _plan(None, rules)


def test_header_only_trigger_gives_every_item() -> None:
    trigger = Trigger(
        id="food.netherlands",
        description="test",
        requirement="required",
        destination_countries=("NL",),
    )
    assert selected_items(trigger, _beef_and_rifle()) == (1, 2)
    assert selected_items(trigger, _sample("06-used-car-japan.json")) == ()


def test_header_document_counts_for_every_item() -> None:
    trigger = Trigger(
        id="strategic.licence",
        description="test",
        requirement="required",
        document_types=("N853",),
    )
    assert selected_items(trigger, _beef_and_rifle()) == (1, 2)


def test_conditions_in_one_trigger_are_combined_with_and() -> None:
    base = {"id": "police.test", "description": "test", "requirement": "required"}
    rifle_sample = _sample("04-hunting-rifle-usa.json")
    un_only = Trigger(**base, un_numbers=("0012",))
    any_dangerous = Trigger(**base, dangerous_goods=True)
    un_and_origin = Trigger(**base, un_numbers=("0012",), origin_countries=("CN",))
    hs_and_dangerous = Trigger(**base, hs_prefixes=("93",), dangerous_goods=True)
    assert selected_items(un_only, rifle_sample) == (2,)
    assert selected_items(any_dangerous, rifle_sample) == (2,)
    assert selected_items(un_and_origin, rifle_sample) == ()
    assert selected_items(hs_and_dangerous, rifle_sample) == (2,)


def test_explain_plan_is_json_ready(rules: RuleBook) -> None:
    plan = _plan(_sample("10-x-ray-tubes-germany.json"), rules)
    explained = json.loads(json.dumps(explain_plan(plan, rules)))
    assert explained["planned_at"] == "2026-11-30T08:00:00+00:00"
    assert [a["agency"] for a in explained["agencies"]] == ["customs", "medicines", "radiation"]
    medicines = explained["agencies"][1]
    assert medicines["requirement"] == M
    assert medicines["reasons"] == ["medicines.medical-devices"]
    assert medicines["item_sequences"] == [1, 2]
    assert datetime.fromisoformat(medicines["deadline"]) == NOW + timedelta(hours=4)
    assert medicines["name"] == "Medicines and medical devices"
    assert (
        "intended for medical use" in medicines["reason_descriptions"]["medicines.medical-devices"]
    )
    assert "name" not in explain_plan(plan)["agencies"][1]

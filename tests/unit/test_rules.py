"""The rules file: the shipped rules load, and a broken file fails at load naming the field."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import pytest

from broker.core.declaration import DeclarationType
from broker.core.messages import AGENCY_CODES, Requirement
from broker.core.rules import PACKAGE_FIELDS, RuleBook, load_rules, parse_rules
from broker.errors import RulesError, SwbError


@pytest.fixture(scope="module")
def rules() -> RuleBook:
    return load_rules()


def _agency_block(code: str, header: str = "", trigger: str | None = None) -> str:
    if trigger is None:
        trigger = 'hs_prefixes = ["01"]' if code != "customs" else "all_declarations = true"
    return (
        f"[agencies.{code}]\n"
        f'name = "{code.title()}"\n'
        "sla_minutes = 60\n"
        'package = ["declarant"]\n'
        f"{header}\n"
        f"[[agencies.{code}.triggers]]\n"
        f'id = "{code}.test"\n'
        'description = "test trigger"\n'
        'requirement = "required"\n'
        f"{trigger}\n\n"
    )


def _rules_toml(
    codes: tuple[str, ...] = AGENCY_CODES,
    headers: dict[str, str] | None = None,
    triggers: dict[str, str] | None = None,
) -> str:
    """A minimal valid rules file, with one agency's table or trigger replaced to break it."""
    headers = headers or {}
    triggers = triggers or {}
    return "".join(_agency_block(code, headers.get(code, ""), triggers.get(code)) for code in codes)


def _load(tmp_path: Path, text: str) -> RuleBook:
    path = tmp_path / "rules.toml"
    path.write_text(text, encoding="utf-8")
    return load_rules(path)


def _error(tmp_path: Path, text: str) -> str:
    with pytest.raises(RulesError) as caught:
        _load(tmp_path, text)
    message = str(caught.value)
    assert str(tmp_path / "rules.toml") in message, "the message must name the file"
    return message


# --- the default rules -------------------------------------------------------------------------


def test_default_rules_list_every_agency_in_contract_order(rules: RuleBook) -> None:
    assert tuple(rules.agencies) == AGENCY_CODES
    assert tuple(agency.code for agency in rules.in_order()) == AGENCY_CODES
    assert all(agency.triggers for agency in rules.in_order())


def test_default_rules_can_be_loaded_from_an_explicit_path(rules: RuleBook) -> None:
    with resources.as_file(resources.files("broker.rules") / "default.toml") as path:
        assert load_rules(path) == rules


def test_customs_sees_every_declaration_and_every_header_field(rules: RuleBook) -> None:
    customs = rules.agency("customs")
    assert any(trigger.all_declarations for trigger in customs.triggers)
    assert set(customs.package) == set(PACKAGE_FIELDS)
    assert customs.sla_minutes == 10


def test_service_levels_follow_the_domain_facts(rules: RuleBook) -> None:
    assert rules.agency("wildlife").sla_minutes == 48 * 60  # 48 h prior notice
    assert rules.agency("strategic").sla_minutes == 5 * 24 * 60  # permit 5 days ahead
    for agency in rules.in_order():
        assert agency.sla_minutes > 0
        assert agency.sla.total_seconds() == agency.sla_minutes * 60


def test_police_receive_no_invoice(rules: RuleBook) -> None:
    assert "invoice" not in rules.agency("police").package
    assert "transport" in rules.agency("police").package


def test_trigger_ids_are_unique_and_name_their_agency(rules: RuleBook) -> None:
    ids = [t.id for agency in rules.in_order() for t in agency.triggers]
    assert len(ids) == len(set(ids))
    for agency in rules.in_order():
        for trigger in agency.triggers:
            assert trigger.id.startswith(f"{agency.code}.")
            assert rules.trigger(trigger.id) is trigger


def test_strategic_control_applies_to_exports_and_transit_only(rules: RuleBook) -> None:
    for trigger in rules.agency("strategic").triggers:
        assert set(trigger.procedures) == {DeclarationType.EXPORT, DeclarationType.TRANSIT}


def test_requirement_flags_map_to_ace_flags(rules: RuleBook) -> None:
    medical = rules.trigger("medicines.medical-devices")
    assert medical is not None and medical.flag is Requirement.MAY_BE_REQUIRED
    medicinal = rules.trigger("medicines.medicinal-products")
    assert medicinal is not None and medicinal.flag is Requirement.REQUIRED


def test_minimal_rules_file_loads(tmp_path: Path) -> None:
    book = _load(tmp_path, _rules_toml())
    assert book.agency("food").triggers[0].hs_prefixes == ("01",)


# --- invalid files -----------------------------------------------------------------------------


def test_missing_file_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(RulesError, match="does not exist") as caught:
        load_rules(missing)
    assert str(missing) in str(caught.value)
    assert isinstance(caught.value, SwbError) and not caught.value.retriable


def test_toml_syntax_error_is_reported(tmp_path: Path) -> None:
    message = _error(tmp_path, "[agencies.customs\nname = 1\n")
    assert "not valid TOML" in message


def test_unknown_agency_is_rejected(tmp_path: Path) -> None:
    message = _error(tmp_path, _rules_toml() + _agency_block("tax"))
    assert "agencies.tax" in message
    assert "unknown agency 'tax'" in message


def test_every_agency_must_be_present(tmp_path: Path) -> None:
    codes = tuple(code for code in AGENCY_CODES if code not in {"police", "excise"})
    message = _error(tmp_path, _rules_toml(codes))
    assert "missing police, excise" in message


@pytest.mark.parametrize(
    ("prefix", "problem"),
    [
        ("9x", "HS prefix '9x' must be 2 to 10 digits"),
        ("9", "HS prefix '9' must be 2 to 10 digits"),
        ("12345678901", "HS prefix '12345678901' must be 2 to 10 digits"),
        ("7701", "HS prefix '7701': chapter 77 does not exist"),
    ],
)
def test_bad_hs_prefix_names_the_field(tmp_path: Path, prefix: str, problem: str) -> None:
    text = _rules_toml(triggers={"police": f'hs_prefixes = ["93", "{prefix}"]'})
    message = _error(tmp_path, text)
    assert f"agencies.police.triggers.0.hs_prefixes.1: {problem}" in message


def test_unknown_key_in_a_trigger_is_rejected(tmp_path: Path) -> None:
    text = _rules_toml(triggers={"veterinary": 'hs_prefix = ["01"]'})
    message = _error(tmp_path, text)
    assert "agencies.veterinary.triggers.0.hs_prefix: Extra inputs are not permitted" in message


def test_unknown_key_in_an_agency_is_rejected(tmp_path: Path) -> None:
    text = _rules_toml(headers={"food": "sla_hours = 4"})
    message = _error(tmp_path, text)
    assert "agencies.food.sla_hours: Extra inputs are not permitted" in message


def test_unknown_country_is_rejected(tmp_path: Path) -> None:
    text = _rules_toml(triggers={"plant": 'origin_countries = ["KE", "XX"]'})
    message = _error(tmp_path, text)
    assert "agencies.plant.triggers.0.origin_countries.1: unknown country 'XX'" in message


@pytest.mark.parametrize("minutes", ["0", "-5"])
def test_sla_must_be_positive(tmp_path: Path, minutes: str) -> None:
    text = _rules_toml().replace("sla_minutes = 60", f"sla_minutes = {minutes}", 1)
    message = _error(tmp_path, text)
    assert "agencies.customs.sla_minutes: Input should be greater than 0" in message


def test_unknown_package_field_is_rejected(tmp_path: Path) -> None:
    text = _rules_toml().replace('package = ["declarant"]', 'package = ["price"]', 1)
    message = _error(tmp_path, text)
    assert "agencies.customs.package.0:" in message


def test_unknown_requirement_is_rejected(tmp_path: Path) -> None:
    text = _rules_toml().replace('"required"', '"mandatory"', 1)
    message = _error(tmp_path, text)
    assert "agencies.customs.triggers.0.requirement:" in message


def test_unknown_procedure_is_rejected(tmp_path: Path) -> None:
    text = _rules_toml(triggers={"strategic": 'procedures = ["EXPORT", "RE-EXPORT"]'})
    message = _error(tmp_path, text)
    assert "agencies.strategic.triggers.0.procedures.1:" in message


def test_trigger_without_conditions_is_rejected(tmp_path: Path) -> None:
    message = _error(tmp_path, _rules_toml(triggers={"food": ""}))
    assert "agencies.food.triggers.0: a trigger needs at least one condition" in message


def test_false_flag_is_rejected_rather_than_ignored(tmp_path: Path) -> None:
    text = _rules_toml(triggers={"wildlife": 'hs_prefixes = ["9601"]\ncites = false'})
    message = _error(tmp_path, text)
    assert "agencies.wildlife.triggers.0.cites: a flag only narrows a trigger when true" in message


def test_bad_un_number_is_rejected(tmp_path: Path) -> None:
    text = _rules_toml(triggers={"radiation": 'un_numbers = ["UN2915"]'})
    message = _error(tmp_path, text)
    assert "agencies.radiation.triggers.0.un_numbers.0:" in message


def test_repeated_trigger_id_is_rejected(tmp_path: Path) -> None:
    text = _rules_toml().replace('id = "food.test"', 'id = "plant.test"')
    message = _error(tmp_path, text)
    assert "trigger id 'plant.test' of food is already used" in message


def test_parse_rules_names_the_source() -> None:
    with pytest.raises(RulesError, match=r"rules file inline\.toml is invalid"):
        parse_rules('[agencies.customs]\nname = "Customs"\n', "inline.toml")


def test_code_must_match_its_table_name(tmp_path: Path) -> None:
    text = _rules_toml().replace("[agencies.food]\n", '[agencies.food]\ncode = "plant"\n')
    message = _error(tmp_path, text)
    assert "[agencies.food] says code = 'plant'" in message

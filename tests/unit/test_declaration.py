"""The declaration model tells a trader which field is wrong and what to do about it."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import pytest
from pydantic import ValidationError

from broker.core.declaration import Declaration, validation_messages

Mutation = Callable[[dict[str, Any]], None]


def _sample_names() -> list[str]:
    folder = resources.files("broker.samples")
    return sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".json"))


def _beef() -> dict[str, Any]:
    text = (resources.files("broker.samples") / "02-frozen-beef-argentina.json").read_text()
    data: dict[str, Any] = json.loads(text)
    return data


def _messages(mutate: Mutation) -> list[str]:
    data = copy.deepcopy(_beef())
    mutate(data)
    with pytest.raises(ValidationError) as caught:
        Declaration.model_validate_json(json.dumps(data))
    return validation_messages(caught.value)


@pytest.mark.parametrize("name", _sample_names())
def test_every_shipped_sample_is_a_valid_declaration(name: str) -> None:
    text = (resources.files("broker.samples") / name).read_text(encoding="utf-8")
    declaration = Declaration.model_validate_json(text)
    assert declaration.items
    for item in declaration.items:
        assert item.net_mass_kg <= item.gross_mass_kg
    assert declaration.invoice.amount == sum(item.value for item in declaration.items)


def test_there_are_at_least_twelve_samples() -> None:
    assert len(_sample_names()) >= 12


def test_unknown_country() -> None:
    messages = _messages(lambda d: d["exporter"].update(country="XX"))
    assert messages == [
        "exporter.country: unknown country 'XX': use an ISO 3166-1 alpha-2 code such as KE"
    ]


def test_unknown_item_origin_country() -> None:
    messages = _messages(lambda d: d["items"][1].update(origin_country="UK"))
    assert messages == [
        "items.1.origin_country: unknown country 'UK': use an ISO 3166-1 alpha-2 code such as KE"
    ]


def test_unknown_currency() -> None:
    messages = _messages(lambda d: d["invoice"].update(currency="EUU"))
    assert messages == [
        "invoice.currency: unknown currency 'EUU': use an ISO 4217 code such as EUR"
    ]


def test_unknown_hs_chapter() -> None:
    messages = _messages(lambda d: d["items"][0].update(hs_code="770000"))
    assert messages == ["items.0.hs_code: HS code '770000': chapter 77 does not exist"]


@pytest.mark.parametrize("code", ["0202", "02023", "02023090123", "0202.30"])
def test_hs_code_of_wrong_length_or_form(code: str) -> None:
    messages = _messages(lambda d: d["items"][0].update(hs_code=code))
    assert messages == [f"items.0.hs_code: HS code '{code}' must be 6 to 10 digits"]


def test_negative_mass() -> None:
    messages = _messages(lambda d: d["items"][1].update(net_mass_kg="-1.5"))
    assert messages == ["items.1.net_mass_kg: Input should be greater than or equal to 0"]


def test_net_mass_above_gross_mass() -> None:
    messages = _messages(lambda d: d["items"][0].update(net_mass_kg="19200.5"))
    assert messages == ["items.0: net_mass_kg 19200.500 is above gross_mass_kg 19200.000"]


def test_duplicate_item_sequence() -> None:
    messages = _messages(lambda d: d["items"][1].update(sequence=1))
    assert len(messages) == 1
    assert "items.1.sequence: duplicate goods item sequence 1" in messages[0]


def test_more_than_999_items() -> None:
    def thousand_items(data: dict[str, Any]) -> None:
        item = data["items"][0]
        data["items"] = [dict(item, sequence=n % 999 + 1) for n in range(1000)]

    messages = _messages(thousand_items)
    assert len(messages) == 1
    assert "1000 goods items: a declaration holds at most 999" in messages[0]


def test_item_sequence_above_999() -> None:
    messages = _messages(lambda d: d["items"][1].update(sequence=1000))
    assert messages == ["items.1.sequence: Input should be less than or equal to 999"]


def test_no_items() -> None:
    messages = _messages(lambda d: d.update(items=[]))
    assert len(messages) == 1 and messages[0].startswith("items: ")


def test_unknown_field_is_rejected() -> None:
    messages = _messages(lambda d: d.update(colour="red"))
    assert messages == ["colour: Extra inputs are not permitted"]


def test_unknown_field_in_an_item_is_rejected() -> None:
    messages = _messages(lambda d: d["items"][0].update(hs="0202"))
    assert messages == ["items.0.hs: Extra inputs are not permitted"]


def test_several_problems_are_reported_together() -> None:
    def break_two(data: dict[str, Any]) -> None:
        data["destination_country"] = "ZZ"
        data["documents"][0]["type_code"] = "n853"

    messages = _messages(break_two)
    assert len(messages) == 2
    assert messages[0].startswith("destination_country: unknown country 'ZZ'")
    assert messages[1].startswith("documents.0.type_code: ")


def test_timestamp_without_zone_is_rejected() -> None:
    messages = _messages(lambda d: d.update(issued_at="2026-11-28T09:00:00"))
    assert messages == ["issued_at: timestamp must include a time zone, e.g. 2026-11-30T08:00:00Z"]


@pytest.mark.parametrize("stamp", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamp_outside_the_utc_range_is_rejected_not_an_overflow(stamp: str) -> None:
    # schemathesis generates such stamps (any date, any offset): astimezone overflowed, a 500.
    messages = _messages(lambda d: d.update(issued_at=stamp))
    assert messages == ["issued_at: timestamp is out of range once converted to UTC"]


def test_money_with_fractions_of_a_cent_is_rejected() -> None:
    messages = _messages(lambda d: d["items"][0].update(value="126000.005"))
    assert messages == ["items.0.value: Decimal input should have no more than 2 decimal places"]


@pytest.mark.parametrize("amount", [[1, None, [[290]]], [0, [1, 2], -2], []])
def test_a_list_as_an_amount_is_a_validation_error_not_a_crash(amount: list[Any]) -> None:
    """Decimal() reads a three-item list as (sign, digits, exponent) and raises a ValueError
    pydantic does not turn into a validation error (found by schemathesis)."""
    messages = _messages(lambda d: d["items"][0].update(gross_mass_kg=amount))
    assert len(messages) == 1
    assert messages[0].startswith("items.0.gross_mass_kg: ")
    assert "not a list" in messages[0]
    money = _messages(lambda d: d["invoice"].update(amount=amount))
    assert len(money) == 1 and money[0].startswith("invoice.amount: ")

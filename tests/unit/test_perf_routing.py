"""The hot-path shortcuts (issue 7) give exactly what the plain definitions give.

Routing goes through a trigger index (HS prefixes looked up, header checks remembered); here
every plan is compared with one built trigger by trigger from a plain reading of DESIGN §6,
for the shipped rules and for random rule books. The timestamp fast path and the remembered
key hashes are compared with the computations they skip.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from typing import Any

import pytest
from aiokafka.partitioner import murmur2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from broker.core.declaration import Declaration, GoodsItem, _utc_millis
from broker.core.messages import AgencyRoute, Requirement, SubmissionKind
from broker.core.routing import route
from broker.core.rules import RuleBook, Trigger, load_rules
from broker.runtime.memory import partition_for_key

NOW = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _samples() -> list[dict[str, Any]]:
    folder = resources.files("broker.samples")
    names = sorted(entry.name for entry in folder.iterdir() if entry.name.endswith(".json"))
    return [
        Declaration.model_validate_json((folder / name).read_text(encoding="utf-8")).model_dump()
        for name in names
    ]


def _declarations() -> list[Declaration]:
    """The samples, and every pair of them as one mixed consignment (items renumbered)."""
    samples = _samples()
    found = [Declaration.model_validate(sample) for sample in samples]
    for first, second in itertools.permutations(samples, 2):
        start = max(item["sequence"] for item in first["items"])
        items = [*first["items"]]
        items += [{**item, "sequence": start + n} for n, item in enumerate(second["items"], 1)]
        documents = [*first["documents"], *second["documents"]]
        try:
            found.append(
                Declaration.model_validate({**first, "items": items, "documents": documents})
            )
        except ValueError:  # more items than a declaration may hold
            continue
    return found


DECLARATIONS = _declarations()
DEFAULT_RULES = load_rules()


def _item_selected(trigger: Trigger, item: GoodsItem, declaration: Declaration) -> bool:
    """Every item condition of the trigger, read straight from the rules file's fields."""
    cited = {doc.type_code for doc in (*declaration.documents, *item.documents)}
    return all(
        (
            not trigger.hs_prefixes or any(item.hs_code.startswith(p) for p in trigger.hs_prefixes),
            not trigger.origin_countries or item.origin_country in trigger.origin_countries,
            not (trigger.dangerous_goods or trigger.un_numbers) or item.un_number is not None,
            not trigger.un_numbers or item.un_number in trigger.un_numbers,
            not trigger.cites or item.cites,
            not trigger.document_types or bool(cited & set(trigger.document_types)),
        )
    )


def _reference_items(trigger: Trigger, declaration: Declaration) -> list[int]:
    every = [item.sequence for item in declaration.items]
    if trigger.all_declarations:
        return every
    if trigger.procedures and declaration.type not in trigger.procedures:
        return []
    if trigger.destination_countries and (
        declaration.destination_country not in trigger.destination_countries
    ):
        return []
    if not trigger.selects_items:
        return every
    return [s.sequence for s in declaration.items if _item_selected(trigger, s, declaration)]


def _reference_routes(declaration: Declaration, rules: RuleBook) -> tuple[AgencyRoute, ...]:
    routes = []
    for agency in rules.in_order():
        fired = [(t, items) for t in agency.triggers if (items := _reference_items(t, declaration))]
        if not fired:
            continue
        required = any(t.requirement == "required" for t, _ in fired)
        routes.append(
            AgencyRoute(
                agency=agency.code,
                requirement=Requirement.REQUIRED if required else Requirement.MAY_BE_REQUIRED,
                reasons=tuple(t.id for t, _ in fired),
                deadline=NOW + timedelta(minutes=agency.sla_minutes),
                item_sequences=tuple(sorted({s for _, items in fired for s in items})),
            )
        )
    return tuple(routes)


def _routes(declaration: Declaration, rules: RuleBook) -> tuple[AgencyRoute, ...]:
    plan = route(
        declaration,
        rules,
        submission_id="t:1",
        version=1,
        kind=SubmissionKind.NEW,
        trader_id="t",
        payload_sha256="ab" * 32,
        now=NOW,
    )
    return plan.agencies


def test_shipped_rules_route_every_consignment_as_the_plain_definition() -> None:
    assert len(DECLARATIONS) > 100
    for declaration in DECLARATIONS:
        assert _routes(declaration, DEFAULT_RULES) == _reference_routes(declaration, DEFAULT_RULES)


# Condition values that the samples actually hit, and some they do not.
_HS = sorted({item.hs_code[:n] for d in DECLARATIONS for item in d.items for n in (2, 4, 6)})
_ORIGINS = sorted({item.origin_country for d in DECLARATIONS for item in d.items} | {"FR"})
_DESTINATIONS = sorted({d.destination_country for d in DECLARATIONS} | {"FR"})
_DOCUMENTS = sorted(set().union(*(d.document_codes() for d in DECLARATIONS)) | {"Z999"})
_UN = sorted({i.un_number for d in DECLARATIONS for i in d.items if i.un_number} | {"9999"})


def _some(values: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), max_size=3, unique=True)


_conditions = st.fixed_dictionaries(
    {},
    optional={
        "hs_prefixes": _some(_HS),
        "procedures": _some(["IMPORT", "EXPORT", "TRANSIT"]),
        "origin_countries": _some(_ORIGINS),
        "destination_countries": _some(_DESTINATIONS),
        "document_types": _some(_DOCUMENTS),
        "un_numbers": _some(_UN),
        "dangerous_goods": st.just(True),
        "cites": st.just(True),
    },
).map(lambda c: {k: v for k, v in c.items() if v} or {"all_declarations": True})

_trigger = st.tuples(st.sampled_from(["required", "may_be_required"]), _conditions)


@st.composite
def _rule_books(draw: st.DrawFn) -> RuleBook:
    data = DEFAULT_RULES.model_dump()
    for code, agency in data["agencies"].items():
        drawn = draw(st.lists(_trigger, min_size=1, max_size=4))
        agency["triggers"] = [
            {"id": f"{code}.t{n}", "description": "test", "requirement": req, **conditions}
            for n, (req, conditions) in enumerate(drawn)
        ]
    return RuleBook.model_validate(data)


@PROPERTY
@given(rules=_rule_books())
def test_any_rules_route_as_the_plain_definition(rules: RuleBook) -> None:
    for declaration in DECLARATIONS[::7]:
        assert _routes(declaration, rules) == _reference_routes(declaration, rules)


def _reference_utc_millis(value: datetime) -> datetime:
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


@given(
    moment=st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.sampled_from([UTC, timezone(timedelta(0)), timezone(timedelta(hours=-3))]),
    )
)
def test_timestamp_fast_path_gives_the_normalised_value(moment: datetime) -> None:
    expected = _reference_utc_millis(moment)
    result = _utc_millis(moment)
    assert (result, result.tzinfo, result.fold) == (expected, expected.tzinfo, expected.fold)


def test_timestamp_without_time_zone_is_still_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        _utc_millis(datetime(2026, 11, 30, 8, 0))


@given(key=st.binary(max_size=64), partitions=st.integers(1, 64))
def test_remembered_key_hash_is_kafkas_partition(key: bytes, partitions: int) -> None:
    expected = (murmur2(key) & 0x7FFFFFFF) % partitions
    assert partition_for_key(key, partitions) == expected
    assert partition_for_key(key, partitions) == expected  # the second time from memory

"""Partner-customs exchange in the pure core (issue 8, part 3): what is shared, how an import
is linked to its partner's export data, and which differences customs is shown."""

from __future__ import annotations

import copy
import json
from datetime import UTC, datetime
from decimal import Decimal
from importlib import resources
from typing import Any

import pytest

from broker.core.codec import Codec
from broker.core.declaration import Declaration
from broker.core.messages import (
    Decision,
    InformationPackage,
    Outcome,
    PartnerExport,
    PartnerLinkStatus,
)
from broker.core.partner import (
    export_record,
    is_final_release,
    link_partner_export,
    mismatches,
    replaces,
    shared_with,
)

UCR = "6DE8123456-SWM20261187"
RELEASED_AT = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)


def export_data() -> dict[str, Any]:
    text = resources.files("broker.samples").joinpath("11-dual-use-machine-tools-export.json")
    data: dict[str, Any] = json.loads(text.read_text())
    data["ucr"] = UCR
    return data


def import_of(export: dict[str, Any], **changes: Any) -> Declaration:
    """The import in India of the consignment exported from Germany."""
    data = copy.deepcopy(export)
    data.update(
        lrn="PPC-IM-2026-0077",
        type="IMPORT",
        procedure_code="4000",
        customs_office="INNSA100",
        declarant=data["importer"],
        transport={"mode": "SEA", "means_id": "IMO9456783", "arrival_at": "2026-12-18T06:00:00Z"},
    )
    data.update(changes)
    return Declaration.model_validate(data)


def decision(**changes: Any) -> Decision:
    values: dict[str, Any] = {
        "decision_id": "d" * 32,
        "submission_id": "sub-export-1",
        "version": 1,
        "trader_id": "DE8123456",
        "outcome": Outcome.RELEASED,
        "final": True,
        "decided_at": RELEASED_AT,
        "payload_sha256": "ab" * 32,
    }
    return Decision(**(values | changes))


def shared() -> PartnerExport:
    return export_record(Declaration.model_validate(export_data()), decision())


def test_only_exports_quoting_a_ucr_to_a_partner_are_shared() -> None:
    export = Declaration.model_validate(export_data())
    assert shared_with(export, {"IN"}) == "IN"
    assert shared_with(export, {"US"}) is None  # India is not a partner
    assert shared_with(export.model_copy(update={"ucr": None}), {"IN"}) is None
    assert shared_with(import_of(export_data()), {"IN", "DE"}) is None
    assert shared_with(None, {"IN"}) is None


def test_only_a_final_release_is_shared_and_the_record_copies_the_goods() -> None:
    assert is_final_release(decision())
    assert is_final_release(decision(outcome=Outcome.RELEASED_WITH_CONDITIONS))
    assert not is_final_release(decision(final=False))
    assert not is_final_release(decision(outcome=Outcome.REJECTED))
    with pytest.raises(ValueError, match="not a final release"):
        export_record(Declaration.model_validate(export_data()), decision(final=False))
    record = shared()
    assert record.ucr == UCR and record.export_country == "DE"
    assert record.destination_country == "IN" and record.export_reference == "sub-export-1"
    assert [i.hs_code for i in record.items] == ["845811", "845710"]
    assert record.released_at == RELEASED_AT
    codec = Codec()
    assert codec.decode(codec.encode(record), PartnerExport) == record


def test_later_release_replaces_whatever_the_reading_order() -> None:
    first = shared()
    later = first.model_copy(update={"released_at": datetime(2026, 12, 1, tzinfo=UTC)})
    assert replaces(None, first) and replaces(first, later)
    assert not replaces(later, first) and not replaces(first, first)


def test_import_matching_the_export_links_without_mismatches() -> None:
    link = link_partner_export(import_of(export_data()), shared(), {"DE"})
    assert link is not None and link.status is PartnerLinkStatus.LINKED
    assert link.export == shared() and link.mismatches == ()
    assert link.partner_country == "DE" and "agrees" in link.note


def test_under_declared_goods_show_up_as_mismatches() -> None:
    export = export_data()
    declared = copy.deepcopy(export)
    declared["items"][1]["net_mass_kg"] = "9000.000"  # 9800 exported
    declared["items"][1]["gross_mass_kg"] = "10100.000"
    declared["items"][1]["value"] = "150000.00"  # 200000 exported
    declared["items"][1]["supplementary_quantity"] = "2"
    declared["items"].append(
        {**declared["items"][0], "sequence": 3, "hs_code": "846011", "value": "1000.00"}
    )
    imported = import_of(declared, exporter={**export["exporter"], "identifier": "DE0000001"})
    found = mismatches(imported, shared())
    assert [m.subject for m in found] == [
        "exporter",
        "items HS 845710 net_mass_kg",
        "items HS 845710 supplementary_quantity",
        "items HS 845710 value",
        "items HS 846011",
    ]
    mass = found[1]
    assert (mass.exported, mass.declared) == ("9800.000", "9000.000")
    assert "-8.2 %" in mass.detail
    value = found[3]
    assert (value.exported, value.declared) == ("200000.00 EUR", "150000.00 EUR")
    link = link_partner_export(imported, shared(), {"DE"})
    assert link is not None and link.mismatches == found and "5 difference(s)" in link.note


def test_small_differences_within_tolerance_and_other_currency_values_are_not_mismatches() -> None:
    export = export_data()
    declared = copy.deepcopy(export)
    declared["items"][0]["net_mass_kg"] = "14400.000"  # -0.7 %: packing, moisture
    declared["invoice"]["currency"] = "INR"
    declared["items"][0]["value"] = "43000000.00"
    imported = import_of(declared)
    assert mismatches(imported, shared()) == ()
    link = link_partner_export(imported, shared(), {"DE"})
    assert link is not None and "values not compared" in link.note
    assert mismatches(imported, shared(), mass_tolerance=Decimal("0.001"))  # stricter: found


def test_import_without_partner_data_says_why() -> None:
    imported = import_of(export_data())
    waiting = link_partner_export(imported, None, {"DE"})
    assert waiting is not None and waiting.status is PartnerLinkStatus.NOT_RECEIVED
    assert waiting.export is None and "routed without it" in waiting.note
    no_exchange = link_partner_export(imported, None, {"US"})
    assert no_exchange is not None and no_exchange.status is PartnerLinkStatus.NO_EXCHANGE
    assert link_partner_export(imported.model_copy(update={"ucr": None}), None, {"DE"}) is None


def test_package_with_partner_link_round_trips_through_avro() -> None:
    imported = import_of(export_data(), items=[{**export_data()["items"][0], "value": "1.00"}])
    link = link_partner_export(imported, shared(), {"DE"})
    package = InformationPackage(
        lrn=imported.lrn,
        type=imported.type,
        procedure_code=imported.procedure_code,
        issued_at=imported.issued_at,
        customs_office=imported.customs_office,
        ucr=imported.ucr,
        partner=link,
    )
    codec = Codec()
    assert codec.decode(codec.encode(package), InformationPackage) == package


def test_ucr_is_validated() -> None:
    with pytest.raises(ValueError, match="ucr"):
        Declaration.model_validate(export_data() | {"ucr": "lower case and spaces"})

"""Partner-customs exchange end to end (issue 8, part 3): two single windows on one embedded
broker, Germany (exporting) and India (importing), each with its own topic prefix. Germany
shares a released export keyed by its UCR; India's router links an import quoting that UCR,
and customs' package carries the export data with every mismatch. An import whose export data
has not arrived is routed at once, saying so."""

from __future__ import annotations

import asyncio
import copy
from typing import Any

from border_stack import (
    Country,
    StartCountry,
    body,
    countries_fixture,  # noqa: F401  (the `countries` fixture)
    eventually,
    sample,
    settings_for,
)

from broker.audit import read_audit_trail
from broker.core.messages import PartnerExport, PartnerLinkStatus
from broker.core.topics import Topics
from broker.runtime.partner_exchange import EXPORT_HEADER, PartnerExchangeService
from broker.settings import PartnerSettings

EXPORTER = "DE8123456"  # the German exporter's EORI, as its API key's trader
IMPORTER = "IN3109876543"  # the Indian importer
EXPORTER_KEY = "key-exporter-de-0123456789"
IMPORTER_KEY = "key-importer-in-0123456789"
UCR = "6DE8123456-SWM20261187"


def machine_tools_export() -> dict[str, Any]:
    return sample("11-dual-use-machine-tools-export", ucr=UCR)


def machine_tools_import(lrn: str, ucr: str, *, under_declared: bool) -> dict[str, Any]:
    """The same consignment declared for import in India (customs office Nhava Sheva)."""
    data = copy.deepcopy(machine_tools_export())
    data.update(
        lrn=lrn,
        ucr=ucr,
        type="IMPORT",
        procedure_code="4000",
        customs_office="INNSA100",
        declarant=data["importer"],
        transport={"mode": "SEA", "means_id": "IMO9456783"},
        documents=[d for d in data["documents"] if d["type_code"] != "X002"],
    )
    if under_declared:
        data["items"][1].update(
            net_mass_kg="9000.000", gross_mass_kg="10100.000", value="150000.00"
        )
    return data


async def customs_package(country: Country, submission_id: str) -> Any:
    async def routed() -> Any:
        requests = await country.requests("customs", submission_id)
        return requests[0].package if requests else None

    return await eventually(routed, f"{submission_id}: customs' request")


async def test_released_export_is_shared_and_linked_to_the_import(
    kafka_bootstrap: str, topic_prefix: str, countries: StartCountry
) -> None:
    de_prefix, in_prefix = f"{topic_prefix}de", f"{topic_prefix}in"
    germany = await countries(
        settings_for(
            kafka_bootstrap,
            de_prefix,
            keys={EXPORTER_KEY: EXPORTER},
            partner=PartnerSettings(country="DE", partners={"IN": in_prefix}),
        )
    )
    india = await countries(
        settings_for(
            kafka_bootstrap,
            in_prefix,
            keys={IMPORTER_KEY: IMPORTER},
            partner=PartnerSettings(country="IN", partners={"DE": de_prefix}),
        )
    )

    # An import whose export is not released yet: routed at once, without the partner's data.
    async with india.client(IMPORTER_KEY) as importer:
        early = machine_tools_import("PPC-IM-2026-0070", "6DE8123456-NOTYET", under_declared=False)
        answer = await importer.post("/v1/submissions", content=body(early))
        assert answer.status_code == 202, answer.text
        early_id = answer.json()["submission_id"]
        package = await customs_package(india, early_id)
        assert package.partner.status is PartnerLinkStatus.NOT_RECEIVED
        assert package.partner.export is None and "routed without it" in package.partner.note

    # Germany releases the export and shares it, once, keyed by its UCR.
    async with germany.client(EXPORTER_KEY) as exporter:
        answer = await exporter.post("/v1/submissions", content=body(machine_tools_export()))
        assert answer.status_code == 202, answer.text
        export_id = answer.json()["submission_id"]
        view = await germany.view(
            exporter, export_id, lambda v: bool(v["decision"] and v["decision"]["final"]), "final"
        )
        assert view["decision"]["outcome"] == "RELEASED"
        assert view["decision"]["shared_with"] == "IN"

    outbox = germany.app.topics.partner_exchange("IN")
    assert outbox == Topics(de_prefix).partner_exchange("IN") == f"{de_prefix}.partner.exchange.in"

    async def shared() -> list[Any] | None:
        records = await germany.records(outbox)
        return records or None

    (record,) = await eventually(shared, "the export shared on Germany's partner topic")
    assert record.key == UCR.encode()
    assert dict(record.headers)[EXPORT_HEADER] == export_id.encode()
    export = germany.app.codec.decode(record.value or b"", PartnerExport)
    assert (export.export_country, export.destination_country) == ("DE", "IN")
    assert export.export_reference == export_id and export.outcome.value == "RELEASED"
    assert [i.hs_code for i in export.items] == ["845811", "845710"]

    inbox = india.app.partner_inbox()

    async def received() -> PartnerExport | None:
        return inbox.lookup(UCR)

    assert await eventually(received, "India's inbox holding the UCR") == export

    # India's import quoting the UCR: customs sees the export data and the mismatches.
    async with india.client(IMPORTER_KEY) as importer:
        declared = machine_tools_import("PPC-IM-2026-0077", UCR, under_declared=True)
        answer = await importer.post("/v1/submissions", content=body(declared))
        assert answer.status_code == 202, answer.text
        import_id = answer.json()["submission_id"]
        package = await customs_package(india, import_id)
        link = package.partner
        assert link.status is PartnerLinkStatus.LINKED and link.partner_country == "DE"
        assert link.export == export and package.ucr == UCR
        assert [m.subject for m in link.mismatches] == [
            "items HS 845710 net_mass_kg",
            "items HS 845710 value",
        ]
        assert (link.mismatches[0].exported, link.mismatches[0].declared) == (
            "9800.000",
            "9000.000",
        )
        assert (link.mismatches[1].exported, link.mismatches[1].declared) == (
            "200000.00 EUR",
            "150000.00 EUR",
        )
        # Only customs' package carries the partner's data.
        for agency in india.app.topics.agencies:
            if agency != "customs":
                for request in await india.requests(agency, import_id):
                    assert request.package is None or request.package.partner is None
        await india.view(
            importer, import_id, lambda v: bool(v["decision"] and v["decision"]["final"]), "final"
        )

    # One message per consignment, even after the decisions are all in; the export's audit
    # trail shows it was shared.
    assert len(await germany.records(outbox)) == 1
    trail = await read_audit_trail(
        germany.app.transport,
        germany.app.codec,
        germany.app.topics,
        export_id,
        partner_countries=["IN"],
    )
    (shared_event,) = trail.of_kind("partner-export")
    assert shared_event.record["ucr"] == UCR and "IN" in shared_event.summary


async def test_exchange_started_late_shares_what_was_released_once(
    kafka_bootstrap: str, topic_prefix: str, countries: StartCountry
) -> None:
    """The exchange service was down while the export was released: on assignment it finds
    the release on the topics and shares it; a restarted service does not share it again."""
    partner = PartnerSettings(country="DE", partners={"IN": f"{topic_prefix}in"})
    settings = settings_for(
        kafka_bootstrap, topic_prefix, keys={EXPORTER_KEY: EXPORTER}, partner=partner
    )
    germany = await countries(settings, exchange=False)
    async with germany.client(EXPORTER_KEY) as exporter:
        answer = await exporter.post("/v1/submissions", content=body(machine_tools_export()))
        export_id = answer.json()["submission_id"]
        await germany.view(
            exporter, export_id, lambda v: bool(v["decision"] and v["decision"]["final"]), "final"
        )
    outbox = germany.app.topics.partner_exchange("IN")

    for attempt in range(2):  # a late start, then a restart
        service = germany.app.partner_exchange(group_id=f"{topic_prefix}.swb-partner")
        stopping = asyncio.Event()
        task = asyncio.create_task(service.run(stopping))
        try:

            async def shared_by_it(
                task: asyncio.Task[None] = task, service: PartnerExchangeService = service
            ) -> bool | None:
                if task.done():
                    await task  # raises what stopped it
                return True if service.shared(export_id, 1) else None

            await eventually(shared_by_it, f"start {attempt + 1}: the release known as shared")
        finally:
            stopping.set()
            await task
        records = await germany.records(outbox)
        assert [r.key for r in records] == [UCR.encode()], f"start {attempt + 1}"

"""Pre-arrival processing end to end on the embedded broker (issue 8, part 2): a declaration
lodged before its goods arrive is decided at once, its decision says the release takes effect
on arrival, and the trader's arrival notice (POST /v1/submissions/{id}/arrival) completes it.
The decisions replay to the same ids and content."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from border_stack import (
    KEY,
    OTHER_KEY,
    TRADER,
    Country,
    StartCountry,
    body,
    countries_fixture,  # noqa: F401  (the `countries` fixture)
    sample,
    settings_for,
    sha256,
)

from broker.core.aggregation import (
    ArrivalNoticed,
    DecisionIssued,
    Event,
    PlanReceived,
    ResponseReceived,
    new_state,
    step,
)
from broker.core.messages import AgencyResponse, ArrivalNotice, Decision, RoutingPlan


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def beef(lrn: str, *, arrives_in: timedelta | None) -> dict[str, Any]:
    """The frozen beef sample (customs, veterinary, food), arriving `arrives_in` from now."""
    data = sample("02-frozen-beef-argentina", lrn=lrn)
    arrival = None if arrives_in is None else iso(datetime.now(UTC) + arrives_in)
    data["transport"] = {**data["transport"], "arrival_at": arrival}
    return data


async def replayed_decisions(country: Country, submission_id: str) -> list[Decision]:
    """The pure state machine fed the submission's records from the topics in another order
    than the aggregator read them (arrivals, then answers, then plans)."""
    app = country.app
    key = submission_id.encode()
    events: list[Event] = []
    for record in await country.records(app.topics.arrivals):
        if record.key == key:
            events.append(ArrivalNoticed(app.codec.decode(record.value or b"", ArrivalNotice)))
    for agency in app.topics.agencies:
        for record in await country.records(app.topics.responses(agency)):
            if record.key == key:
                answer = app.codec.decode(record.value or b"", AgencyResponse)
                events.append(ResponseReceived(answer, agency))
    for record in await country.records(app.topics.routing):
        if record.key == key:
            events.append(PlanReceived(app.codec.decode(record.value or b"", RoutingPlan)))
    state = new_state(submission_id)
    issued: list[Decision] = []
    for event in events:
        state, outputs = step(state, event, datetime.now(UTC))
        issued += [o.decision for o in outputs if isinstance(o, DecisionIssued)]
    return issued


async def test_pre_arrival_release_takes_effect_when_the_goods_arrive(
    kafka_bootstrap: str, topic_prefix: str, countries: StartCountry
) -> None:
    country = await countries(settings_for(kafka_bootstrap, topic_prefix))
    declared = body(beef("PRE-ARRIVAL-0001", arrives_in=timedelta(days=2)))
    async with country.client() as client, country.client(OTHER_KEY) as other:
        accepted = await client.post("/v1/submissions", content=declared)
        assert accepted.status_code == 202, accepted.text
        sid = accepted.json()["submission_id"]

        # Processed at once: released before the goods arrive, taking effect on arrival.
        view = await country.view(
            client, sid, lambda v: bool(v["decision"] and v["decision"]["final"]), "final"
        )
        decision = view["decision"]
        assert decision["outcome"] == "RELEASED"
        assert decision["release_on_arrival"] is True and decision["arrived_at"] is None
        assert decision["submitted_by"] == TRADER
        assert decision["payload_sha256"] == sha256(declared)
        assert view["arrival_url"] == f"/v1/submissions/{sid}/arrival"

        # Only the owner may notify, and never an arrival in the future.
        assert (await other.post(f"/v1/submissions/{sid}/arrival")).status_code == 404
        future = {"arrived_at": iso(datetime.now(UTC) + timedelta(hours=3))}
        refused = await client.post(f"/v1/submissions/{sid}/arrival", json=future)
        assert refused.status_code == 422
        assert refused.json()["errors"][0]["field"] == "arrived_at"
        unknown = await client.post(f"/v1/submissions/{sid}/arrival", json={"berth": "K7"})
        assert unknown.status_code == 422

        arrived_at = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
        notice = {"arrived_at": iso(arrived_at), "means_id": "IMO9321483"}
        arrival = await client.post(f"/v1/submissions/{sid}/arrival", json=notice)
        assert arrival.status_code == 202, arrival.text
        assert arrival.headers.get("Idempotent-Replayed") is None
        assert datetime.fromisoformat(arrival.json()["arrived_at"]) == arrived_at

        view = await country.view(
            client, sid, lambda v: v["decision"]["arrived_at"] is not None, "re-issued on arrival"
        )
        decision = view["decision"]
        assert decision["final"] and decision["outcome"] == "RELEASED"
        assert decision["release_on_arrival"] is False
        assert datetime.fromisoformat(decision["arrived_at"]) == arrived_at
        assert datetime.fromisoformat(view["arrived_at"]) == arrived_at

        # The first notice counts: a repeat answers it again and writes nothing.
        again = await client.post(f"/v1/submissions/{sid}/arrival", json={})
        assert again.status_code == 202 and again.headers["Idempotent-Replayed"] == "true"
        assert again.json() == arrival.json()

    notices = [
        r for r in await country.records(country.app.topics.arrivals) if r.key == sid.encode()
    ]
    assert len(notices) == 1
    issued = await country.decisions(sid)
    finals = [d for d in issued if d.final]
    assert [(d.release_on_arrival, d.arrived_at) for d in finals] == [
        (True, None),
        (False, arrived_at),
    ]
    assert all(d.submitted_by == TRADER and d.received_at is not None for d in issued)

    # Deterministic: replaying the topics in another order rebuilds the last decision, id and
    # content; and the decision on arrival names the same version as received.
    replayed = await replayed_decisions(country, sid)
    assert replayed[-1] == issued[-1]
    assert issued[-1].version == 1 and issued[-1].payload_sha256 == sha256(declared)


async def test_declaration_lodged_after_arrival_needs_no_notice(
    kafka_bootstrap: str, topic_prefix: str, countries: StartCountry
) -> None:
    country = await countries(settings_for(kafka_bootstrap, topic_prefix))
    async with country.client(KEY) as client:
        arrived = beef("POST-ARRIVAL-0001", arrives_in=-timedelta(hours=6))
        sid = (await client.post("/v1/submissions", content=body(arrived))).json()["submission_id"]
        no_arrival_yet = beef("NO-ARRIVAL-TIME-0001", arrives_in=None)  # an import: awaited
        waiting = (await client.post("/v1/submissions", content=body(no_arrival_yet))).json()

        view = await country.view(
            client, sid, lambda v: bool(v["decision"] and v["decision"]["final"]), "final"
        )
        assert view["decision"]["outcome"] == "RELEASED"
        assert view["decision"]["release_on_arrival"] is False
        refused = await client.post(f"/v1/submissions/{sid}/arrival")
        assert refused.status_code == 409
        assert refused.json()["type"].endswith("arrival-not-awaited")
        assert "lodged after the goods arrived" in refused.json()["detail"]

        pending = await country.view(
            client,
            waiting["submission_id"],
            lambda v: bool(v["decision"] and v["decision"]["final"]),
            "final",
        )
        assert pending["decision"]["release_on_arrival"] is True

    # Every decision of the declaration lodged after arrival, pending or final, releases at once.
    issued = await country.decisions(sid)
    assert issued and issued[-1].final
    assert not any(d.release_on_arrival or d.arrived_at for d in issued)

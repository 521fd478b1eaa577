"""Poison records on every input topic (DESIGN §4): garbage bytes, truncated Avro, an unknown
schema fingerprint and schema-valid records that fail validation never crash a consumer. Each
lands in `<prefix>.dlq` with its original bytes and headers naming the reason and the exact
source, and the good record written after them (same key, same partition) is still processed."""

from __future__ import annotations

import asyncio
import copy
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import pytest
from helpers import (
    TRADER,
    WAIT_S,
    DecisionWatcher,
    Running,
    answer,
    assert_dead_letter,
    beef_and_rifle,
    locate,
    new_submission,
    produce_raw,
    read_topic,
    respond,
    submit,
    wait_for_dlq,
    wait_for_topic,
    wait_until,
)
from pydantic import BaseModel

from broker.bootstrap import App
from broker.core.codec import Codec
from broker.core.declaration import now_utc
from broker.core.ids import request_id_for
from broker.core.messages import (
    AgencyRequest,
    AgencyResponse,
    AgencyRoute,
    AgencyStatus,
    Outcome,
    RequestKind,
    Requirement,
    RoutingPlan,
    SubmissionKind,
)
from broker.core.routing import information_package
from broker.runtime.dlq import REASON, SERVICE, header
from broker.runtime.transport import Record

pytestmark = pytest.mark.kafka

UNKNOWN_FINGERPRINT = 0x0123456789ABCDEF


@dataclass(frozen=True)
class Poison:
    name: str
    value: bytes
    reason: str


def poisons(codec: Codec, good: BaseModel, invalid: dict[str, Any]) -> list[Poison]:
    """The four kinds of bad record, built from a good one of the topic's type, plus one that
    is schema-valid but breaks the model's rules (`invalid`, encoded without pydantic)."""
    encoded = codec.encode(good)
    schema = type(good).__name__
    return [
        Poison("garbage", b"\x7fthis is not Avro at all", "bad-magic"),
        Poison("truncated", encoded[: len(encoded) // 2], "truncated"),
        Poison(
            "unknown-fingerprint",
            encoded[:2] + UNKNOWN_FINGERPRINT.to_bytes(8, "little") + encoded[10:],
            "unknown-fingerprint",
        ),
        Poison("invalid-record", codec.encode_dict(schema, invalid), "invalid-record"),
    ]


async def write_poisons(app: App, topic: str, key: bytes, bad: Sequence[Poison]) -> None:
    for poison in bad:  # one by one: each is its own record before the good one
        await produce_raw(app, topic, poison.value, key)


async def check_dead_letters(
    app: App, dead: list[Record], topic: str, bad: Sequence[Poison], service: str
) -> None:
    mine = [r for r in dead if header(r, "swb.source.topic") == topic]
    assert sorted(header(r, REASON) or "" for r in mine) == sorted(p.reason for p in bad), topic
    for poison in bad:
        (letter,) = [r for r in mine if r.value == poison.value]
        await assert_dead_letter(app.transport, letter, source_topic=topic, reason=poison.reason)
        assert service in (header(letter, SERVICE) or ""), "the DLQ names who refused it"


async def assert_after_poisons(app: App, topic: str, good: bytes, bad: Sequence[Poison]) -> None:
    """The good record sits after every bad one in the same partition: processing went on."""
    good_record = await locate(app.transport, topic, good)
    for poison in bad:
        record = await locate(app.transport, topic, poison.value)
        assert record.partition == good_record.partition
        assert record.offset < good_record.offset


async def test_router_dead_letters_bad_submissions_and_goes_on(app: App) -> None:
    submission = new_submission(beef_and_rifle("DLQ-SUB-1"), now=now_utc())
    sid = submission.submission_id
    data = submission.model_dump(mode="python")
    net_above_gross = copy.deepcopy(data)
    item = net_above_gross["declaration"]["items"][0]
    item["net_mass_kg"] = item["gross_mass_kg"] + 1
    unknown_country = copy.deepcopy(data)
    unknown_country["declaration"]["export_country"] = "ZZ"
    bad = [
        *poisons(app.codec, submission, net_above_gross),
        Poison(
            "unknown-country",
            app.codec.encode_dict("Submission", unknown_country),
            "invalid-record",
        ),
    ]
    running = Running()
    running.start("router", app.router())
    try:
        await write_poisons(app, app.topics.submissions, sid.encode(), bad)
        await submit(app, submission)
        async with asyncio.timeout(WAIT_S):
            await running.ready()
            plans = await wait_for_topic(
                app.transport, app.topics.routing, lambda rs: len(rs) >= 1, "the good one routes"
            )
            dead = await wait_for_dlq(app, len(bad))
    finally:
        await running.stop()

    (plan,) = [app.codec.decode(r.value or b"", RoutingPlan) for r in plans]
    assert plan.submission_id == sid
    assert len(dead) == len(bad)
    await check_dead_letters(app, dead, app.topics.submissions, bad, "router")
    invalid = [r for r in dead if r.value == bad[-1].value]
    message = header(invalid[0], "swb.error.message") or ""
    assert "export_country" in message  # the message names the field
    await assert_after_poisons(app, app.topics.submissions, app.codec.encode(submission), bad)


async def test_aggregator_dead_letters_bad_plans_and_answers_and_goes_on(app: App) -> None:
    now = now_utc()
    sid = "sub-dlq-aggregator-1"
    agencies = ("customs", "food", "veterinary")
    plan = RoutingPlan(
        submission_id=sid,
        version=1,
        kind=SubmissionKind.NEW,
        trader_id=TRADER,
        planned_at=now,
        payload_sha256="ab" * 32,
        agencies=tuple(
            AgencyRoute(
                agency=agency,
                requirement=Requirement.REQUIRED,
                reasons=(f"{agency}.test",),
                deadline=now + timedelta(hours=4),
                item_sequences=(1,),
            )
            for agency in agencies
        ),
    )
    version_zero = {**plan.model_dump(mode="python"), "version": 0}
    plan_poisons = poisons(app.codec, plan, version_zero)
    answers = {a: answer(sid, a, AgencyStatus.CLEARED, at=now) for a in agencies}
    answer_poisons = {
        agency: poisons(app.codec, response, {**response.model_dump(mode="python"), "sequence": -1})
        for agency, response in answers.items()
    }

    running = Running()
    decisions = DecisionWatcher(app.transport, app.codec, app.topics)
    running.start("aggregator", app.aggregator())
    running.start("decisions", decisions)
    try:
        key = sid.encode()
        await write_poisons(app, app.topics.routing, key, plan_poisons)
        await produce_raw(app, app.topics.routing, app.codec.encode(plan), key)
        for agency, bad in answer_poisons.items():
            await write_poisons(app, app.topics.responses(agency), key, bad)
        await respond(app, *answers.values())
        async with asyncio.timeout(WAIT_S):
            await running.ready()
            final = await decisions.wait_latest(
                sid, lambda d: d.final, "the good plan and answers decide", running
            )
            dead = await wait_for_dlq(app, 4 * (1 + len(agencies)))
    finally:
        await running.stop()

    assert final.outcome is Outcome.RELEASED
    assert len(dead) == 4 * (1 + len(agencies))
    await check_dead_letters(app, dead, app.topics.routing, plan_poisons, "aggregator")
    await assert_after_poisons(app, app.topics.routing, app.codec.encode(plan), plan_poisons)
    for agency, bad in answer_poisons.items():
        topic = app.topics.responses(agency)
        await check_dead_letters(app, dead, topic, bad, "aggregator")
        await assert_after_poisons(app, topic, app.codec.encode(answers[agency]), bad)


async def test_connector_dead_letters_bad_requests_and_goes_on(app: App) -> None:
    now = now_utc()
    submission = new_submission(beef_and_rifle("DLQ-REQ-1"), now=now)
    sid = submission.submission_id
    assert submission.declaration is not None
    route = AgencyRoute(
        agency="food",
        requirement=Requirement.REQUIRED,
        reasons=("food.imported-food",),
        deadline=now + timedelta(hours=4),
        item_sequences=(1,),
    )
    request = AgencyRequest(
        request_id=request_id_for(sid, 1, "food", RequestKind.REVIEW),
        submission_id=sid,
        version=1,
        agency="food",
        kind=RequestKind.REVIEW,
        requirement=Requirement.REQUIRED,
        reasons=route.reasons,
        deadline=route.deadline,
        sent_at=now,
        package=information_package(submission.declaration, route, app.rules),
    )
    bad = [
        *poisons(app.codec, request, {**request.model_dump(mode="python"), "version": 0}),
        Poison(
            "other-agency",
            app.codec.encode(request.model_copy(update={"agency": "police"})),
            "agency-mismatch",
        ),
    ]
    handled: list[AgencyRequest] = []

    async def handler(got: AgencyRequest) -> list[AgencyResponse]:
        handled.append(got)
        return [answer(got.submission_id, "food", AgencyStatus.CLEARED, at=now)]

    topic = app.topics.requests("food")
    running = Running()
    running.start("food", app.connector("food", handler))
    try:
        await write_poisons(app, topic, sid.encode(), bad)
        await produce_raw(app, topic, app.codec.encode(request), sid.encode())
        async with asyncio.timeout(WAIT_S):
            await running.ready()
            await wait_until(lambda: handled, "the good request is handled", running)
            answered = await wait_for_topic(
                app.transport, app.topics.responses("food"), lambda rs: len(rs) >= 1, "answer"
            )
            dead = await wait_for_dlq(app, len(bad))
    finally:
        await running.stop()

    assert handled == [request]
    (response,) = [app.codec.decode(r.value or b"", AgencyResponse) for r in answered]
    assert (response.submission_id, response.agency) == (sid, "food")
    assert len(dead) == len(bad)
    await check_dead_letters(app, dead, topic, bad, "food")
    await assert_after_poisons(app, topic, app.codec.encode(request), bad)
    assert await read_topic(app.transport, app.topics.responses("police")) == []

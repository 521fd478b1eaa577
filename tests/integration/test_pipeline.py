"""The whole flow on the embedded broker: submission → router → agency requests; agency answers
→ aggregator → coordinated decision (DESIGN §3-5). The router and the aggregator run in the
test's loop; the test plays the agencies by writing AgencyResponse records to their topics."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

import pytest
import pytest_asyncio
from helpers import (
    TRADER,
    WAIT_S,
    DecisionWatcher,
    Running,
    answer,
    assert_dead_letter,
    beef_and_rifle,
    content,
    kafka_settings,
    minutes_after,
    new_submission,
    read_topic,
    requests_by_agency,
    respond,
    statuses,
    submit,
    wait_for_dlq,
    wait_for_topic,
    wait_until,
)

from broker.bootstrap import App, open_app
from broker.core.declaration import now_utc
from broker.core.intake import cancel
from broker.core.messages import (
    AgencyResponse,
    AgencyStatus,
    Decision,
    DocumentRequest,
    InformationPackage,
    Outcome,
    RequestKind,
    RequiredDocument,
)
from broker.runtime.dlq import REASON, SERVICE, header

pytestmark = pytest.mark.kafka

MIXED = {"customs", "veterinary", "food", "police"}
BEEF, RIFLE = 1, 2


@dataclass
class Pipeline:
    app: App
    running: Running
    decisions: DecisionWatcher

    def not_counted(self, agency: str, reason: str) -> float:
        value = self.app.metrics.registry.get_sample_value(
            "swb_answers_not_counted_total", {"agency": agency, "reason": reason}
        )
        return value or 0.0

    async def wait_not_counted(self, agency: str, reason: str, before: float) -> None:
        async with asyncio.timeout(WAIT_S):
            await wait_until(
                lambda: self.not_counted(agency, reason) > before,
                f"the aggregator kept {agency}'s answer for audit ({reason})",
                self.running,
            )

    async def wait_latest(
        self, sid: str, condition: Callable[[Decision], bool], what: str
    ) -> Decision:
        async with asyncio.timeout(WAIT_S):
            return await self.decisions.wait_latest(sid, condition, what, self.running)

    async def answer_and_wait(self, response: AgencyResponse) -> Decision:
        """Answer, then wait for the decision that shows the answer."""
        await respond(self.app, response)
        return await self.wait_latest(
            response.submission_id,
            lambda d: (
                d.version == response.version
                and any(
                    line.agency == response.agency
                    and line.status.value == response.status.value
                    and line.answered_at == response.answered_at
                    for line in d.agencies
                )
            ),
            f"{response.agency} {response.status.value} shows in the decision",
        )


@pytest_asyncio.fixture
async def pipeline(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[Pipeline]:
    async with open_app(kafka_settings(kafka_bootstrap, topic_prefix)) as app:
        running = Running()
        decisions = DecisionWatcher(app.transport, app.codec, app.topics)
        running.start("router", app.router())
        running.start("aggregator", app.aggregator())
        running.start("decisions", decisions)
        try:
            async with asyncio.timeout(WAIT_S):
                await running.ready()
            yield Pipeline(app, running, decisions)
        finally:
            await running.stop()


async def submit_mixed(pipeline: Pipeline, lrn: str, now: datetime) -> str:
    """Submit the beef + rifle declaration; return its id once its plan shows as a decision."""
    submission = new_submission(beef_and_rifle(lrn), now=now)
    await submit(pipeline.app, submission)
    first = await pipeline.wait_latest(
        submission.submission_id, lambda d: True, "the first decision"
    )
    assert first.outcome is Outcome.PENDING and not first.final
    assert statuses(first) == dict.fromkeys(MIXED, "PENDING")
    return submission.submission_id


async def test_each_routed_agency_gets_only_its_information_package(pipeline: Pipeline) -> None:
    sid = await submit_mixed(pipeline, "MIX-FANOUT-1", now_utc())

    requests = await requests_by_agency(pipeline.app)  # all twelve requests topics
    assert {agency for agency, got in requests.items() if got} == MIXED
    package: dict[str, InformationPackage] = {}
    for agency in MIXED:
        (request,) = requests[agency]
        assert (request.submission_id, request.version) == (sid, 1)
        assert request.kind is RequestKind.REVIEW
        assert request.agency == agency
        assert request.package is not None
        package[agency] = request.package

    def items(agency: str) -> list[int]:
        return [item.sequence for item in package[agency].items]

    assert items("customs") == [BEEF, RIFLE]
    assert items("veterinary") == [BEEF]
    assert items("food") == [BEEF]
    assert items("police") == [RIFLE]
    assert package["police"].items[0].hs_code.startswith("93")
    assert package["veterinary"].items[0].hs_code.startswith("02")
    # Only customs needs the value of the goods (the rules' package lists).
    assert package["customs"].invoice is not None
    for agency in ("police", "veterinary", "food"):
        assert package[agency].invoice is None, agency


class ExpectedDecision:
    """DESIGN §5, independently of the core: per agency the latest answer by the agency's own
    (answer time, sequence) counts; worst wins; final once every agency is done or one rejects;
    nothing changes after the final decision."""

    RANK: ClassVar[dict[str, tuple[int, str]]] = {
        "CLEARED": (1, "RELEASED"),
        "CLEARED_WITH_CONDITIONS": (2, "RELEASED_WITH_CONDITIONS"),
        "PENDING": (3, "PENDING"),
        "DOCUMENTS_REQUIRED": (4, "DOCUMENTS_REQUIRED"),
        "INSPECTION": (5, "INSPECTION"),
        "HOLD": (6, "HOLD"),
        "REJECTED": (7, "REJECTED"),
    }
    TERMINAL: ClassVar[set[str]] = {
        "CLEARED",
        "CLEARED_WITH_CONDITIONS",
        "REJECTED",
        "NOT_CONCERNED",
    }

    def __init__(self, agencies: set[str]) -> None:
        self.agencies = agencies
        self.latest: dict[str, AgencyResponse] = {}
        self.final = False

    def deliver(self, response: AgencyResponse) -> str:
        """'counted', or the reason the aggregator keeps the answer for audit only."""
        if self.final:
            return "late-after-final"
        current = self.latest.get(response.agency)
        order = (response.answered_at, response.sequence)
        if current is not None and order <= (current.answered_at, current.sequence):
            return "older-answer"
        self.latest[response.agency] = response
        self.final = self.outcome() == "REJECTED" or all(
            status in self.TERMINAL for status in self.statuses().values()
        )
        return "counted"

    def statuses(self) -> dict[str, str]:
        return {
            agency: self.latest[agency].status.value if agency in self.latest else "PENDING"
            for agency in self.agencies
        }

    def outcome(self) -> str:
        concerned = [s for s in self.statuses().values() if s != "NOT_CONCERNED"]
        return max((self.RANK[s] for s in concerned), default=self.RANK["CLEARED"])[1]


def mixed_answers(sid: str, now: datetime) -> dict[str, AgencyResponse]:
    def at(minutes: float) -> datetime:
        return minutes_after(now, minutes)

    return {
        "customs": answer(sid, "customs", AgencyStatus.CLEARED, at=at(1)),
        "vet": answer(
            sid,
            "veterinary",
            AgencyStatus.CLEARED_WITH_CONDITIONS,
            at=at(2),
            conditions=("Keep below -18 °C to the approved cold store",),
        ),
        "food-inspects": answer(sid, "food", AgencyStatus.INSPECTION, at=at(3)),
        "police-inspects": answer(sid, "police", AgencyStatus.INSPECTION, at=at(4)),
        "food-clears": answer(sid, "food", AgencyStatus.CLEARED, at=at(30), sequence=2),
        "police-clears": answer(sid, "police", AgencyStatus.CLEARED, at=at(31), sequence=2),
    }


ORDERS = {
    "as-they-happened": [
        "customs",
        "vet",
        "food-inspects",
        "police-inspects",
        "food-clears",
        "police-clears",
    ],
    "reversed": [
        "police-clears",
        "food-clears",
        "police-inspects",
        "food-inspects",
        "vet",
        "customs",
    ],
    "shuffled": [
        "food-clears",
        "police-inspects",
        "customs",
        "food-inspects",
        "vet",
        "police-clears",
    ],
}


async def test_answers_in_any_order_give_one_coordinated_decision(pipeline: Pipeline) -> None:
    now = now_utc()
    finals: dict[str, Decision] = {}
    for order_name, order in ORDERS.items():
        sid = await submit_mixed(pipeline, f"MIX-ORDER-{order_name}", now)
        answers = mixed_answers(sid, now)
        expected = ExpectedDecision(MIXED)
        history = [dict.fromkeys(MIXED, "PENDING")]
        for name in order:
            response = answers[name]
            before = pipeline.not_counted(response.agency, "older-answer")
            before_late = pipeline.not_counted(response.agency, "late-after-final")
            verdict = expected.deliver(response)
            if verdict == "counted":
                decision = await pipeline.answer_and_wait(response)
                history.append(expected.statuses())
                assert statuses(decision) == expected.statuses(), (order_name, name)
                assert decision.outcome.value == expected.outcome(), (order_name, name)
                assert decision.final is expected.final, (order_name, name)
                inspecting = [a for a, s in expected.statuses().items() if s == "INSPECTION"]
                if len(inspecting) > 1:  # one joint inspection, not several
                    assert decision.joint_inspection is not None
                    assert set(decision.joint_inspection.agencies) == set(inspecting)
            else:
                await respond(pipeline.app, response)
                counter = before if verdict == "older-answer" else before_late
                await pipeline.wait_not_counted(response.agency, verdict, counter)

        # One decision per change, in order; exactly one final decision.
        issued = pipeline.decisions.of(sid)
        assert [statuses(d) for d in issued] == history, order_name
        assert [d.final for d in issued].count(True) == 1, order_name
        assert issued[-1].final and issued[-1].outcome is Outcome.RELEASED_WITH_CONDITIONS
        finals[order_name] = issued[-1]

    # Whatever the order, the trader gets the same final decision.
    def comparable(decision: Decision) -> dict[str, object]:
        data = content(decision)
        for key in ("decision_id", "submission_id", "payload_sha256"):
            data.pop(key)
        return data

    first, *others = finals.values()
    for other in others:
        assert comparable(other) == comparable(first)
    vet = next(line for line in first.agencies if line.agency == "veterinary")
    assert vet.conditions == ("Keep below -18 °C to the approved cold store",)
    assert await read_topic(pipeline.app.transport, pipeline.app.topics.dlq) == []


async def test_amendment_replaces_the_version(pipeline: Pipeline) -> None:
    now = now_utc()
    sid = await submit_mixed(pipeline, "MIX-AMEND-1", now)
    deadline = minutes_after(now, 2 * 24 * 60)
    health = DocumentRequest(type_code="C678", description="Health attestation", deadline=deadline)
    await pipeline.answer_and_wait(answer(sid, "customs", AgencyStatus.CLEARED, at=now))
    await pipeline.answer_and_wait(answer(sid, "police", AgencyStatus.CLEARED, at=now))
    asking = await pipeline.answer_and_wait(
        answer(sid, "veterinary", AgencyStatus.DOCUMENTS_REQUIRED, at=now, documents=(health,))
    )
    # Worst wins: documents required ranks above an agency still pending (food).
    assert asking.outcome is Outcome.DOCUMENTS_REQUIRED and not asking.final
    asking = await pipeline.answer_and_wait(answer(sid, "food", AgencyStatus.CLEARED, at=now))
    assert asking.outcome is Outcome.DOCUMENTS_REQUIRED and not asking.final
    assert asking.documents_required == (
        RequiredDocument(
            agency="veterinary",
            type_code="C678",
            description="Health attestation",
            deadline=deadline,
        ),
    )

    # Version 2: the rifle is gone, the attestation is cited.
    amended = beef_and_rifle("MIX-AMEND-1")
    amended["items"] = amended["items"][:1]
    amended["documents"].append({"type_code": "C678", "id": "HA-2026-1", "issuer": "SENASA"})
    later = minutes_after(now, 60)
    await submit(pipeline.app, new_submission(amended, now=later, version=2, submission_id=sid))
    v2 = await pipeline.wait_latest(sid, lambda d: d.version == 2, "version 2 is decided")
    # Answers to version 1 do not count for version 2; the police are no longer concerned.
    assert statuses(v2) == dict.fromkeys(["customs", "veterinary", "food"], "PENDING")
    assert v2.outcome is Outcome.PENDING and not v2.documents_required

    requests = await requests_by_agency(pipeline.app)
    assert [(r.version, r.kind) for r in requests["police"]] == [
        (1, RequestKind.REVIEW),
        (2, RequestKind.WITHDRAWAL),
    ]
    for agency in ("customs", "veterinary", "food"):
        assert [(r.version, r.kind) for r in requests[agency]] == [
            (1, RequestKind.REVIEW),
            (2, RequestKind.REVIEW),
        ], agency
        package = requests[agency][1].package
        assert package is not None and [i.sequence for i in package.items] == [BEEF]
    vet_package = requests["veterinary"][1].package
    assert vet_package is not None and "C678" in {d.type_code for d in vet_package.documents}

    # A late answer to version 1 is kept for audit and changes nothing.
    before = pipeline.not_counted("veterinary", "superseded-version")
    await respond(pipeline.app, answer(sid, "veterinary", AgencyStatus.CLEARED, at=later))
    await pipeline.wait_not_counted("veterinary", "superseded-version", before)
    assert pipeline.decisions.latest(sid) == v2

    for agency in ("customs", "veterinary"):
        await pipeline.answer_and_wait(
            answer(sid, agency, AgencyStatus.CLEARED, at=later, version=2)
        )
    final = await pipeline.answer_and_wait(
        answer(sid, "food", AgencyStatus.CLEARED_WITH_CONDITIONS, at=later, version=2)
    )
    assert final.final and final.outcome is Outcome.RELEASED_WITH_CONDITIONS
    assert len(pipeline.decisions.finals(sid, 2)) == 1
    assert pipeline.decisions.finals(sid, 1) == []


async def test_cancellation_withdraws_every_agency(pipeline: Pipeline) -> None:
    now = now_utc()
    sid = await submit_mixed(pipeline, "MIX-CANCEL-1", now)
    await pipeline.answer_and_wait(answer(sid, "customs", AgencyStatus.CLEARED, at=now))

    cancellation = cancel(
        sid, version=2, trader_id=TRADER, channel="test", now=now, reason="order lost"
    )
    await submit(pipeline.app, cancellation)
    cancelled = await pipeline.wait_latest(
        sid, lambda d: d.version == 2, "the cancellation is decided"
    )
    assert cancelled.outcome is Outcome.CANCELLED and cancelled.final

    requests = await requests_by_agency(pipeline.app)
    for agency in MIXED:
        assert [(r.version, r.kind) for r in requests[agency]] == [
            (1, RequestKind.REVIEW),
            (2, RequestKind.WITHDRAWAL),
        ], agency
    assert {a for a, got in requests.items() if got} == MIXED

    # An answer after the cancellation is kept for audit only.
    before = pipeline.not_counted("veterinary", "after-cancellation")
    await respond(pipeline.app, answer(sid, "veterinary", AgencyStatus.CLEARED, at=now))
    await pipeline.wait_not_counted("veterinary", "after-cancellation", before)
    # An amendment of a cancelled submission is refused by the router.
    amendment = new_submission(
        beef_and_rifle("MIX-CANCEL-1"), now=now, version=3, submission_id=sid
    )
    await submit(pipeline.app, amendment)
    async with asyncio.timeout(WAIT_S):
        (dead,) = await wait_for_dlq(pipeline.app, 1)
    await assert_dead_letter(
        pipeline.app.transport,
        dead,
        source_topic=pipeline.app.topics.submissions,
        reason="cancelled",
    )
    assert pipeline.decisions.latest(sid) == cancelled
    assert len(pipeline.decisions.finals(sid)) == 1


async def test_rejection_withdraws_agencies_still_working(pipeline: Pipeline) -> None:
    now = now_utc()
    sid = await submit_mixed(pipeline, "MIX-REJECT-1", now)
    await pipeline.answer_and_wait(answer(sid, "customs", AgencyStatus.CLEARED, at=now))
    await pipeline.answer_and_wait(answer(sid, "veterinary", AgencyStatus.INSPECTION, at=now))
    rejected = await pipeline.answer_and_wait(
        answer(sid, "police", AgencyStatus.REJECTED, at=now, reasons=("no firearms licence",))
    )
    assert rejected.outcome is Outcome.REJECTED and rejected.final
    assert statuses(rejected)["food"] == "PENDING"

    # The veterinary service (inspecting) and food safety (not answered) are still working.
    app = pipeline.app
    async with asyncio.timeout(WAIT_S):
        for agency in ("veterinary", "food"):
            await wait_for_topic(
                app.transport,
                app.topics.requests(agency),
                lambda records: len(records) == 2,
                f"a withdrawal reaches {agency}",
            )
    requests = await requests_by_agency(app)
    withdrawn = {
        agency: [r.version for r in got if r.kind is RequestKind.WITHDRAWAL]
        for agency, got in requests.items()
    }
    assert {agency: v for agency, v in withdrawn.items() if v} == {"veterinary": [1], "food": [1]}
    (withdrawal,) = [r for r in requests["food"] if r.kind is RequestKind.WITHDRAWAL]
    assert withdrawal.withdrawal_reason is not None and "police" in withdrawal.withdrawal_reason

    before = pipeline.not_counted("veterinary", "late-after-final")
    await respond(pipeline.app, answer(sid, "veterinary", AgencyStatus.CLEARED, at=now, sequence=2))
    await pipeline.wait_not_counted("veterinary", "late-after-final", before)
    assert pipeline.decisions.finals(sid) == [rejected]
    assert pipeline.decisions.latest(sid) == rejected


async def test_answers_breaking_agency_identity_go_to_the_dlq(pipeline: Pipeline) -> None:
    now = now_utc()
    app = pipeline.app
    sid = await submit_mixed(pipeline, "MIX-IDENTITY-1", now)

    # Wildlife was not routed; food's topic carries a payload claiming to be the veterinary
    # service's; the police were routed as required, so they may not disclaim.
    await respond(app, answer(sid, "wildlife", AgencyStatus.CLEARED, at=now))
    await respond(app, answer(sid, "veterinary", AgencyStatus.CLEARED, at=now), topic_agency="food")
    await respond(app, answer(sid, "police", AgencyStatus.NOT_CONCERNED, at=now))

    async with asyncio.timeout(WAIT_S):
        dead = {header(r, REASON): r for r in await wait_for_dlq(app, 3)}
    assert set(dead) == {"agency-not-routed", "agency-mismatch", "not-concerned-refused"}
    await assert_dead_letter(
        app.transport,
        dead["agency-not-routed"],
        source_topic=app.topics.responses("wildlife"),
        reason="agency-not-routed",
    )
    await assert_dead_letter(
        app.transport,
        dead["agency-mismatch"],
        source_topic=app.topics.responses("food"),
        reason="agency-mismatch",
    )
    await assert_dead_letter(
        app.transport,
        dead["not-concerned-refused"],
        source_topic=app.topics.responses("police"),
        reason="not-concerned-refused",
    )
    assert all(header(r, SERVICE) == "aggregator" for r in dead.values())
    # None of them changed the decision; a proper answer still does.
    assert len(pipeline.decisions.of(sid)) == 1
    decision = await pipeline.answer_and_wait(answer(sid, "food", AgencyStatus.CLEARED, at=now))
    assert statuses(decision) == {
        "customs": "PENDING",
        "veterinary": "PENDING",
        "food": "CLEARED",
        "police": "PENDING",
    }

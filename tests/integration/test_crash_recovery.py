"""Crash recovery: `swb run` (router + aggregator) as a subprocess on the session broker, killed
with SIGKILL in the middle of a stream of submissions, then restarted. The simulated agencies
run in the test process and survive the crash.

The profile never asks for documents and every declaration cites the certificates the
rules-driven agencies expect, so every submission must reach a final decision without an
amendment: DOCUMENTS_REQUIRED is not an acceptable resting state here, and no decision may
even show it.

Two deterministic tests pin the race the kill test first found: a restarted aggregator (or
router) must not apply records fetched while it still restores its state."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import defaultdict
from typing import Any

import pytest
from helpers import (
    NO_DOCUMENTS_PROFILE,
    WAIT_S,
    DecisionWatcher,
    Running,
    answer,
    beef_and_rifle,
    kafka_settings,
    new_submission,
    read_topic,
    respond,
    routed_agencies,
    sample_variations,
    submit,
    swb_env,
    wait_for_topic,
    wait_until,
)

from broker.bootstrap import App, open_app
from broker.core.declaration import now_utc
from broker.core.messages import (
    AgencyRequest,
    AgencyResponse,
    AgencyState,
    AgencyStatus,
    Decision,
    Outcome,
    RequestKind,
    RoutingPlan,
    Submission,
)
from broker.runtime.transport import Record, Transport
from connectors.simulated import decide, followup

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

PARTITIONS = 4
COUNT = 200
BATCH = 10
IN_FLIGHT = 40  # submissions sent but not yet decided, at most
FINALS_BEFORE_KILL = 20
TERMINAL = {"CLEARED", "CLEARED_WITH_CONDITIONS", "REJECTED", "NOT_CONCERNED"}


@pytest.mark.timeout(240)
async def test_kill_9_mid_stream_loses_nothing_and_decides_once(
    kafka_bootstrap: str, topic_prefix: str, swb: Any
) -> None:
    env = {**swb_env(kafka_bootstrap, topic_prefix, PARTITIONS), "SWB_HTTP_PORT": "0"}
    settings = kafka_settings(kafka_bootstrap, topic_prefix, partitions=PARTITIONS)
    async with open_app(settings) as app:
        now = now_utc()
        submissions = [
            new_submission(declaration, now=now)
            for declaration in sample_variations(COUNT, app.rules, tag=f"CRASH-{topic_prefix}")
        ]
        running = Running()
        decisions = DecisionWatcher(app.transport, app.codec, app.topics)
        running.start("decisions", decisions)
        running.start_agencies(app.simulated_agencies(NO_DOCUMENTS_PROFILE))

        def decided() -> set[str]:
            return {d.submission_id for d in decisions.all() if d.final}

        first = swb(["run"], env, "swb run (1st)")
        try:
            await first.start()
            async with asyncio.timeout(60):
                await running.ready()
                await first.wait_ready(["router", "aggregator"])

            # A stream of small batches, kept at most IN_FLIGHT ahead of the final
            # decisions: it cannot finish before the kill, and it goes on sending while the
            # process is down until that bound holds it back.
            sent = 0

            def keeping_up() -> bool:
                return sent - len(decided()) <= IN_FLIGHT

            async def stream() -> None:
                nonlocal sent
                for start in range(0, COUNT, BATCH):
                    await wait_until(keeping_up, "the broker keeps up")
                    await submit(app, *submissions[start : start + BATCH])
                    sent = min(COUNT, start + BATCH)

            streaming = asyncio.create_task(stream())
            try:
                async with asyncio.timeout(60):
                    await wait_until(
                        lambda: len(decided()) >= FINALS_BEFORE_KILL,
                        f"{FINALS_BEFORE_KILL} final decisions before the kill",
                        running,
                    )
                await first.kill()
                # Mid-stream: some submissions decided, more to come.
                assert len(decided()) >= FINALS_BEFORE_KILL
                assert sent < COUNT

                second = swb(["run"], env, "swb run (2nd)")
                await second.start()
                wanted = {s.submission_id for s in submissions}
                async with asyncio.timeout(150):
                    await streaming
                    await wait_until(
                        lambda: wanted <= decided(),
                        f"all {COUNT} submissions have a final decision after the restart",
                        running,
                    )
                    assert await second.stop() == 0
            finally:
                streaming.cancel()
                await asyncio.gather(streaming, return_exceptions=True)
        finally:
            await running.stop()

        await check_outcomes(app, submissions, decisions.all())


async def check_outcomes(
    app: App, submissions: list[Submission], all_decisions: list[Decision]
) -> None:
    by_sid: dict[str, list[Decision]] = defaultdict(list)
    for decision in all_decisions:
        by_sid[decision.submission_id].append(decision)
    plans: dict[str, list[RoutingPlan]] = defaultdict(list)
    for record in await read_topic(app.transport, app.topics.routing):
        plan = app.codec.decode(record.value or b"", RoutingPlan)
        plans[plan.submission_id].append(plan)
    requests: dict[tuple[str, str], list[AgencyRequest]] = defaultdict(list)
    for agency in app.topics.agencies:
        for record in await read_topic(app.transport, app.topics.requests(agency)):
            request = app.codec.decode(record.value or b"", AgencyRequest)
            assert request.agency == agency
            requests[(request.submission_id, agency)].append(request)

    assert not [d for d in all_decisions if d.outcome is Outcome.DOCUMENTS_REQUIRED], (
        "the set-up must not let an agency ask for documents"
    )
    assert set(by_sid) == {s.submission_id for s in submissions}
    for submission in submissions:
        sid = submission.submission_id
        assert submission.declaration is not None
        expected_agencies = routed_agencies(
            submission.declaration.model_dump(mode="json"), app.rules
        )

        # Re-routing after the crash gives the same plan; no plan is missing.
        (plan, *copies) = plans[sid]
        assert all(copy == plan for copy in copies), sid
        assert [r.agency for r in plan.agencies] == expected_agencies

        # Every routed agency got its request (copies after the crash are identical), and
        # no other agency got one.
        for agency in app.topics.agencies:
            reviews = [r for r in requests[(sid, agency)] if r.kind is RequestKind.REVIEW]
            if agency in expected_agencies:
                assert reviews, f"{sid}: request to {agency} lost"
                assert all(r == reviews[0] for r in reviews), (sid, agency)
            else:
                assert not reviews, (sid, agency)

        # One final decision per version: re-deliveries only as identical copies.
        finals = [d for d in by_sid[sid] if d.final]
        assert {d.version for d in finals} == {1}
        assert len({d.decision_id for d in finals}) == 1, f"{sid}: final decisions differ"
        assert all(d == finals[0] for d in finals), sid
        final = finals[0]
        # Nothing is issued after the final decision.
        assert by_sid[sid][-1] == final, sid

        # Its content is what the agencies answered: their last word, or, after a
        # rejection, a withdrawal for those still working.
        assert [line.agency for line in final.agencies] == expected_agencies
        for line in final.agencies:
            request = next(r for r in requests[(sid, line.agency)] if r.kind is RequestKind.REVIEW)
            last = last_answer(request)
            if line.status.value == last.status.value:
                assert line.answered_at == last.answered_at, (sid, line.agency)
                continue
            assert final.outcome is Outcome.REJECTED, (sid, line.agency, line.status)
            assert line.status.value not in TERMINAL
            kinds = {r.kind for r in requests[(sid, line.agency)]}
            assert RequestKind.WITHDRAWAL in kinds, f"{sid}: {line.agency} not withdrawn"
        if final.outcome is not Outcome.REJECTED:
            assert all(line.status is not AgencyState.PENDING for line in final.agencies)


def last_answer(request: AgencyRequest) -> AgencyResponse:
    """The simulated agency's last word on a request (deterministic, seeded by the request)."""
    first = decide(request, NO_DOCUMENTS_PROFILE)
    return followup(request, first, NO_DOCUMENTS_PROFILE) or first


class SlowReads:
    """The real transport, with `read_partition` (the aggregator's restore) taking its time,
    as it does over a long changelog."""

    def __init__(self, inner: Transport, delay_s: float) -> None:
        self._inner = inner
        self._delay_s = delay_s

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def read_partition(self, topic: str, partition: int) -> list[Record]:
        await asyncio.sleep(self._delay_s)  # the fake's latency, not a wait for a condition
        return await self._inner.read_partition(topic, partition)


async def test_records_wait_for_the_restored_state(app: App) -> None:
    """aiokafka hands a new member its partitions before it awaits the assignment callback,
    so records can be fetched while the aggregator still restores its states: they must be
    applied to the restored state, not to an empty one (that loses the answers before)."""
    now = now_utc()
    submission = new_submission(beef_and_rifle("RESTORE-RACE-1"), now=now)
    sid = submission.submission_id
    running = Running()
    decisions = DecisionWatcher(app.transport, app.codec, app.topics)
    running.start("router", app.router())
    running.start("decisions", decisions)
    first = Running()
    first.start("aggregator 1", app.aggregator())
    try:
        await submit(app, submission)
        await respond(app, answer(sid, "customs", AgencyStatus.CLEARED, at=now))
        async with asyncio.timeout(WAIT_S):
            await running.ready()
            await decisions.wait_latest(
                sid, lambda d: d.agencies[0].status is AgencyState.CLEARED, "customs", running
            )
        await first.stop()  # graceful: its state is saved and its offsets committed

        # The next answer is waiting when a new aggregator joins, restoring slowly.
        await respond(app, answer(sid, "police", AgencyStatus.CLEARED, at=now))
        second = Running()
        slow = dataclasses.replace(app, transport=SlowReads(app.transport, 0.5))
        second.start("aggregator 2", slow.aggregator())
        try:
            async with asyncio.timeout(WAIT_S):
                decision = await decisions.wait_latest(
                    sid,
                    lambda d: (
                        {"customs", "police"}
                        <= {line.agency for line in d.agencies if line.status.value == "CLEARED"}
                    ),
                    "the restored state plus the waiting answer",
                    running,
                )
        finally:
            await second.stop()
    finally:
        await running.stop()

    assert decision.version == 1 and not decision.final
    # The last state saved holds the plan and both answers: none was rebuilt from nothing.
    saved = [
        json.loads(r.value or b"{}")
        for r in await read_topic(app.transport, app.topics.aggregator_changelog)
        if r.key == sid.encode()
    ]
    assert saved[-1]["plan"] is not None
    assert {"customs", "police"} <= set(saved[-1]["answers"])


async def test_submissions_wait_for_the_router_memory(app: App) -> None:
    """The same for the router: an amendment fetched while a new router still rebuilds its
    memory of what was routed must be routed as an amendment (with withdrawals), not refused
    as the amendment of a submission never seen."""
    now = now_utc()
    original = new_submission(beef_and_rifle("RESTORE-RACE-2"), now=now)
    sid = original.submission_id
    first = Running()
    first.start("router 1", app.router())
    try:
        await submit(app, original)
        async with asyncio.timeout(WAIT_S):
            await first.ready()
            await wait_for_topic(
                app.transport, app.topics.routing, lambda rs: len(rs) == 1, "version 1 routed"
            )
    finally:
        await first.stop()

    amended = beef_and_rifle("RESTORE-RACE-2")
    amended["items"] = amended["items"][:1]  # no rifle: the police are no longer concerned
    await submit(app, new_submission(amended, now=now, version=2, submission_id=sid))
    second = Running()
    slow = dataclasses.replace(app, transport=SlowReads(app.transport, 0.5))
    second.start("router 2", slow.router())
    try:
        async with asyncio.timeout(WAIT_S):
            plans = await wait_for_topic(
                app.transport, app.topics.routing, lambda rs: len(rs) == 2, "version 2 routed"
            )
    finally:
        await second.stop()
    assert [app.codec.decode(r.value or b"", RoutingPlan).version for r in plans] == [1, 2]
    police = [
        app.codec.decode(r.value or b"", AgencyRequest)
        for r in await read_topic(app.transport, app.topics.requests("police"))
    ]
    assert [(r.version, r.kind) for r in police] == [
        (1, RequestKind.REVIEW),
        (2, RequestKind.WITHDRAWAL),
    ]
    assert await read_topic(app.transport, app.topics.dlq) == []

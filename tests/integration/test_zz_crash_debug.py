"""Crash recovery: `swb run` (router + aggregator) as a subprocess on the session broker, killed
with SIGKILL in the middle of a stream of submissions, then restarted. The simulated agencies
run in the test process and survive the crash.

The profile never asks for documents and every declaration cites the certificates the
rules-driven agencies expect, so every submission must reach a final decision without an
amendment: DOCUMENTS_REQUIRED is not an acceptable resting state here, and no decision may
even show it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

import pytest
from helpers import (
    NO_DOCUMENTS_PROFILE,
    DecisionWatcher,
    Running,
    kafka_settings,
    new_submission,
    read_topic,
    routed_agencies,
    sample_variations,
    submit,
    swb_env,
    wait_until,
)

from broker.bootstrap import App, open_app
from broker.core.declaration import now_utc
from broker.core.messages import (
    AgencyRequest,
    AgencyResponse,
    AgencyState,
    Decision,
    Outcome,
    RequestKind,
    RoutingPlan,
    Submission,
)
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
                CL_AT_KILL = {}
                for part in range(4):
                    rp = await app.transport.read_partition(app.topics.aggregator_changelog, part)
                    CL_AT_KILL[part] = (len(rp), rp[-1].offset if rp else None)
                print("DEBUG changelog at kill", CL_AT_KILL)
                import subprocess as _sp
                print("DEBUG ps", _sp.run(["bash","-c","ps -ef | grep -v grep | grep 'swb run'"], capture_output=True, text=True).stdout)
                print("DEBUG first pid", first.pid, "rc", first.returncode)
                # Mid-stream: some submissions decided, more to come.
                assert len(decided()) >= FINALS_BEFORE_KILL
                assert sent < COUNT

                second = swb(["run"], env, "swb run (2nd)")
                await second.start()
                wanted = {s.submission_id for s in submissions}
                async with asyncio.timeout(60):
                    await streaming
                try:
                  async with asyncio.timeout(40):
                    await wait_until(
                        lambda: wanted <= decided(),
                        f"all {COUNT} submissions have a final decision after the restart",
                        running,
                    )
                except TimeoutError:
                    missing = wanted - decided()
                    print("DEBUG missing", len(missing), "sent", sent)
                    plans = [app.codec.decode(r.value, RoutingPlan) for r in await read_topic(app.transport, app.topics.routing)]
                    from collections import Counter
                    for sid in sorted(missing)[:5]:
                        print("DEBUG", sid, "plans", [ (p.version, [a.agency for a in p.agencies]) for p in plans if p.submission_id == sid])
                        topic_decisions = [app.codec.decode(r.value, Decision) for r in await read_topic(app.transport, app.topics.decisions)]
                        print("DEBUG  TOPIC decisions", [(d.outcome.value, d.final, {l.agency: l.status.value for l in d.agencies}) for d in topic_decisions if d.submission_id == sid])
                        print("DEBUG  decisions", [(d.outcome.value, d.final, {l.agency: l.status.value for l in d.agencies}) for d in decisions.of(sid)])
                        for agency in app.topics.agencies:
                            reqs = [app.codec.decode(r.value, AgencyRequest) for r in await read_topic(app.transport, app.topics.requests(agency))]
                            resps = [app.codec.decode(r.value, AgencyResponse) for r in await read_topic(app.transport, app.topics.responses(agency))]
                            rq = [(r.kind.value) for r in reqs if r.submission_id == sid]
                            rawr = await read_topic(app.transport, app.topics.responses(agency))
                            rs = [(r.status.value, r.sequence, x.partition, x.offset, x.timestamp_ms) for r, x in zip(resps, rawr) if r.submission_id == sid]
                            if rq or rs: print("DEBUG   ", agency, rq, rs)
                    recs = decisions.records()
                    for part in range(4):
                        rp = await app.transport.read_partition(app.topics.aggregator_changelog, part)
                        print("DEBUG changelog now", part, len(rp), rp[-1].offset if rp else None)
                    print("DEBUG watcher records per partition", Counter(r.partition for r in recs), "max offsets", {p: max(r.offset for r in recs if r.partition == p) for p in range(4)})
                    for p in range(4):
                        rp = await app.transport.read_partition(app.topics.decisions, p)
                        print("DEBUG topic partition", p, len(rp), "offsets", rp[0].offset if rp else None, rp[-1].offset if rp else None)
                    for sid in sorted(missing)[:5]:
                        for name, proc in (("first", first), ("second", second)):
                            for e in proc.events:
                                if e.get("submission_id") == sid:
                                    print("DEBUG LOG", name, sid[:12], e.get("event"), e.get("topic"), e.get("partition"), e.get("offset"), e.get("agencies"), e.get("timestamp"))
                    import json as _json
                    cl = await read_topic(app.transport, app.topics.aggregator_changelog)
                    for sid in sorted(missing)[:5]:
                        states = [(x.partition, x.offset, _json.loads(x.value)) for x in cl if x.key == sid.encode()]
                        for part, off, st in states:
                            print("DEBUG CL", sid[:12], part, off, "final", st["final"], "last", st["last_decision_id"], "answers", sorted(st["answers"]), "audit", len(st["audit"]), "held", len(st["held"]))
                        ids = [d.decision_id for d in decisions.of(sid)]
                        print("DEBUG  decision ids", ids)
                    from aiokafka import AIOKafkaConsumer, TopicPartition as KTP
                    cc = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id="swb-aggregator", enable_auto_commit=False)
                    await cc.start()
                    for ag in ("customs", "strategic", "food", "plant", "wildlife", "excise"):
                        for part in range(4):
                            tp = KTP(app.topics.responses(ag), part)
                            print("DEBUG committed", ag, part, await cc.committed(tp))
                    await cc.stop()
                    import time as _t; print("DEBUG kill time", _t.time())
                    print("DEBUG plans per sid", Counter(Counter(p.submission_id for p in plans).values()))
                    print("DEBUG first stderr\n", first.tail(15))
                    print("DEBUG second stderr\n", "\n".join(second.lines[:30])[:6000])
                    raise
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

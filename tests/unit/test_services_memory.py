"""The router and the aggregator services on the in-memory transport: the flow of the
integration tests in milliseconds, without a broker, and with a fake clock so SLA deadlines
can pass on demand. One partition, so records of different submissions keep their order
within a topic (used below as a barrier: "the next one is processed, so this one was too")."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest_asyncio

from broker.bootstrap import App, open_app
from broker.core.intake import declare
from broker.core.messages import (
    AgencyRequest,
    AgencyResponse,
    AgencyStatus,
    Decision,
    Outcome,
    RequestKind,
    RoutingPlan,
    Submission,
)
from broker.runtime.dlq import REASON, header
from broker.runtime.transport import Outgoing, Record
from broker.settings import Settings

T = TypeVar("T")
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
TRADER = "NL000000000042"
BEEF = {"customs", "veterinary", "food"}  # sample 02: customs SLA 10 min, the others 240 min
WAIT_S = 5.0


class FakeClock:
    """The services' clock, moved by the test."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class Service(Protocol):
    ready: asyncio.Event

    async def run(self, stopping: asyncio.Event) -> None: ...


class Started:
    """One service running in the test's loop; `stop()` stops it gracefully and re-raises."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.stopping = asyncio.Event()
        self.task = asyncio.create_task(service.run(self.stopping))

    async def ready(self) -> None:
        async with asyncio.timeout(WAIT_S):
            await self.service.ready.wait()

    async def stop(self) -> None:
        self.stopping.set()
        async with asyncio.timeout(WAIT_S):
            await self.task


class World:
    def __init__(self, app: App, clock: FakeClock) -> None:
        self.app = app
        self.clock = clock
        self.started: list[Started] = []

    async def start(self, service: Service) -> Started:
        started = Started(service)
        self.started.append(started)
        await started.ready()
        return started

    async def records(self, topic: str) -> list[Record]:
        return await self.app.transport.read_partition(topic, 0)

    async def decisions(self, sid: str) -> list[Decision]:
        decoded = [
            self.app.codec.decode(r.value or b"", Decision)
            for r in await self.records(self.app.topics.decisions)
        ]
        return [d for d in decoded if d.submission_id == sid]

    async def plans(self) -> list[RoutingPlan]:
        return [
            self.app.codec.decode(r.value or b"", RoutingPlan)
            for r in await self.records(self.app.topics.routing)
        ]

    async def requests(self, agency: str) -> list[AgencyRequest]:
        return [
            self.app.codec.decode(r.value or b"", AgencyRequest)
            for r in await self.records(self.app.topics.requests(agency))
        ]

    async def send(self, topic: str, *messages: Submission | AgencyResponse) -> None:
        await self.app.transport.producer().send_batch(
            [
                Outgoing(topic, self.app.codec.encode(m), key=m.submission_id.encode())
                for m in messages
            ]
        )

    async def submit(self, *submissions: Submission) -> None:
        await self.send(self.app.topics.submissions, *submissions)

    async def answer(self, *responses: AgencyResponse) -> None:
        for response in responses:
            await self.send(self.app.topics.responses(response.agency), response)

    async def until(self, probe: Callable[[], Any], what: str) -> Any:
        """Poll an async probe until it returns something truthy; fail after WAIT_S."""
        try:
            async with asyncio.timeout(WAIT_S):
                while not (result := await probe()):
                    self.check()
                    await asyncio.sleep(0.005)
                return result
        except TimeoutError:
            raise AssertionError(f"timed out waiting until {what}") from None

    async def latest(self, sid: str, condition: Callable[[Decision], bool], what: str) -> Decision:
        async def probe() -> Decision | None:
            decisions = await self.decisions(sid)
            return decisions[-1] if decisions and condition(decisions[-1]) else None

        decision: Decision = await self.until(probe, f"{sid}: {what}")
        return decision

    def check(self) -> None:
        for started in self.started:
            if started.task.done() and not started.stopping.is_set():
                raise AssertionError(f"{started.service} stopped: {started.task.exception()!r}")


@pytest_asyncio.fixture
async def world() -> AsyncIterator[World]:
    clock = FakeClock(T0)
    settings = Settings(partitions=1, deadline_check_interval_s=0.01, topic_prefix="mem")
    async with open_app(settings, memory=True, clock=clock) as app:
        world = World(app, clock)
        try:
            yield world
        finally:
            for started in world.started:
                if not started.task.done():
                    await started.stop()


def sample(name: str) -> dict[str, Any]:
    path = Path(str(resources.files("broker.samples"))) / f"{name}.json"
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def submission(
    lrn: str,
    *,
    base: str = "02-frozen-beef-argentina",
    version: int = 1,
    sid: str | None = None,
    at: datetime = T0,
    edit: Callable[[dict[str, Any]], None] | None = None,
) -> Submission:
    declaration = {**sample(base), "lrn": lrn}
    if edit is not None:
        edit(declaration)
    return declare(
        json.dumps(declaration).encode(),
        trader_id=TRADER,
        channel="test",
        now=at,
        version=version,
        submission_id=sid,
    )


def answer(
    sid: str,
    agency: str,
    status: AgencyStatus,
    *,
    minutes: float = 1,
    sequence: int = 1,
    version: int = 1,
) -> AgencyResponse:
    return AgencyResponse(
        submission_id=sid,
        version=version,
        agency=agency,
        status=status,
        answered_at=T0 + timedelta(minutes=minutes),
        sequence=sequence,
        reasons=("test",),
    )


def statuses(decision: Decision) -> dict[str, str]:
    return {line.agency: line.status.value for line in decision.agencies}


async def test_a_submission_is_routed_answered_and_decided(world: World) -> None:
    await world.start(world.app.router())
    await world.start(world.app.aggregator())
    beef = submission("MEM-1")
    sid = beef.submission_id
    await world.submit(beef)

    first = await world.latest(sid, lambda d: True, "the plan shows as a decision")
    assert (first.outcome, first.final) == (Outcome.PENDING, False)
    assert statuses(first) == dict.fromkeys(BEEF, "PENDING")
    for agency in world.app.topics.agencies:
        requests = await world.requests(agency)
        if agency in BEEF:
            assert [(r.submission_id, r.kind) for r in requests] == [(sid, RequestKind.REVIEW)]
        else:
            assert requests == [], agency

    await world.answer(
        answer(sid, "customs", AgencyStatus.CLEARED),
        answer(sid, "veterinary", AgencyStatus.INSPECTION),
        answer(sid, "food", AgencyStatus.CLEARED_WITH_CONDITIONS),
    )
    inspecting = await world.latest(
        sid, lambda d: "PENDING" not in statuses(d).values(), "every agency answered"
    )
    assert inspecting.outcome is Outcome.INSPECTION and not inspecting.final
    await world.answer(answer(sid, "veterinary", AgencyStatus.CLEARED, minutes=30, sequence=2))
    final = await world.latest(sid, lambda d: d.final, "the final decision")
    assert final.outcome is Outcome.RELEASED_WITH_CONDITIONS
    assert [d.final for d in await world.decisions(sid)].count(True) == 1


async def test_a_finished_submission_still_takes_late_answers_and_amendments(
    world: World,
) -> None:
    """Finished states are kept as their saved bytes: they come back for the next event."""
    aggregator = world.app.aggregator()
    await world.start(world.app.router())
    await world.start(aggregator)
    beef = submission("MEM-PARK-1")
    sid = beef.submission_id
    await world.submit(beef)
    await world.answer(*(answer(sid, agency, AgencyStatus.CLEARED) for agency in BEEF))
    final = await world.latest(sid, lambda d: d.final, "the final decision")
    assert final.outcome is Outcome.RELEASED

    late = answer(sid, "food", AgencyStatus.REJECTED, minutes=40, sequence=2)
    await world.answer(late)
    registry = world.app.metrics.registry
    labels = {"agency": "food", "reason": "late-after-final"}
    await world.until(
        lambda: _counted(registry.get_sample_value("swb_answers_not_counted_total", labels)),
        "the late answer is kept for audit",
    )
    state = aggregator.state(sid)
    assert state is not None and state.final and late in state.audit
    assert (await world.decisions(sid))[-1] == final  # the late answer changed nothing

    amended = submission("MEM-PARK-1", version=2, sid=sid, at=T0 + timedelta(hours=1))
    await world.submit(amended)
    reopened = await world.latest(sid, lambda d: d.version == 2, "version 2's decision")
    assert (reopened.outcome, reopened.final) == (Outcome.PENDING, False)
    assert aggregator.held == 1


async def _counted(value: float | None) -> bool:
    return bool(value)


async def test_duplicates_change_nothing(world: World) -> None:
    await world.start(world.app.router())
    await world.start(world.app.aggregator())
    beef = submission("MEM-DUP-1")
    sid = beef.submission_id
    await world.submit(beef)
    await world.latest(sid, lambda d: True, "the first decision")

    # The same submission again (a B2B retry): routed once. The next submission in the
    # partition being routed means the duplicate was handled.
    other = submission("MEM-DUP-2")
    await world.submit(beef, other)
    await world.until(
        lambda: _has_plan(world, other.submission_id), "the next submission is routed"
    )
    assert [p.submission_id for p in await world.plans()] == [sid, other.submission_id]
    assert await world.records(world.app.topics.dlq) == []  # a retry is no error
    for agency in BEEF:
        assert [r.submission_id for r in await world.requests(agency)] == [
            sid,
            other.submission_id,
        ]

    # The same answer twice, the second in a later batch: one decision. Customs' later
    # answer on the same topic is the barrier.
    cleared = answer(sid, "customs", AgencyStatus.CLEARED)
    await world.answer(cleared)
    await world.latest(sid, lambda d: statuses(d)["customs"] == "CLEARED", "customs' answer")
    await world.answer(cleared)
    await world.answer(
        answer(sid, "customs", AgencyStatus.CLEARED_WITH_CONDITIONS, minutes=2, sequence=2)
    )
    await world.latest(
        sid, lambda d: statuses(d)["customs"] == "CLEARED_WITH_CONDITIONS", "customs' 2nd answer"
    )
    customs = [statuses(d)["customs"] for d in await world.decisions(sid)]
    assert customs == ["PENDING", "CLEARED", "CLEARED_WITH_CONDITIONS"]
    assert await world.records(world.app.topics.dlq) == []


async def _has_plan(world: World, sid: str) -> bool:
    return any(p.submission_id == sid for p in await world.plans())


async def test_a_new_aggregator_restores_from_the_changelog_and_fires_overdue_deadlines(
    world: World,
) -> None:
    await world.start(world.app.router())
    first = await world.start(world.app.aggregator())
    beef = submission("MEM-RESTORE-1")
    sid = beef.submission_id
    await world.submit(beef)
    await world.answer(
        answer(sid, "veterinary", AgencyStatus.CLEARED),
        answer(sid, "food", AgencyStatus.CLEARED),
    )
    before = await world.latest(
        sid, lambda d: statuses(d)["food"] == "CLEARED" == statuses(d)["veterinary"], "2 answers"
    )
    assert statuses(before)["customs"] == "PENDING"
    await first.stop()
    issued = len(await world.decisions(sid))

    # Customs' 10-minute SLA passes while no aggregator runs.
    world.clock.advance(minutes=11)
    aggregator = world.app.aggregator()
    await world.start(aggregator)
    state = aggregator.state(sid)  # restored on assignment, before any record is read
    assert state is not None
    assert set(state.answers) == {"veterinary", "food"}

    overdue = await world.latest(
        sid, lambda d: statuses(d)["customs"] == "OVERDUE", "customs shows overdue"
    )
    # Silence is never a release: still pending, not final, the other answers kept.
    assert overdue.outcome is Outcome.PENDING and not overdue.final
    assert statuses(overdue) == {"customs": "OVERDUE", "veterinary": "CLEARED", "food": "CLEARED"}
    # Nothing was replayed into a fresh state: exactly one new decision, the overdue one.
    assert len(await world.decisions(sid)) == issued + 1
    overdue_count = world.app.metrics.registry.get_sample_value(
        "swb_agency_overdue_total", {"agency": "customs"}
    )
    assert overdue_count == 1

    await world.answer(answer(sid, "customs", AgencyStatus.CLEARED, minutes=12))
    final = await world.latest(sid, lambda d: d.final, "the late answer decides")
    assert final.outcome is Outcome.RELEASED


async def test_a_new_router_remembers_what_it_routed(world: World) -> None:
    first = await world.start(world.app.router())
    await world.start(world.app.aggregator())
    mixed = submission("MEM-ROUTER-1", edit=_add_rifle)
    sid = mixed.submission_id
    await world.submit(mixed)
    await world.latest(sid, lambda d: True, "the first decision")
    assert [r.kind for r in await world.requests("police")] == [RequestKind.REVIEW]
    await first.stop()
    await world.start(world.app.router())

    # Version 2 without the rifle: the new router knows the police were concerned in v1.
    amended = submission("MEM-ROUTER-1", version=2, sid=sid, at=T0 + timedelta(minutes=5))
    await world.submit(amended, mixed)  # then v1 again, now stale
    v2 = await world.latest(sid, lambda d: d.version == 2, "version 2 is decided")
    assert set(statuses(v2)) == BEEF
    police = await world.requests("police")
    assert [(r.version, r.kind) for r in police] == [
        (1, RequestKind.REVIEW),
        (2, RequestKind.WITHDRAWAL),
    ]
    dead = await world.until(
        lambda: world.records(world.app.topics.dlq), "the stale version is dead-lettered"
    )
    assert [header(r, REASON) for r in dead] == ["stale-version"]


def _add_rifle(declaration: dict[str, Any]) -> None:
    rifle = sample("04-hunting-rifle-usa")["items"][0]
    declaration["items"] = [declaration["items"][0], {**rifle, "sequence": 2}]

"""Permits on the embedded broker: concurrent declarations against one permit, a restart in the
middle, and the whole single window (router, aggregator, customs risk engine, the wildlife
permit agency) writing off, replacing and giving back quantities."""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import pytest
import pytest_asyncio

from broker.bootstrap import App, open_app
from broker.core.declaration import AdditionalDocument, AeoStatus, Declaration, now_utc
from broker.core.intake import cancel, declare
from broker.core.messages import (
    AgencyRequest,
    AgencyResponse,
    AgencyStatus,
    Decision,
    Outcome,
    Permit,
    RequestKind,
    Submission,
    SubmissionKind,
)
from broker.core.risk import load_risk_policy
from broker.core.routing import information_package, route
from broker.runtime.transport import Outgoing
from broker.settings import KafkaSettings, Settings
from connectors.customs_risk import CustomsRiskConfig
from connectors.permits import PermitAgency, read_permits

pytestmark = pytest.mark.kafka

T = TypeVar("T")
T0 = datetime(2026, 11, 6, 8, 0, tzinfo=UTC)
IMPORTER = "NL870012345"  # the importer of sample 07
PERMIT = "26NL555555/01"
WAIT_S = 60.0


def ivory(quantity: str, lrn: str = "GO-2026-0077") -> Declaration:
    """Sample 07 (a CITES ivory carving), its C400 citing PERMIT for `quantity` articles; the
    importer is an AEOF so customs' risk lane is green and the test is about permits."""
    path = Path(str(resources.files("broker.samples"))) / "07-ivory-carving-cites.json"
    declaration = Declaration.model_validate_json(path.read_bytes())
    (item,) = declaration.items
    document = AdditionalDocument(
        type_code="C400", id=PERMIT, issuer="RVO", quantity_used=Decimal(quantity)
    )
    assert declaration.importer is not None
    return declaration.model_copy(
        update={
            "lrn": lrn,
            "items": (item.model_copy(update={"documents": (document,)}),),
            "importer": declaration.importer.model_copy(update={"aeo_status": AeoStatus.AEOF}),
        }
    )


def permit(total: str, at: datetime) -> Permit:
    return Permit(
        permit_id=PERMIT,
        type_code="C400",
        issuing_agency="wildlife",
        holder_id=IMPORTER,
        hs_prefixes=("9601",),
        unit="NAR",
        total_quantity=Decimal(total),
        valid_from=at - timedelta(days=1),
        valid_to=at + timedelta(days=90),
        issued_at=at - timedelta(days=1),
    )


def review(app: App, declaration: Declaration, submission_id: str) -> AgencyRequest:
    plan = route(
        declaration,
        app.rules,
        submission_id=submission_id,
        version=1,
        kind=SubmissionKind.NEW,
        trader_id=IMPORTER,
        payload_sha256="0" * 64,
        now=T0,
    )
    (wildlife,) = [r for r in plan.agencies if r.agency == "wildlife"]
    return AgencyRequest(
        request_id=f"{submission_id}:1:wildlife:review",
        submission_id=submission_id,
        version=1,
        agency="wildlife",
        kind=RequestKind.REVIEW,
        requirement=wildlife.requirement,
        reasons=wildlife.reasons,
        deadline=wildlife.deadline,
        sent_at=T0,
        package=information_package(declaration, wildlife, app.rules),
    )


@pytest_asyncio.fixture
async def app(kafka_bootstrap: str, topic_prefix: str) -> AsyncIterator[App]:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        partitions=4,
        kafka=KafkaSettings(session_timeout_ms=6000, heartbeat_interval_ms=500),
        shutdown_timeout_s=10,
    )
    async with open_app(settings) as opened:
        yield opened


class Running:
    """Services running in the test's loop; `stop` stops them gracefully, re-raising failures."""

    def __init__(self, *services: Callable[[asyncio.Event], Awaitable[None]]) -> None:
        self.stopping = asyncio.Event()
        self.tasks = [asyncio.ensure_future(service(self.stopping)) for service in services]

    async def stop(self) -> None:
        self.stopping.set()
        async with asyncio.timeout(30):
            await asyncio.gather(*self.tasks)


@pytest_asyncio.fixture
async def running() -> AsyncIterator[Callable[..., Running]]:
    started: list[Running] = []

    def start(*services: Callable[[asyncio.Event], Awaitable[None]]) -> Running:
        started.append(Running(*services))
        return started[-1]

    yield start
    for each in started:
        if not each.stopping.is_set():
            await each.stop()


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str) -> T:
    """Poll `probe` until it returns something, or fail after WAIT_S saying what was awaited."""
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                found = await probe()
                if found is not None:
                    return found
                await asyncio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {WAIT_S} s waiting for {what}")


async def responses(app: App, count: int) -> list[AgencyResponse]:
    topic = app.topics.responses("wildlife")

    async def probe() -> list[AgencyResponse] | None:
        found = []
        for partition in range(await app.transport.partitions_for(topic)):
            for record in await app.transport.read_partition(topic, partition):
                found.append(app.codec.decode(record.value or b"", AgencyResponse))
        return found if len(found) >= count else None

    return await eventually(probe, f"{count} wildlife answers")


async def send_requests(app: App, requests: list[AgencyRequest]) -> None:
    topic = app.topics.requests("wildlife")
    await app.transport.producer().send_batch(
        [Outgoing(topic, app.codec.encode(r), r.submission_id.encode()) for r in requests]
    )


async def ready(agency: PermitAgency) -> None:
    async with asyncio.timeout(WAIT_S):
        await agency.restored.wait()
        await agency.connector.ready.wait()


# --- concurrency ----------------------------------------------------------------------------


@pytest.mark.parametrize("order_seed", [1, 2])
async def test_twenty_concurrent_declarations_of_ten_against_a_hundred(
    app: App, running: Callable[..., Running], order_seed: int
) -> None:
    """Twenty declarations, each writing off 10 of a 100-article permit, land at once on four
    partitions and are handled concurrently: exactly ten pass, whatever the interleaving."""
    agency = app.permit_agency("wildlife")
    service = running(agency.run)
    await ready(agency)
    await agency.issue(permit("100", T0))
    requests = [review(app, ivory("10"), f"sub-c{order_seed}-{n:02d}") for n in range(20)]
    random.Random(order_seed).shuffle(requests)
    await send_requests(app, requests)
    answers = await responses(app, 20)
    statuses = [a.status for a in answers]
    assert statuses.count(AgencyStatus.CLEARED) == 10
    assert statuses.count(AgencyStatus.REJECTED) == 10
    assert all(
        "only 0 of 100 NAR are left" in a.reasons[0]
        for a in answers
        if a.status is AgencyStatus.REJECTED
    )
    assert agency.remaining(PERMIT) == 0
    (stored,) = await read_permits(app.transport, app.codec, app.topics.permits, "wildlife")
    assert sorted(u.submission_id for u in stored.usages) == sorted(
        a.submission_id for a in answers if a.status is AgencyStatus.CLEARED
    )
    await service.stop()


async def test_balances_survive_a_restart_in_the_middle(
    app: App, running: Callable[..., Running]
) -> None:
    """Eight declarations, a restart, the same three again (re-delivered), then twelve more:
    the restored ledger equals the one before, and still exactly ten pass in all."""
    requests = [review(app, ivory("10"), f"sub-r-{n:02d}") for n in range(20)]
    first = app.permit_agency("wildlife")
    service = running(first.run)
    await ready(first)
    await first.issue(permit("100", T0))
    await send_requests(app, requests[:8])
    await responses(app, 8)
    assert first.remaining(PERMIT) == 20
    before = first.ledger.permits()
    await service.stop()

    second = app.permit_agency("wildlife")
    running(second.run)
    await ready(second)
    assert second.ledger.permits() == before
    assert second.remaining(PERMIT) == 20
    await send_requests(app, requests[:3])  # re-delivered: written off already
    again = await responses(app, 11)
    assert [a.status for a in again[8:]] == [AgencyStatus.CLEARED] * 3
    assert second.remaining(PERMIT) == 20
    await send_requests(app, requests[8:])
    answers = await responses(app, 23)
    latest = {a.submission_id: a.status for a in answers}
    assert list(latest.values()).count(AgencyStatus.CLEARED) == 10
    assert second.remaining(PERMIT) == 0
    (stored,) = await read_permits(app.transport, app.codec, app.topics.permits, "wildlife")
    assert stored == second.ledger.get(PERMIT)


# --- the whole single window ----------------------------------------------------------------


async def decisions(app: App, submission_id: str, version: int) -> Decision | None:
    """The latest final decision of `version` of the submission, if there is one yet."""
    found = None
    for partition in range(await app.transport.partitions_for(app.topics.decisions)):
        for record in await app.transport.read_partition(app.topics.decisions, partition):
            decision = app.codec.decode(record.value or b"", Decision)
            if (decision.submission_id, decision.version, decision.final) == (
                submission_id,
                version,
                True,
            ):
                found = decision
    return found


async def final_decision(app: App, submission: Submission) -> Decision:
    sid, version = submission.submission_id, submission.version
    return await eventually(
        lambda: decisions(app, sid, version), f"final decision {sid} v{version}"
    )


async def lodge(app: App, submission: Submission) -> None:
    await app.transport.producer().send_batch(
        [
            Outgoing(
                app.topics.submissions,
                app.codec.encode(submission),
                submission.submission_id.encode(),
            )
        ]
    )


def lodged(declaration: Declaration, **fields: Any) -> Submission:
    return declare(
        declaration.model_dump_json().encode(),
        trader_id=IMPORTER,
        channel="test",
        now=now_utc(),
        **fields,
    )


async def test_write_off_amendment_cancellation_and_over_use_through_the_single_window(
    app: App, running: Callable[..., Running]
) -> None:
    wildlife = app.permit_agency("wildlife")
    quiet = load_risk_policy().model_copy(update={"random_selection_rate": 0.0})
    customs = app.customs_risk_agency(CustomsRiskConfig(policy=quiet))
    running(app.router().run, app.aggregator().run, customs.run, wildlife.run)
    await ready(wildlife)
    await wildlife.issue(permit("5", now_utc()))

    # Version 1 writes off 2 of 5: released, customs green, wildlife says what is left.
    v1 = lodged(ivory("2"))
    await lodge(app, v1)
    decision = await final_decision(app, v1)
    assert decision.outcome is Outcome.RELEASED
    lines = {line.agency: line for line in decision.agencies}
    assert lines["wildlife"].reasons == (
        f"permit {PERMIT} (C400): item 1 writes off 2 NAR; 3 of 5 NAR left",
    )
    assert lines["customs"].reasons[0].startswith("risk lane green: score 18")

    # Version 2 asks for 4 instead: version 1's 2 come back first, so 4 fit.
    v2 = lodged(ivory("4"), version=2, submission_id=v1.submission_id)
    await lodge(app, v2)
    decision = await final_decision(app, v2)
    wildlife_line = next(line for line in decision.agencies if line.agency == "wildlife")
    assert wildlife_line.reasons == (
        f"permit {PERMIT} (C400): item 1 writes off 4 NAR; 1 of 5 NAR left",
    )

    # Another declaration wanting 3 while only 1 is left: rejected, saying why.
    other = lodged(ivory("3", lrn="GO-2026-0078"))
    await lodge(app, other)
    decision = await final_decision(app, other)
    assert decision.outcome is Outcome.REJECTED
    wildlife_line = next(line for line in decision.agencies if line.agency == "wildlife")
    assert wildlife_line.reasons == (
        f"overuse: permit {PERMIT} (C400) cited on item 1: item 1 would write off 3 NAR but "
        "only 1 of 5 NAR are left",
    )

    # Cancelling the first declaration gives its 4 back.
    cancellation = cancel(
        v1.submission_id,
        version=3,
        trader_id=IMPORTER,
        channel="test",
        now=now_utc(),
        reason="consignment sold elsewhere",
    )
    await lodge(app, cancellation)

    async def restored_balance() -> Decimal | None:
        left = wildlife.remaining(PERMIT)
        return left if left == 5 else None

    assert await eventually(restored_balance, "the cancelled quantity back") == 5
    (stored,) = await read_permits(app.transport, app.codec, app.topics.permits, "wildlife")
    assert [(u.version, u.release_reason) for u in stored.usages] == [
        (1, "replaced by version 2"),
        (2, "version 3: cancelled"),
    ]


# --- the command line ---------------------------------------------------------------------


def swb_executable() -> str:
    beside = Path(sys.executable).with_name("swb")
    found = str(beside) if beside.exists() else shutil.which("swb")
    assert found, "the swb command is not installed: pip install -e '.[dev]'"
    return found


@pytest.mark.e2e
async def test_swb_permits_prints_what_is_left(
    app: App, running: Callable[..., Running], kafka_bootstrap: str
) -> None:
    agency = app.permit_agency("wildlife")
    running(agency.run)
    await ready(agency)
    await agency.issue(permit("100", T0))
    await send_requests(app, [review(app, ivory("10"), f"sub-cli-{n}") for n in range(3)])
    await responses(app, 3)
    env = {
        "PATH": os.environ["PATH"],
        "SWB_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "SWB_TOPIC_PREFIX": app.topics.prefix,
        "SWB_LOG_FORMAT": "json",
    }
    process = await asyncio.create_subprocess_exec(
        swb_executable(),
        "permits",
        "--agency",
        "wildlife",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(WAIT_S):
        out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert out.decode().splitlines() == [
        f"{PERMIT}  C400  wildlife  holder {IMPORTER}  70 of 100 NAR left  (3 write-offs, "
        f"valid {T0 - timedelta(days=1):%Y-%m-%d} to {T0 + timedelta(days=90):%Y-%m-%d})"
    ]

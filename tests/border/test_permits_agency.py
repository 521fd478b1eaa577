"""A permit agency answering real information packages, without a broker: the SDK connector on
the in-memory transport (`ConnectorHarness`). Each refusal says which problem and why;
amendments and cancellations give quantities back; the ledger survives a restart and a
failed write to the permits topic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from broker.core.codec import Codec
from broker.core.declaration import AdditionalDocument, Declaration
from broker.core.messages import (
    AgencyRequest,
    AgencyResponse,
    AgencyStatus,
    Permit,
    RequestKind,
    SubmissionKind,
)
from broker.core.routing import information_package, route
from broker.core.rules import load_rules
from broker.errors import TransportError
from broker.runtime.memory import MemoryTransport
from broker.runtime.transport import Outgoing, Producer
from connectors import Backoff
from connectors.permits import PermitAgency, read_permits
from connectors.sdk import ConnectorFactory
from connectors.testing import ConnectorHarness

RULES = load_rules()
T0 = datetime(2026, 11, 6, 8, 0, tzinfo=UTC)
IMPORTER = "NL870012345"  # the importer of sample 07


def ivory(
    permit_id: str = "26NL123456/20", quantity: str | None = "1", **changes: Any
) -> Declaration:
    """Sample 07 (a CITES ivory carving, 1 article), its C400 citing `permit_id`."""
    path = Path(str(resources.files("broker.samples"))) / "07-ivory-carving-cites.json"
    declaration = Declaration.model_validate_json(path.read_bytes())
    (item,) = declaration.items
    document = AdditionalDocument(
        type_code="C400",
        id=permit_id,
        issuer="RVO",
        quantity_used=None if quantity is None else Decimal(quantity),
    )
    item = item.model_copy(update={"documents": (document,)})
    return declaration.model_copy(update={"items": (item,), **changes})


def cites_permit(
    permit_id: str = "26NL123456/20",
    total: str = "5",
    *,
    holder: str = IMPORTER,
    valid_to: datetime = T0 + timedelta(days=180),
) -> Permit:
    return Permit(
        permit_id=permit_id,
        type_code="C400",
        issuing_agency="wildlife",
        holder_id=holder,
        hs_prefixes=("9601", "0507"),
        unit="NAR",
        total_quantity=Decimal(total),
        valid_from=T0 - timedelta(days=30),
        valid_to=valid_to,
        issued_at=T0 - timedelta(days=30),
    )


def review(
    declaration: Declaration,
    submission_id: str = "sub-ivory-1",
    version: int = 1,
    agency: str = "wildlife",
    at: datetime = T0,
) -> AgencyRequest:
    """The request the router would send `agency` for this declaration."""
    kind = SubmissionKind.NEW if version == 1 else SubmissionKind.AMENDMENT
    plan = route(
        declaration,
        RULES,
        submission_id=submission_id,
        version=version,
        kind=kind,
        trader_id=IMPORTER,
        payload_sha256="0" * 64,
        now=at,
    )
    (agency_route,) = [r for r in plan.agencies if r.agency == agency]
    return AgencyRequest(
        request_id=f"{submission_id}:{version}:{agency}:review",
        submission_id=submission_id,
        version=version,
        agency=agency,
        kind=RequestKind.REVIEW,
        requirement=agency_route.requirement,
        reasons=agency_route.reasons,
        deadline=agency_route.deadline,
        sent_at=at,
        package=information_package(declaration, agency_route, RULES),
    )


def withdrawal(submission_id: str, version: int, why: str) -> AgencyRequest:
    return AgencyRequest(
        request_id=f"{submission_id}:{version}:wildlife:withdrawal",
        submission_id=submission_id,
        version=version,
        agency="wildlife",
        kind=RequestKind.WITHDRAWAL,
        requirement=review(ivory()).requirement,
        deadline=T0 + timedelta(days=2),
        sent_at=T0 + timedelta(hours=version),
        withdrawal_reason=f"version {version}: {why}",
    )


class Wildlife:
    """A harness running a `PermitAgency` for wildlife; `agency` is the current instance."""

    def __init__(self, transport: MemoryTransport | None = None, **options: Any) -> None:
        self.harness = ConnectorHarness("wildlife", build=self._build, **options)
        if transport is not None:
            self.harness.transport = transport
        self.agency: PermitAgency | None = None

    def _build(self, factory: ConnectorFactory) -> PermitAgency:
        self.agency = PermitAgency(
            "wildlife", factory, self.harness.transport, self.harness.codec, self.harness.topics
        )
        return self.agency

    async def issue(self, *permits: Permit) -> None:
        assert self.agency is not None
        async with asyncio.timeout(5):
            await self.agency.restored.wait()
        for permit in permits:
            await self.agency.issue(permit)

    async def ask(self, *requests: AgencyRequest, answers: int) -> list[AgencyResponse]:
        before = len(await self.harness.records(self.harness.topics.responses("wildlife")))
        await self.harness.send(*requests)
        found = await self.harness.responses(before + answers)
        return found[before:]

    async def settled(self, condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
        """Wait until `condition` holds (a withdrawal has no answer to wait for)."""
        async with asyncio.timeout(timeout_s):
            while True:
                if condition():
                    return
                await asyncio.sleep(0.005)

    def remaining(self, permit_id: str = "26NL123456/20") -> Decimal:
        assert self.agency is not None
        return self.agency.remaining(permit_id)


@pytest_asyncio.fixture
async def wildlife() -> AsyncIterator[Wildlife]:
    running = Wildlife()
    async with running.harness:
        await running.issue(cites_permit())
        yield running


# --- answers ----------------------------------------------------------------------------------


async def test_a_cited_permit_is_written_off_and_the_answer_says_what_is_left(
    wildlife: Wildlife,
) -> None:
    (answer,) = await wildlife.ask(review(ivory(quantity="2")), answers=1)
    assert answer.status is AgencyStatus.CLEARED
    assert answer.reasons == (
        "permit 26NL123456/20 (C400): item 1 writes off 2 NAR; 3 of 5 NAR left",
    )
    assert wildlife.remaining() == 3
    codec, harness = wildlife.harness.codec, wildlife.harness
    (stored,) = await read_permits(harness.transport, codec, harness.topics.permits)
    assert [u.quantity for u in stored.usages] == [Decimal("2")]


async def test_the_quantity_defaults_to_the_items_quantity_in_the_permits_unit(
    wildlife: Wildlife,
) -> None:
    """Sample 07 declares 1 NAR (supplementary quantity): with no quantity_used, 1 is used."""
    (answer,) = await wildlife.ask(review(ivory(quantity=None)), answers=1)
    assert answer.status is AgencyStatus.CLEARED
    assert wildlife.remaining() == 4


async def test_over_use_is_rejected_with_the_balance(wildlife: Wildlife) -> None:
    (answer,) = await wildlife.ask(review(ivory(quantity="6")), answers=1)
    assert answer.status is AgencyStatus.REJECTED
    assert answer.reasons == (
        "overuse: permit 26NL123456/20 (C400) cited on item 1: item 1 would write off 6 NAR "
        "but only 5 of 5 NAR are left",
    )
    assert wildlife.remaining() == 5


async def test_an_expired_permit_asks_for_a_valid_one(wildlife: Wildlife) -> None:
    await wildlife.issue(cites_permit("26NL000001/19", valid_to=T0 - timedelta(days=3)))
    (answer,) = await wildlife.ask(review(ivory("26NL000001/19")), answers=1)
    assert answer.status is AgencyStatus.DOCUMENTS_REQUIRED
    (reason,) = answer.reasons
    assert reason.startswith("expired: permit 26NL000001/19 (C400) cited on item 1 expired on")
    (document,) = answer.documents_required
    assert document.type_code == "C400"
    assert document.deadline == T0 + timedelta(hours=48)


async def test_another_holders_permit_is_rejected(wildlife: Wildlife) -> None:
    await wildlife.issue(cites_permit("26DE777777/01", holder="DE123456789012"))
    (answer,) = await wildlife.ask(review(ivory("26DE777777/01")), answers=1)
    assert answer.status is AgencyStatus.REJECTED
    assert "held by DE123456789012, not by NL870012345" in answer.reasons[0]
    assert answer.reasons[0].startswith("foreign: ")


async def test_an_unknown_permit_asks_for_the_right_one(wildlife: Wildlife) -> None:
    (answer,) = await wildlife.ask(review(ivory("26NL999999/99")), answers=1)
    assert answer.status is AgencyStatus.DOCUMENTS_REQUIRED
    assert answer.reasons[0].startswith("unknown: permit 26NL999999/99 (C400)")


async def test_a_required_agency_without_a_cited_permit_asks_for_one(wildlife: Wildlife) -> None:
    declaration = ivory()
    (item,) = declaration.items
    bare = declaration.model_copy(update={"items": (item.model_copy(update={"documents": ()}),)})
    (answer,) = await wildlife.ask(review(bare), answers=1)
    assert answer.status is AgencyStatus.DOCUMENTS_REQUIRED
    assert [d.type_code for d in answer.documents_required] == ["C400"]


# --- amendment, cancellation, rejection elsewhere -------------------------------------------


async def test_an_amendment_replaces_the_write_off(wildlife: Wildlife) -> None:
    await wildlife.ask(review(ivory(quantity="2")), answers=1)
    assert wildlife.remaining() == 3
    (answer,) = await wildlife.ask(review(ivory(quantity="4"), version=2), answers=1)
    assert answer.status is AgencyStatus.CLEARED
    assert answer.reasons == (
        "permit 26NL123456/20 (C400): item 1 writes off 4 NAR; 1 of 5 NAR left",
    )
    assert wildlife.remaining() == 1


async def test_a_cancellation_gives_the_quantity_back(wildlife: Wildlife) -> None:
    await wildlife.ask(review(ivory(quantity="2")), review(ivory(quantity="1"), "sub-2"), answers=2)
    assert wildlife.remaining() == 2
    await wildlife.harness.send(withdrawal("sub-ivory-1", 2, "cancelled"))
    await wildlife.settled(lambda: wildlife.remaining() == 4)  # withdrawals are not answered
    (answer,) = await wildlife.ask(review(ivory(quantity="3"), "sub-3"), answers=1)
    assert answer.status is AgencyStatus.CLEARED
    assert wildlife.remaining() == 1  # 5 - 1 (sub-2) - 3 (sub-3): sub-ivory-1's 2 came back
    assert wildlife.agency is not None
    permit = wildlife.agency.ledger.get("26NL123456/20")
    assert permit is not None
    released = [u for u in permit.usages if u.released_at is not None]
    assert [(u.submission_id, u.release_reason) for u in released] == [
        ("sub-ivory-1", "version 2: cancelled")
    ]


# --- restart and failure --------------------------------------------------------------------


async def test_a_restarted_agency_restores_the_ledger_from_the_permits_topic(
    wildlife: Wildlife,
) -> None:
    await wildlife.ask(review(ivory(quantity="2")), review(ivory(quantity="1"), "sub-2"), answers=2)
    assert wildlife.agency is not None
    before = wildlife.agency.ledger.permits()
    first = wildlife.agency
    await wildlife.harness.restart()
    assert wildlife.agency is not first
    await wildlife.issue()  # waits for the restore
    assert wildlife.agency.ledger.permits() == before
    # A request re-delivered after the restart writes nothing off twice and answers the same.
    (again,) = await wildlife.ask(review(ivory(quantity="2")), answers=1)
    assert again.status is AgencyStatus.CLEARED
    assert wildlife.remaining() == 2


class FailingProducer:
    """Fails the next `failures` writes to the permits topic, then writes through."""

    def __init__(self, inner: Producer, topic: str, failures: int) -> None:
        self._inner, self._topic, self.failures = inner, topic, failures

    async def send_batch(self, records: Sequence[Outgoing]) -> None:
        if self.failures and any(r.topic == self._topic for r in records):
            self.failures -= 1
            raise TransportError("broker unreachable (test)")
        await self._inner.send_batch(records)


class FlakyTransport(MemoryTransport):
    def __init__(self) -> None:
        super().__init__()
        self.failing: FailingProducer | None = None

    def producer(self) -> Producer:
        return self.failing or super().producer()


async def test_a_failed_write_to_the_permits_topic_rolls_back_and_is_retried() -> None:
    transport = FlakyTransport()
    running = Wildlife(transport, retry=Backoff(initial_s=0.01, max_s=0.02))
    async with running.harness:
        await running.issue(cites_permit())
        transport.failing = FailingProducer(
            MemoryTransport.producer(transport), running.harness.topics.permits, failures=2
        )
        (answer,) = await running.ask(review(ivory(quantity="2")), answers=1)
        assert transport.failing.failures == 0  # both failures happened, then it went through
        assert answer.status is AgencyStatus.CLEARED
        assert answer.reasons[0].endswith("3 of 5 NAR left")  # written off once, not three times
        assert running.remaining() == 3
        stored = await read_permits(transport, Codec(), running.harness.topics.permits)
        assert [len(p.usages) for p in stored] == [1]


async def test_an_agency_issues_only_its_own_permit_types(wildlife: Wildlife) -> None:
    assert wildlife.agency is not None
    with pytest.raises(ValueError, match="issues C400, not X002"):
        await wildlife.agency.issue(cites_permit().model_copy(update={"type_code": "X002"}))
    with pytest.raises(ValueError, match="cannot issue a strategic permit"):
        await wildlife.agency.issue(
            cites_permit().model_copy(update={"issuing_agency": "strategic"})
        )


async def test_a_group_of_concurrent_requests_is_rolled_back_and_retried_together() -> None:
    transport = FlakyTransport()
    running = Wildlife(transport, retry=Backoff(initial_s=0.01, max_s=0.02))
    async with running.harness:
        await running.issue(cites_permit(total="5"))
        transport.failing = FailingProducer(
            MemoryTransport.producer(transport), running.harness.topics.permits, failures=1
        )
        requests = [review(ivory(quantity="2"), f"sub-g{n}") for n in range(3)]
        answers = await running.ask(*requests, answers=3)
        assert transport.failing.failures == 0
        assert sorted(a.status for a in answers) == [
            AgencyStatus.CLEARED,
            AgencyStatus.CLEARED,
            AgencyStatus.REJECTED,
        ]
        assert running.remaining() == 1


async def test_a_request_the_agency_cannot_handle_does_not_hold_back_the_others(
    wildlife: Wildlife,
) -> None:
    broken = review(ivory(quantity="2"), "sub-broken").model_copy(update={"package": None})
    await wildlife.harness.send(broken, review(ivory(quantity="2"), "sub-fine"))
    (dead,) = await wildlife.harness.dead_letters(1)
    assert dict(dead.headers)["swb.error.reason"] == b"handler-failed"
    (answer,) = await wildlife.harness.responses(1)
    assert (answer.submission_id, answer.status) == ("sub-fine", AgencyStatus.CLEARED)
    assert wildlife.remaining() == 3

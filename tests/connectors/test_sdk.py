"""The connector SDK's guarantees, on the in-memory transport (same contract as Kafka):
answers, commits, idempotency, order per submission, dead letters, retries, shutdown."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from broker.core.codec import Codec
from broker.core.messages import AgencyRequest, AgencyResponse, AgencyStatus, RequestKind
from broker.core.topics import Topics
from broker.runtime.dlq import REASON, SERVICE, SOURCE_OFFSET, SOURCE_TOPIC, header
from broker.runtime.memory import MemoryTransport
from broker.runtime.transport import Record, TopicPartition
from connectors import AgencyConnector, AgencyUnavailable, Backoff, Handler, RequestRefused
from connectors.offsets import OffsetTracker
from connectors.simulated import SimulatedAgency, SimulationProfile
from connectors.testing import ConnectorHarness, review_request, withdrawal_of

FAST = Backoff(initial_s=0.001, max_s=0.01)


def cleared(request: AgencyRequest, sequence: int = 1) -> AgencyResponse:
    return AgencyResponse(
        submission_id=request.submission_id,
        version=request.version,
        agency=request.agency,
        status=AgencyStatus.CLEARED,
        answered_at=request.sent_at,
        sequence=sequence,
        reasons=("no objection",),
    )


class Recorder:
    """A handler that clears every review and remembers what it saw."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, int, RequestKind]] = []
        self.withdrawn = asyncio.Event()

    async def __call__(self, request: AgencyRequest) -> Sequence[AgencyResponse]:
        self.seen.append((request.submission_id, request.version, request.kind))
        if request.kind is RequestKind.WITHDRAWAL:
            self.withdrawn.set()
            return []
        return [cleared(request)]


async def test_answers_on_the_agency_responses_topic_keyed_by_submission() -> None:
    handler = Recorder()
    async with ConnectorHarness("food", handler) as harness:
        await harness.send(review_request("food", "S-1"))
        (answer,) = await harness.responses(1)
        (record,) = await harness.records(harness.topics.responses("food"))
    assert (answer.submission_id, answer.agency, answer.status) == ("S-1", "food", "CLEARED")
    assert record.key == b"S-1"


async def test_redelivered_request_is_handled_once_but_withdrawal_reaches_handler() -> None:
    handler = Recorder()
    request = review_request("food", "S-1")
    async with ConnectorHarness("food", handler) as harness:
        await harness.send(request, request, request.model_copy(update={"version": 2}))
        await harness.send(withdrawal_of(request))
        await harness.responses(2)
        async with asyncio.timeout(5):
            await handler.withdrawn.wait()
        await harness.send(request)  # a later re-delivery, after the batch was committed
        await harness.send(review_request("food", "S-2"))
        await harness.responses(3)
    assert handler.seen == [
        ("S-1", 1, RequestKind.REVIEW),
        ("S-1", 2, RequestKind.REVIEW),
        ("S-1", 1, RequestKind.WITHDRAWAL),
        ("S-2", 1, RequestKind.REVIEW),
    ]


async def test_one_submission_in_order_others_concurrently() -> None:
    """A slow review is not overtaken by its own withdrawal, but does not hold other
    submissions back either."""
    order: list[str] = []
    release, fast_done = asyncio.Event(), asyncio.Event()

    async def handler(request: AgencyRequest) -> Sequence[AgencyResponse]:
        order.append(f"{request.submission_id}:{request.kind.value}:start")
        if request.submission_id == "S-slow" and request.kind is RequestKind.REVIEW:
            await release.wait()
        order.append(f"{request.submission_id}:{request.kind.value}:end")
        if request.submission_id == "S-fast":
            fast_done.set()
        return [] if request.kind is RequestKind.WITHDRAWAL else [cleared(request)]

    slow = review_request("food", "S-slow")
    async with ConnectorHarness("food", handler, partitions=1) as harness:
        await harness.send(slow, withdrawal_of(slow), review_request("food", "S-fast"))
        async with asyncio.timeout(5):
            await fast_done.wait()
        release.set()
        await harness.responses(2)
    assert order.index("S-slow:REVIEW:end") < order.index("S-slow:WITHDRAWAL:start")
    assert order.index("S-fast:REVIEW:end") < order.index("S-slow:REVIEW:end")


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"not avro", "bad-magic"),
        (b"\xc3\x01" + bytes(8), "unknown-fingerprint"),
    ],
)
async def test_poison_bytes_go_to_the_dlq_and_the_next_request_is_answered(
    value: bytes, reason: str
) -> None:
    async with ConnectorHarness("food", Recorder()) as harness:
        await harness.send(value, key=b"S-0")
        await harness.send(review_request("food", "S-1"))
        (dead,) = await harness.dead_letters(1)
        (answer,) = await harness.responses(1)
    assert dead.value == value
    assert header(dead, REASON) == reason
    assert header(dead, SOURCE_TOPIC) == harness.topics.requests("food")
    assert header(dead, SOURCE_OFFSET) is not None
    assert header(dead, SERVICE) == "connector-food"
    assert answer.submission_id == "S-1"


async def test_request_for_another_agency_goes_to_the_dlq() -> None:
    handler = Recorder()
    async with ConnectorHarness("food", handler) as harness:
        await harness.send(review_request("customs", "S-1"))
        (dead,) = await harness.dead_letters(1)
    assert header(dead, REASON) == "agency-mismatch"
    assert handler.seen == []


@pytest.mark.parametrize(
    ("failure", "reason"),
    [
        (RequestRefused("agency-refused", "no such commodity"), "agency-refused"),
        (ZeroDivisionError("bug"), "handler-failed"),
    ],
)
async def test_handler_that_refuses_or_breaks_dead_letters_the_request(
    failure: Exception, reason: str
) -> None:
    async def handler(request: AgencyRequest) -> Sequence[AgencyResponse]:
        if request.submission_id == "S-bad":
            raise failure
        return [cleared(request)]

    async with ConnectorHarness("food", handler) as harness:
        await harness.send(review_request("food", "S-bad"), review_request("food", "S-good"))
        (dead,) = await harness.dead_letters(1)
        (answer,) = await harness.responses(1)
    assert header(dead, REASON) == reason
    assert answer.submission_id == "S-good"


async def test_answer_for_another_agency_is_refused_not_published() -> None:
    async def handler(request: AgencyRequest) -> Sequence[AgencyResponse]:
        return [cleared(request).model_copy(update={"agency": "customs"})]

    async with ConnectorHarness("food", handler) as harness:
        await harness.send(review_request("food", "S-1"))
        (dead,) = await harness.dead_letters(1)
        assert await harness.records(harness.topics.responses("food")) == []
    assert header(dead, REASON) == "answer-mismatch"


async def test_dead_letters_off_logs_and_skips_for_agencies_without_dlq_acl() -> None:
    async with ConnectorHarness("food", Recorder(), dead_letters=False) as harness:
        await harness.send(b"junk", key=b"S-0")
        await harness.send(review_request("food", "S-1"))
        await harness.responses(1)
        assert await harness.records(harness.topics.dlq) == []


async def test_retriable_failure_is_retried_until_it_succeeds() -> None:
    calls = 0

    async def handler(request: AgencyRequest) -> Sequence[AgencyResponse]:
        nonlocal calls
        calls += 1
        if calls < 4:
            raise AgencyUnavailable("agency system restarting")
        return [cleared(request)]

    async with ConnectorHarness("food", handler, retry=FAST) as harness:
        await harness.send(review_request("food", "S-1"))
        (answer,) = await harness.responses(1)
        assert await harness.records(harness.topics.dlq) == []
    assert calls == 4
    assert answer.submission_id == "S-1"


async def test_no_commit_past_an_unanswered_request() -> None:
    """S-1 waits on an agency that never answers; S-2 after it (same partition) is answered.
    After a restart both come again: the commit stopped before S-1."""
    seen: list[str] = []
    agency_up = False

    async def handler(request: AgencyRequest) -> Sequence[AgencyResponse]:
        seen.append(request.submission_id)
        if request.submission_id == "S-1" and not agency_up:
            raise AgencyUnavailable("down")
        return [cleared(request)]

    options = {"retry": FAST, "graceful_timeout_s": 0.05}
    async with ConnectorHarness("food", handler, partitions=1, **options) as harness:
        await harness.send(review_request("food", "S-1"), review_request("food", "S-2"))
        await harness.responses(1)
        await harness.stop()
        assert [a.submission_id for a in await harness.responses(1)] == ["S-2"]
        agency_up = True
        seen.clear()
        await harness.start()
        answers = await harness.responses(3)
    assert seen == ["S-1", "S-2"]
    assert sorted(a.submission_id for a in answers) == ["S-1", "S-2", "S-2"]


async def test_graceful_shutdown_finishes_in_flight_work() -> None:
    started = asyncio.Event()

    async def slow(request: AgencyRequest) -> Sequence[AgencyResponse]:
        started.set()
        await asyncio.sleep(0.2)
        return [cleared(request)]

    async with ConnectorHarness("food", slow, graceful_timeout_s=5) as harness:
        await harness.send(review_request("food", "S-1"))
        await started.wait()
        await harness.stop()
        (answer,) = await harness.responses(1, timeout_s=0.1)
        await harness.start()  # committed: nothing comes again
        await asyncio.sleep(0.05)
        assert len(await harness.records(harness.topics.responses("food"))) == 1
    assert answer.submission_id == "S-1"


async def test_simulated_agency_is_an_sdk_connector_and_answers_deterministically() -> None:
    def factory(code: str, handler: Handler) -> AgencyConnector:
        return AgencyConnector(code, handler, MemoryTransport(), Codec(), Topics("test"))

    agency = SimulatedAgency("food", factory, SimulationProfile())
    assert isinstance(agency.connector, AgencyConnector)
    request = review_request("food", "S-1")
    answers = []
    for _ in range(2):
        async with ConnectorHarness("food", agency.answer) as harness:
            await harness.send(request)
            answers += await harness.responses(1)
    assert answers[0] == answers[1]
    assert answers[0].agency == "food"


def test_offset_tracker_commits_only_the_handled_prefix_per_partition() -> None:
    def rec(partition: int, offset: int) -> Record:
        return Record("t", partition, offset, None, None)

    tracker = OffsetTracker()
    for record in (rec(0, 5), rec(0, 6), rec(0, 7), rec(1, 0)):
        tracker.add(record)
    tracker.done(rec(0, 6))
    tracker.done(rec(1, 0))
    assert tracker.committable() == {TopicPartition("t", 1): 1}  # 0/5 still unanswered
    tracker.done(rec(0, 5))
    assert tracker.committable() == {TopicPartition("t", 0): 7}
    assert tracker.unhandled() == 1
    tracker.forget({TopicPartition("t", 0)})
    tracker.done(rec(0, 7))
    assert tracker.committable() == {}

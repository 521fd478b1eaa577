"""Router service: `sw.submissions` → `sw.routing` + each agency's requests topic.

At-least-once with idempotent effects: requests are written before the plan, the plan before
the commit, so a crash anywhere re-routes the same submission to the same deterministic ids.
The router remembers each submission's last plan (to withdraw agencies no longer concerned),
and rebuilds that memory from `sw.routing` itself, whose partitions match its own.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import structlog

from broker.core.arrival import is_pre_arrival
from broker.core.codec import Codec
from broker.core.declaration import Declaration
from broker.core.ids import request_id_for
from broker.core.messages import (
    AgencyRequest,
    PartnerLink,
    RequestKind,
    RoutingPlan,
    Submission,
    SubmissionKind,
)
from broker.core.partner import link_partner_export, shared_with
from broker.core.routing import review_request, route
from broker.core.rules import RuleBook
from broker.core.topics import Topics
from broker.errors import CodecError, TransportError
from broker.runtime.consuming import consume_batches
from broker.runtime.dlq import dead_letter
from broker.runtime.logging import RecordContext, info_enabled
from broker.runtime.metrics import Metrics
from broker.runtime.partner_inbox import PartnerInbox
from broker.runtime.transport import Consumer, Outgoing, Record, TopicPartition, Transport

log = structlog.get_logger("swb.router")

SERVICE = "router"


@dataclass(frozen=True, slots=True)
class RoutedVersion:
    """What the router must remember of a submission's last plan."""

    version: int
    trader_id: str
    payload_sha256: str
    agencies: tuple[tuple[str, str], ...]  # (agency, requirement)
    deadlines: tuple[datetime, ...]
    cancelled: bool

    @classmethod
    def of(cls, plan: RoutingPlan) -> RoutedVersion:
        return cls(
            version=plan.version,
            trader_id=plan.trader_id,
            payload_sha256=plan.payload_sha256,
            agencies=tuple((r.agency, r.requirement.value) for r in plan.agencies),
            deadlines=tuple(r.deadline for r in plan.agencies),
            cancelled=plan.kind is SubmissionKind.CANCELLATION,
        )


class Rejected(Exception):
    """A submission the router refuses; it goes to the DLQ with `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class RouterService:
    def __init__(
        self,
        transport: Transport,
        codec: Codec,
        rules: RuleBook,
        topics: Topics,
        metrics: Metrics,
        clock: Callable[[], datetime],
        *,
        group_id: str = "swb-router",
        partner: PartnerInbox | None = None,
    ) -> None:
        self._transport = transport
        # Partner-customs exchange: which exports are shared, and the partners' export data
        # customs' package of an import quoting a UCR is linked to (never waited for).
        self._partner = partner
        self._codec = codec
        self._rules = rules
        self._topics = topics
        self._metrics = metrics
        self._clock = clock
        self._group_id = group_id
        self._routed: dict[str, RoutedVersion] = {}
        self._lock = asyncio.Lock()
        self._consumer: Consumer | None = None
        self.ready = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        """Route until `stopping` is set, then finish the batch in hand, commit and leave."""
        self._consumer = consumer = await self._transport.consumer(
            self._group_id,
            [self._topics.submissions],
            on_assign=self._restore,
            on_revoke=self._forget,
        )
        self.ready.set()
        await consume_batches(
            consumer, stopping, self._lock, lambda records: self._process(consumer, records)
        )

    async def _process(self, consumer: Consumer, records: list[Record]) -> None:
        started = asyncio.get_running_loop().time()
        first: list[Outgoing] = []  # agency requests, withdrawals, dead letters
        plans: list[Outgoing] = []
        routed: dict[str, RoutedVersion] = {}
        offsets: dict[TopicPartition, int] = {}
        verbose = info_enabled(log)
        for record in records:
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
            with RecordContext(
                topic=record.topic, partition=record.partition, offset=record.offset
            ) as context:
                try:
                    submission = self._decode(record)
                    context.bind(submission_id=submission.submission_id, version=submission.version)
                    plan, requests = self._route(submission, routed)
                except Rejected as exc:
                    log.warning("submission refused", reason=exc.reason, error=str(exc))
                    self._metrics.dlq.labels(exc.reason, SERVICE).inc()
                    first.append(
                        dead_letter(self._topics.dlq, record, exc.reason, str(exc), SERVICE)
                    )
                    continue
                if plan is None:
                    continue
                key = plan.submission_id.encode()
                first.extend(
                    Outgoing(self._topics.requests(r.agency), self._codec.encode(r), key=key)
                    for r in requests
                )
                plans.append(Outgoing(self._topics.routing, self._codec.encode(plan), key=key))
                routed[plan.submission_id] = RoutedVersion.of(plan)
                self._count(submission, requests, verbose)
        producer = self._transport.producer()
        try:
            await producer.send_batch(first)
            await producer.send_batch(plans)
        except TransportError:
            log.exception("produce failed; the batch will be routed again")
            raise
        self._routed.update(routed)
        try:
            await consumer.commit(offsets)
        except TransportError as exc:  # rebalance: the records come again, routing is idempotent
            log.warning("commit failed; records will be redelivered", error=str(exc))
        elapsed = asyncio.get_running_loop().time() - started
        self._metrics.batch_seconds.labels(SERVICE).observe(elapsed)

    def _decode(self, record: Record) -> Submission:
        try:
            submission = self._codec.decode(record.value or b"", Submission)
        except CodecError as exc:
            raise Rejected(exc.reason, str(exc)) from exc
        if record.key is not None and record.key != submission.submission_id.encode():
            raise Rejected(
                "key-mismatch",
                f"record key {record.key!r} is not the submission_id {submission.submission_id}",
            )
        return submission

    def _route(
        self, submission: Submission, routed_in_batch: dict[str, RoutedVersion]
    ) -> tuple[RoutingPlan | None, list[AgencyRequest]]:
        """The plan and the requests for one submission; (None, []) for a duplicate."""
        sid = submission.submission_id
        previous = routed_in_batch.get(sid) or self._routed.get(sid)
        if previous is not None:
            if submission.version <= previous.version:
                if (
                    submission.version == previous.version
                    and submission.payload_sha256 == previous.payload_sha256
                ):
                    return None, []  # re-delivered or re-sent: routed already
                raise Rejected(
                    "stale-version",
                    f"version {submission.version} of {sid} arrived after version "
                    f"{previous.version} was routed",
                )
            if previous.cancelled:
                raise Rejected("cancelled", f"{sid} was cancelled; submit a new declaration")
            if submission.trader_id != previous.trader_id:
                raise Rejected("trader-mismatch", f"{sid} belongs to another trader")
        elif submission.kind is not SubmissionKind.NEW:
            raise Rejected(
                "unknown-submission",
                f"{submission.kind.value.lower()} of {sid}, which was never routed",
            )

        if submission.kind is SubmissionKind.CANCELLATION:
            plan = RoutingPlan(
                submission_id=sid,
                version=submission.version,
                kind=submission.kind,
                trader_id=submission.trader_id,
                planned_at=submission.received_at,
                payload_sha256=submission.payload_sha256,
                submitted_by=submission.submitted_by,
                received_at=submission.received_at,
            )
            requests = self._withdrawals(submission, previous, keep=set(), why="cancelled")
            return plan, requests

        assert submission.declaration is not None
        # Deadlines run from the time the single window received the declaration, so a
        # re-routed submission gets the same plan.
        plan = route(
            submission.declaration,
            self._rules,
            submission_id=sid,
            version=submission.version,
            kind=submission.kind,
            trader_id=submission.trader_id,
            payload_sha256=submission.payload_sha256,
            now=submission.received_at,
        )
        partners = self._partner.countries if self._partner is not None else frozenset()
        # Audit, pre-arrival and partner exchange: all from the submission, so a re-routed
        # version gets the same plan.
        plan = plan.model_copy(
            update={
                "submitted_by": submission.submitted_by,
                "received_at": submission.received_at,
                "pre_arrival": is_pre_arrival(submission.declaration, submission.received_at),
                "shared_with": shared_with(submission.declaration, partners),
            }
        )
        requests = [
            review_request(plan, r, submission.declaration, self._rules) for r in plan.agencies
        ]
        link = self._partner_link(submission.declaration)
        if link is not None:
            requests = [
                r.model_copy(update={"package": r.package.model_copy(update={"partner": link})})
                if r.agency == "customs" and r.package is not None
                else r
                for r in requests
            ]
        keep = {r.agency for r in plan.agencies}
        requests += self._withdrawals(submission, previous, keep, why="no longer concerned")
        return plan, requests

    def _partner_link(self, declaration: Declaration) -> PartnerLink | None:
        """The partner's export data for an import quoting a UCR, as far as it has arrived:
        routing never waits for a partner (the link then says NOT_RECEIVED)."""
        inbox = self._partner
        if inbox is None or declaration.ucr is None:
            return None
        link = link_partner_export(
            declaration,
            inbox.lookup(declaration.ucr),
            inbox.countries,
            mass_tolerance=inbox.mass_tolerance,
            value_tolerance=inbox.value_tolerance,
        )
        if link is not None:
            self._metrics.partner_links.labels(link.status.value).inc()
            log.info(
                "partner export data linked",
                ucr=link.ucr,
                partner=link.partner_country,
                status=link.status.value,
                mismatches=len(link.mismatches),
            )
        return link

    def _withdrawals(
        self,
        submission: Submission,
        previous: RoutedVersion | None,
        keep: set[str],
        why: str,
    ) -> list[AgencyRequest]:
        if previous is None:
            return []
        return [
            AgencyRequest(
                request_id=request_id_for(
                    submission.submission_id, submission.version, agency, RequestKind.WITHDRAWAL
                ),
                submission_id=submission.submission_id,
                version=submission.version,
                agency=agency,
                kind=RequestKind.WITHDRAWAL,
                requirement=requirement,
                deadline=deadline,
                sent_at=submission.received_at,
                withdrawal_reason=f"version {submission.version}: {why}",
            )
            for (agency, requirement), deadline in zip(
                previous.agencies, previous.deadlines, strict=True
            )
            if agency not in keep
        ]

    def _count(self, submission: Submission, requests: list[AgencyRequest], verbose: bool) -> None:
        self._metrics.submissions.labels(submission.channel, submission.kind.value).inc()
        for request in requests:
            self._metrics.agency_requests.labels(request.agency, request.kind.value).inc()
        if verbose:  # its arguments cost more than the filtered call
            log.info(
                "submission routed",
                kind=submission.kind.value,
                agencies=[r.agency for r in requests if r.kind is RequestKind.REVIEW],
                withdrawn=[r.agency for r in requests if r.kind is RequestKind.WITHDRAWAL],
            )

    async def _restore(self, assigned: set[TopicPartition]) -> None:
        """Rebuild the last plan per submission from `sw.routing` for the new partitions.

        Under the lock: aiokafka hands out the new partitions before it awaits this callback,
        so `getmany` may already return their submissions; they must wait for the memory."""
        async with self._lock:
            await self._restore_routed(assigned)

    async def _restore_routed(self, assigned: set[TopicPartition]) -> None:
        for tp in sorted(assigned, key=lambda tp: tp.partition):
            for record in await self._transport.read_partition(self._topics.routing, tp.partition):
                try:
                    plan = self._codec.decode(record.value or b"", RoutingPlan)
                except CodecError:
                    continue  # not ours to judge here; the aggregator dead-letters it
                known = self._routed.get(plan.submission_id)
                if known is None or plan.version > known.version:
                    self._routed[plan.submission_id] = RoutedVersion.of(plan)
        log.info("router partitions assigned", partitions=sorted(tp.partition for tp in assigned))

    async def _forget(self, revoked: set[TopicPartition]) -> None:
        # Wait for the batch in hand to be written and committed before letting go.
        async with self._lock:
            pass

"""The gateway's read model: what a trader may ask about its submissions, kept in memory.

Built from `sw.submissions` (versions as received, also the ones not routed yet),
`sw.routing` (where each version went) and `sw.decisions` (the latest coordinated decision),
rebuilt from the beginning at every start (`follower.py`). Memory is bounded: a finished
submission (final decision on its latest version, or cancelled) is forgotten after
`finished_retention_s`, and beyond `max_finished` the oldest finished go first. Open
submissions are the working set and always kept.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from broker.core.messages import (
    ArrivalNotice,
    Decision,
    Outcome,
    RoutingPlan,
    Submission,
    SubmissionKind,
)
from broker.gateway.views import DecisionView, SubmissionView, VersionView, status_url


@dataclass
class VersionEntry:
    version: int
    kind: SubmissionKind | None = None
    received_at: datetime | None = None
    payload_sha256: str | None = None
    submitted_by: str | None = None
    routed_at: datetime | None = None
    agencies: tuple[str, ...] = ()


@dataclass
class SubmissionEntry:
    submission_id: str
    trader_id: str
    lrn: str | None = None
    versions: dict[int, VersionEntry] = field(default_factory=dict)
    decision: Decision | None = None
    arrival: ArrivalNotice | None = None  # the first one counts, as in the aggregator

    @property
    def latest_version(self) -> int:
        known = max(self.versions, default=0)
        return max(known, self.decision.version if self.decision else 0, 1)

    @property
    def latest(self) -> VersionEntry | None:
        return self.versions.get(self.latest_version)

    @property
    def cancelled(self) -> bool:
        if self.decision is not None and self.decision.outcome is Outcome.CANCELLED:
            return True
        return any(v.kind is SubmissionKind.CANCELLATION for v in self.versions.values())

    @property
    def finished_at(self) -> datetime | None:
        """When the submission stopped changing, or None while it is open."""
        decision = self.decision
        if decision is not None and decision.final and decision.version == self.latest_version:
            return decision.decided_at
        if self.cancelled:
            latest = self.latest
            return latest.received_at if latest and latest.received_at else None
        return None

    def change_refused_because(self) -> str | None:
        """The amendment and cancellation rule (README "Trader HTTP API"): allowed until the
        submission is cancelled or its latest version has a final decision."""
        if self.cancelled:
            version = next(
                (
                    v.version
                    for v in self.versions.values()
                    if v.kind is SubmissionKind.CANCELLATION
                ),
                self.latest_version,
            )
            return (
                f"the submission was cancelled (version {version}); a cancelled declaration "
                "cannot change: lodge a new declaration with a new LRN"
            )
        decision = self.decision
        if decision is not None and decision.final and decision.version == self.latest_version:
            return (
                f"version {decision.version} has a final decision ({decision.outcome.value}); "
                "a released or rejected declaration can no longer be amended or cancelled"
            )
        return None

    def arrival_refused_because(self) -> str | None:
        """Why an arrival notice makes no sense for this submission, or None. Before its
        first decision the gateway cannot tell whether the goods are awaited: it accepts."""
        if self.cancelled:
            return "the submission was cancelled: no goods are released on arrival"
        decision = self.decision
        if decision is None or decision.version != self.latest_version:
            return None
        if decision.release_on_arrival or decision.arrived_at is not None:
            return None
        if decision.outcome is Outcome.REJECTED:
            return f"version {decision.version} was rejected: nothing is released on arrival"
        return (
            f"version {decision.version} was lodged after the goods arrived: its release "
            "does not wait for an arrival notice"
        )

    def view(self) -> SubmissionView:
        refused = self.change_refused_because()
        url = status_url(self.submission_id)
        return SubmissionView(
            submission_id=self.submission_id,
            lrn=self.lrn,
            version=self.latest_version,
            cancelled=self.cancelled,
            changes_allowed=refused is None,
            changes_refused_because=refused,
            decision=DecisionView.of(self.decision) if self.decision else None,
            versions=tuple(
                VersionView(
                    version=v.version,
                    kind=v.kind,
                    received_at=v.received_at,
                    payload_sha256=v.payload_sha256,
                    submitted_by=v.submitted_by,
                    routed_at=v.routed_at,
                    agencies=v.agencies,
                )
                for _, v in sorted(self.versions.items())
            ),
            arrived_at=self.arrival.arrived_at if self.arrival else None,
            status_url=url,
            events_url=f"{url}/events",
            arrival_url=f"{url}/arrival",
        )


class Subscription:
    """One listener's queue of decisions for one submission (an SSE stream). A listener that
    falls `maxsize` behind is closed: it reconnects with Last-Event-ID and gets the latest."""

    def __init__(self, submission_id: str, maxsize: int = 64) -> None:
        self.submission_id = submission_id
        self._queue: asyncio.Queue[Decision | None] = asyncio.Queue(maxsize)
        self.closed = False

    def push(self, decision: Decision | None) -> None:
        if self.closed:
            return
        try:
            self._queue.put_nowait(decision)
        except asyncio.QueueFull:
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        while not self._queue.empty():
            self._queue.get_nowait()
        self._queue.put_nowait(None)

    async def next(self) -> Decision | None:
        """The next decision, or None once closed."""
        return await self._queue.get()


class ReadModel:
    def __init__(
        self,
        *,
        clock: Callable[[], datetime],
        finished_retention_s: float,
        max_finished: int,
    ) -> None:
        self._clock = clock
        self._retention = timedelta(seconds=finished_retention_s)
        self._max_finished = max_finished
        self._entries: dict[str, SubmissionEntry] = {}
        self._finished: OrderedDict[str, datetime] = OrderedDict()
        self._subscriptions: dict[str, set[Subscription]] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def finished_count(self) -> int:
        return len(self._finished)

    def get(self, submission_id: str) -> SubmissionEntry | None:
        return self._entries.get(submission_id)

    # -- applying records ----------------------------------------------------------------

    def apply_submission(self, submission: Submission) -> None:
        """A version the single window accepted. The first record of a version wins, as in
        the router (a later different one is refused there as stale)."""
        with self._changing(submission.submission_id, submission.trader_id) as entry:
            if submission.declaration is not None and entry.lrn is None:
                entry.lrn = submission.declaration.lrn
            version = entry.versions.setdefault(
                submission.version, VersionEntry(submission.version)
            )
            if version.payload_sha256 is None:
                version.kind = submission.kind
                version.received_at = submission.received_at
                version.payload_sha256 = submission.payload_sha256
                version.submitted_by = submission.submitted_by

    def apply_plan(self, plan: RoutingPlan) -> None:
        with self._changing(plan.submission_id, plan.trader_id) as entry:
            version = entry.versions.setdefault(plan.version, VersionEntry(plan.version))
            version.routed_at = plan.planned_at
            version.agencies = tuple(route.agency for route in plan.agencies)
            if version.payload_sha256 is None:
                version.kind = plan.kind
                version.payload_sha256 = plan.payload_sha256

    def apply_arrival(self, notice: ArrivalNotice) -> None:
        """The first notice for a submission counts (the aggregator keeps the same one)."""
        with self._changing(notice.submission_id, notice.trader_id) as entry:
            if entry.arrival is None and entry.trader_id == notice.trader_id:
                entry.arrival = notice

    def apply_decision(self, decision: Decision) -> bool:
        """True when the decision changed what the trader sees (re-deliveries do not)."""
        with self._changing(decision.submission_id, decision.trader_id) as entry:
            current = entry.decision
            if current is not None and (
                current.decision_id == decision.decision_id or decision.version < current.version
            ):
                return False
            entry.decision = decision
        for subscription in list(self._subscriptions.get(decision.submission_id, ())):
            subscription.push(decision)
        return True

    @contextmanager
    def _changing(self, submission_id: str, trader_id: str) -> Iterator[SubmissionEntry]:
        entry = self._entries.get(submission_id)
        if entry is None:
            entry = self._entries[submission_id] = SubmissionEntry(submission_id, trader_id)
        yield entry
        finished_at = entry.finished_at
        if finished_at is not None:
            self._finished[submission_id] = finished_at
            self._finished.move_to_end(submission_id)
        else:
            self._finished.pop(submission_id, None)

    # -- bounding memory -----------------------------------------------------------------

    def evict(self, now: datetime | None = None) -> int:
        """Forget finished submissions past retention, then the oldest beyond the cap."""
        cutoff = (now or self._clock()) - self._retention
        doomed = [sid for sid, at in self._finished.items() if at < cutoff]
        overflow = len(self._finished) - len(doomed) - self._max_finished
        if overflow > 0:
            expired = set(doomed)
            kept = (sid for sid in self._finished if sid not in expired)
            doomed += [sid for _, sid in zip(range(overflow), kept, strict=False)]
        for sid in doomed:
            self._finished.pop(sid, None)
            self._entries.pop(sid, None)
            for subscription in self._subscriptions.pop(sid, set()):
                subscription.close()
        self.evicted += len(doomed)
        return len(doomed)

    # -- listeners -----------------------------------------------------------------------

    def subscribe(self, submission_id: str) -> Subscription:
        subscription = Subscription(submission_id)
        self._subscriptions.setdefault(submission_id, set()).add(subscription)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        listeners = self._subscriptions.get(subscription.submission_id)
        if listeners is not None:
            listeners.discard(subscription)
            if not listeners:
                del self._subscriptions[subscription.submission_id]
        subscription.close()

    def close_subscriptions(self) -> None:
        """On shutdown: end every stream so the HTTP server can drain."""
        for listeners in list(self._subscriptions.values()):
            for subscription in list(listeners):
                subscription.close()
        self._subscriptions.clear()

    @property
    def subscriber_count(self) -> int:
        return sum(len(s) for s in self._subscriptions.values())

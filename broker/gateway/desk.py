"""The write path: a new declaration, an amendment or a cancellation becomes one `Submission`
on `sw.submissions`, answered only once the broker acknowledged it (acks=all).

Versions are given out here, one write at a time per submission (a lock per id), from what
the read model knows; the read model records each acknowledged write at once, so the next
request sees it before the record comes back from Kafka. When the broker does not
acknowledge in time the answer is 503 and nothing is recorded: a retry is safe, because the
id comes from trader and LRN and the router ignores a version it has already routed with the
same body.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import datetime

import structlog
from pydantic import ValidationError

from broker.core.arrival import notice_of_arrival
from broker.core.codec import Codec
from broker.core.ids import submission_id_for
from broker.core.intake import cancel, declare
from broker.core.messages import ArrivalNotice, Submission, SubmissionKind
from broker.core.topics import Topics
from broker.errors import CodecError, TransportError
from broker.gateway.idempotency import KeyedLocks
from broker.gateway.problems import Problem, field_errors, invalid
from broker.gateway.read_model import ReadModel, SubmissionEntry
from broker.gateway.views import (
    ArrivalAccepted,
    ArrivalRequest,
    SubmissionAccepted,
    status_url,
)
from broker.runtime.transport import Outgoing, Producer

log = structlog.get_logger("swb.gateway")

CHANNEL = "http"
Headers = Sequence[tuple[str, bytes]]


def not_found(submission_id: str) -> Problem:
    """The same answer for an unknown id and another trader's: nothing leaks."""
    return Problem(
        404, "not-found", "No such submission", f"you have no submission {submission_id!r}"
    )


def accepted(submission: Submission) -> SubmissionAccepted:
    return SubmissionAccepted(
        submission_id=submission.submission_id,
        version=submission.version,
        kind=submission.kind,
        status_url=status_url(submission.submission_id),
    )


class SubmissionDesk:
    def __init__(
        self,
        producer: Producer,
        codec: Codec,
        topics: Topics,
        read_model: ReadModel,
        clock: Callable[[], datetime],
        *,
        write_timeout_s: float,
        retry_after_s: int,
    ) -> None:
        self._producer = producer
        self._codec = codec
        self._topics = topics
        self._read_model = read_model
        self._clock = clock
        self._write_timeout_s = write_timeout_s
        self._retry_after_s = retry_after_s
        self._locks = KeyedLocks()

    def entry_of(self, trader_id: str, submission_id: str) -> SubmissionEntry:
        entry = self._read_model.get(submission_id)
        if entry is None or entry.trader_id != trader_id:
            raise not_found(submission_id)
        return entry

    async def submit(
        self, trader_id: str, body: bytes, headers: Headers = ()
    ) -> SubmissionAccepted:
        """A new declaration. Its LRN names it: an LRN already used answers the first
        acceptance again when the body is byte-identical to version 1, else 409."""
        submission = self._declare(body, trader_id, version=1)
        sid = submission.submission_id
        async with self._locks.hold(sid):
            entry = self._read_model.get(sid)
            if entry is not None:
                first = entry.versions.get(1)
                if first is not None and first.payload_sha256 == submission.payload_sha256:
                    return SubmissionAccepted(
                        submission_id=sid,
                        version=1,
                        kind=SubmissionKind.NEW,
                        status_url=status_url(sid),
                    )
                raise Problem(
                    409,
                    "lrn-already-used",
                    "This LRN was already used",
                    f"LRN {submission.declaration.lrn if submission.declaration else ''!r} "
                    f"names submission {sid}; amend it with PUT {status_url(sid)} or use a "
                    "new LRN",
                    submission_id=sid,
                    status_url=status_url(sid),
                )
            await self._write(submission, headers)
        return accepted(submission)

    async def amend(
        self, trader_id: str, submission_id: str, body: bytes, headers: Headers = ()
    ) -> SubmissionAccepted:
        """The next version. A body identical to the latest version answers it again (PUT is
        idempotent); the LRN must stay the one that names the submission."""
        self.entry_of(trader_id, submission_id)
        async with self._locks.hold(submission_id):
            entry = self.entry_of(trader_id, submission_id)
            submission = self._declare(
                body, trader_id, version=entry.latest_version + 1, submission_id=submission_id
            )
            assert submission.declaration is not None
            if submission_id_for(trader_id, submission.declaration.lrn) != submission_id:
                raise invalid(
                    [
                        {
                            "field": "lrn",
                            "message": "an amendment keeps the LRN of the submission "
                            f"{entry.lrn or submission_id!r}",
                        }
                    ],
                    "The amendment is invalid",
                )
            latest = entry.latest
            if (
                latest is not None
                and latest.kind is not SubmissionKind.CANCELLATION
                and latest.payload_sha256 == submission.payload_sha256
            ):
                return SubmissionAccepted(
                    submission_id=submission_id,
                    version=latest.version,
                    kind=latest.kind or SubmissionKind.AMENDMENT,
                    status_url=status_url(submission_id),
                )
            self._check_changes_allowed(entry)
            await self._write(submission, headers)
        return accepted(submission)

    async def cancel(
        self, trader_id: str, submission_id: str, reason: str, headers: Headers = ()
    ) -> SubmissionAccepted:
        self.entry_of(trader_id, submission_id)
        async with self._locks.hold(submission_id):
            entry = self.entry_of(trader_id, submission_id)
            self._check_changes_allowed(entry)
            submission = cancel(
                submission_id,
                version=entry.latest_version + 1,
                trader_id=trader_id,
                channel=CHANNEL,
                now=self._clock(),
                reason=reason,
                submitted_by=trader_id,
            )
            await self._write(submission, headers)
        return accepted(submission)

    async def arrive(
        self, trader_id: str, submission_id: str, body: bytes
    ) -> tuple[ArrivalAccepted, bool]:
        """The goods of a submission arrived: an `ArrivalNotice` on `sw.arrivals`, after which
        the aggregator re-issues the decision with the release in effect. The first notice
        counts: a repeated one answers it again and writes nothing (second value False)."""
        self.entry_of(trader_id, submission_id)
        try:
            wanted = ArrivalRequest.model_validate_json(body or b"{}")
        except ValidationError as exc:
            raise invalid(field_errors(exc), "The arrival notice is invalid") from exc
        async with self._locks.hold(submission_id):
            entry = self.entry_of(trader_id, submission_id)
            if entry.arrival is not None:
                return _arrival_accepted(entry.arrival), False
            refused = entry.arrival_refused_because()
            if refused is not None:
                raise Problem(
                    409,
                    "arrival-not-awaited",
                    "No arrival is awaited for this submission",
                    refused,
                    rule="an arrival notice completes a declaration lodged before its goods "
                    "arrived, until its decision takes effect on arrival",
                    submission_id=submission_id,
                    status_url=status_url(submission_id),
                )
            try:
                notice = notice_of_arrival(
                    submission_id,
                    trader_id=trader_id,
                    channel=CHANNEL,
                    received_at=self._clock(),
                    arrived_at=wanted.arrived_at,
                    submitted_by=trader_id,
                    means_id=wanted.means_id,
                )
            except ValueError as exc:
                raise invalid([{"field": "arrived_at", "message": str(exc)}]) from exc
            await self._produce(
                Outgoing(
                    self._topics.arrivals,
                    self._codec.encode(notice),
                    key=submission_id.encode(),
                ),
                submission_id,
            )
            self._read_model.apply_arrival(notice)
        log.info("arrival accepted", submission_id=submission_id)
        return _arrival_accepted(notice), True

    # -- internals -------------------------------------------------------------------------

    def _declare(
        self, body: bytes, trader_id: str, *, version: int, submission_id: str | None = None
    ) -> Submission:
        try:
            return declare(
                body,
                trader_id=trader_id,
                channel=CHANNEL,
                now=self._clock(),
                version=version,
                submission_id=submission_id,
                submitted_by=trader_id,  # the API key's trader: non-repudiation
            )
        except ValidationError as exc:
            raise invalid(field_errors(exc), "The declaration is invalid") from exc

    @staticmethod
    def _check_changes_allowed(entry: SubmissionEntry) -> None:
        refused = entry.change_refused_because()
        if refused is not None:
            raise Problem(
                409,
                "change-not-allowed",
                "The submission can no longer change",
                refused,
                rule="a submission may be amended or cancelled until it is cancelled or its "
                "latest version has a final decision (RELEASED, RELEASED_WITH_CONDITIONS or "
                "REJECTED)",
                submission_id=entry.submission_id,
                status_url=status_url(entry.submission_id),
            )

    async def _write(self, submission: Submission, headers: Headers) -> None:
        try:
            value = self._codec.encode(submission)
        except CodecError as exc:
            raise invalid([{"field": "(declaration)", "message": str(exc)}]) from exc
        record = Outgoing(
            self._topics.submissions,
            value,
            key=submission.submission_id.encode(),
            headers=tuple(headers),
        )
        await self._produce(record, submission.submission_id, submission.version)
        self._read_model.apply_submission(submission)
        log.info(
            "submission accepted",
            submission_id=submission.submission_id,
            version=submission.version,
            kind=submission.kind.value,
        )

    async def _produce(self, record: Outgoing, submission_id: str, version: int = 0) -> None:
        """Write once acknowledged (acks=all), or answer 503 with nothing recorded."""
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await self._producer.send_batch([record])
        except (TransportError, TimeoutError) as exc:
            log.warning(
                "write not acknowledged",
                submission_id=submission_id,
                version=version,
                topic=record.topic,
                error=str(exc) or type(exc).__name__,
            )
            raise Problem(
                503,
                "broker-unavailable",
                "The broker did not acknowledge the write",
                "nothing was accepted; send the same request again after Retry-After "
                "seconds (with the same Idempotency-Key)",
                headers={"Retry-After": str(self._retry_after_s)},
            ) from exc


def _arrival_accepted(notice: ArrivalNotice) -> ArrivalAccepted:
    return ArrivalAccepted(
        submission_id=notice.submission_id,
        arrived_at=notice.arrived_at,
        received_at=notice.received_at,
        status_url=status_url(notice.submission_id),
    )

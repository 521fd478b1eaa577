"""Turning what a trader sent into a `Submission`: the single entry point's first step."""

from __future__ import annotations

from datetime import datetime

from broker.core.declaration import Declaration
from broker.core.ids import payload_sha256, submission_id_for
from broker.core.messages import Submission, SubmissionKind


def declare(
    payload: bytes,
    *,
    trader_id: str,
    channel: str,
    now: datetime,
    version: int = 1,
    submission_id: str | None = None,
    submitted_by: str | None = None,
) -> Submission:
    """A new declaration (version 1) or an amendment (version > 1) from the JSON the trader sent.

    `submitted_by` is the identity the channel authenticated (non-repudiation: recorded with
    the payload's SHA-256 and the time received). Raises pydantic.ValidationError naming the
    field when the declaration is invalid."""
    declaration = Declaration.model_validate_json(payload)
    return Submission(
        submission_id=submission_id or submission_id_for(trader_id, declaration.lrn),
        version=version,
        kind=SubmissionKind.NEW if version == 1 else SubmissionKind.AMENDMENT,
        trader_id=trader_id,
        channel=channel,
        received_at=now,
        payload_sha256=payload_sha256(payload),
        declaration=declaration,
        submitted_by=submitted_by,
    )


def cancel(
    submission_id: str,
    *,
    version: int,
    trader_id: str,
    channel: str,
    now: datetime,
    reason: str,
    submitted_by: str | None = None,
) -> Submission:
    return Submission(
        submission_id=submission_id,
        version=version,
        kind=SubmissionKind.CANCELLATION,
        trader_id=trader_id,
        channel=channel,
        received_at=now,
        payload_sha256=payload_sha256(reason.encode()),
        reason=reason,
        submitted_by=submitted_by,
    )

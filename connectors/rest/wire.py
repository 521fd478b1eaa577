"""The HTTP contract between the REST bridge and an agency's system, pure (no sockets).

The bridge POSTs each request as JSON (the `AgencyRequest` fields, times in ISO 8601, money
as strings) with `Idempotency-Key: <request_id>`. The agency's endpoint answers:

- 200/201 with one answer object, or a list of them: published at once;
- 202 (or 204, or 409 "already have it"): accepted, the answer comes later through the
  callback endpoint;
- 408, 425, 429, 5xx, a timeout or no connection: retried with backoff, for ever (Retry-After
  is honoured); 401, 403, 404, 405 and redirects are retried too, logged as a configuration
  problem the operator must fix;
- any other 4xx: the agency refuses the request for good; it goes to the DLQ.

An answer needs only `status`; `reasons`, `conditions`, `documents_required`, `answered_at`
(default: when the bridge received it) and `sequence` are optional. `submission_id`,
`version` and `agency`, when given, must match the request (a callback must give the first
two: it answers no request in hand).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import parsedate_to_datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from broker.core.declaration import validation_messages
from broker.core.messages import AgencyRequest, AgencyResponse, AgencyStatus, DocumentRequest
from connectors.errors import AgencyUnavailable, RequestRefused

__all__ = [
    "AgencyAnswer",
    "CallbackAnswer",
    "Reply",
    "callback_responses",
    "classify_reply",
    "parse_callback",
    "request_body",
    "responses_for",
]

_RETRIABLE_STATUS = frozenset({408, 425, 429})
_MISCONFIGURED_STATUS = frozenset({401, 403, 404, 405})
_ACCEPTED_STATUS = frozenset({202, 204, 409})
_MAX_ANSWERS = 100


class AgencyAnswer(BaseModel):
    """One answer as the agency's system gives it (synchronously)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    status: AgencyStatus
    reasons: tuple[str, ...] = ()
    conditions: tuple[str, ...] = ()
    documents_required: tuple[DocumentRequest, ...] = ()
    answered_at: AwareDatetime | None = None
    sequence: int | None = Field(default=None, ge=0, le=2**31 - 1)
    submission_id: str | None = None
    version: int | None = Field(default=None, ge=1)
    agency: str | None = None


class CallbackAnswer(AgencyAnswer):
    """An answer given later, through the bridge's callback endpoint: it names its submission."""

    submission_id: str = Field(min_length=1, max_length=80)
    version: int = Field(ge=1)


_ANSWERS: TypeAdapter[AgencyAnswer | list[AgencyAnswer]] = TypeAdapter(
    AgencyAnswer | list[AgencyAnswer]
)
_CALLBACKS: TypeAdapter[CallbackAnswer | list[CallbackAnswer]] = TypeAdapter(
    CallbackAnswer | list[CallbackAnswer]
)


@dataclass(frozen=True, slots=True)
class Reply:
    """What one delivery achieved: answers now, or accepted with the answers to come later."""

    status_code: int
    answers: tuple[AgencyAnswer, ...] = ()

    @property
    def accepted_only(self) -> bool:
        return not self.answers


def request_body(request: AgencyRequest) -> bytes:
    return request.model_dump_json().encode()


def classify_reply(status_code: int, body: bytes, retry_after: str | None) -> Reply:
    """Turn one HTTP answer into a Reply, or raise AgencyUnavailable (retry) / RequestRefused."""
    if status_code in (200, 201):
        return Reply(status_code, _parse_answers(body))
    if status_code in _ACCEPTED_STATUS:
        return Reply(status_code)
    snippet = body[:300].decode(errors="replace")
    if status_code >= 500 or status_code in _RETRIABLE_STATUS:
        raise AgencyUnavailable(
            f"agency endpoint answered HTTP {status_code}: {snippet}",
            retry_after_s=_retry_after_s(retry_after),
        )
    if status_code in _MISCONFIGURED_STATUS or 300 <= status_code < 400 or status_code < 200:
        raise AgencyUnavailable(
            f"agency endpoint answered HTTP {status_code}: check the bridge's URL and "
            f"credentials (SWB_BRIDGE__URL, SWB_BRIDGE__AUTH_VALUE): {snippet}"
        )
    if 400 <= status_code < 500:
        raise RequestRefused(
            "agency-refused", f"agency refused the request: HTTP {status_code}: {snippet}"
        )
    raise AgencyUnavailable(f"agency endpoint answered HTTP {status_code}: {snippet}")


def _parse_answers(body: bytes) -> tuple[AgencyAnswer, ...]:
    try:
        parsed = _ANSWERS.validate_json(body)
    except ValidationError as exc:
        problems = "; ".join(validation_messages(exc))
        raise RequestRefused(
            "agency-answer-invalid", f"agency's answer is invalid: {problems}"
        ) from exc
    answers = tuple(parsed) if isinstance(parsed, list) else (parsed,)
    if not answers or len(answers) > _MAX_ANSWERS:
        raise RequestRefused(
            "agency-answer-invalid",
            f"agency answered {len(answers)} answers: 1 to {_MAX_ANSWERS} expected",
        )
    return answers


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After as delta-seconds or an HTTP date (RFC 9110 §10.2.3); None if unreadable."""
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, (when - datetime.now(when.tzinfo)).total_seconds())


def responses_for(
    request: AgencyRequest, answers: tuple[AgencyAnswer, ...], now: datetime
) -> list[AgencyResponse]:
    """The agency's synchronous answers to `request` as wire responses. Raises RequestRefused
    if an answer names another submission, version or agency."""
    responses = []
    for index, answer in enumerate(answers, start=1):
        claimed = (answer.submission_id, answer.version, answer.agency)
        expected = (request.submission_id, request.version, request.agency)
        if any(c is not None and c != e for c, e in zip(claimed, expected, strict=True)):
            raise RequestRefused(
                "agency-answer-invalid",
                f"answer for {claimed} to a request for {expected}",
            )
        try:
            responses.append(
                _response(
                    answer, request.submission_id, request.version, request.agency, now, index
                )
            )
        except ValidationError as exc:
            problems = "; ".join(validation_messages(exc))
            raise RequestRefused("agency-answer-invalid", problems) from exc
    return responses


def parse_callback(body: bytes) -> list[CallbackAnswer]:
    """A callback body: one answer or a list. Raises ValueError with readable messages."""
    try:
        parsed = _CALLBACKS.validate_json(body)
    except ValidationError as exc:
        raise ValueError("; ".join(validation_messages(exc))) from exc
    answers = parsed if isinstance(parsed, list) else [parsed]
    if not answers or len(answers) > _MAX_ANSWERS:
        raise ValueError(f"{len(answers)} answers: 1 to {_MAX_ANSWERS} expected")
    return answers


def callback_responses(
    agency: str, answers: list[CallbackAnswer], now: datetime
) -> list[AgencyResponse]:
    """Answers given through the callback as wire responses. The bridge speaks for `agency`
    only: raises ValueError for an answer naming another agency."""
    for answer in answers:
        if answer.agency is not None and answer.agency != agency:
            raise ValueError(f"agency: this bridge answers for {agency!r}, not {answer.agency!r}")
    try:
        return [
            _response(answer, answer.submission_id, answer.version, agency, now, 1)
            for answer in answers
        ]
    except ValidationError as exc:
        raise ValueError("; ".join(validation_messages(exc))) from exc


def _response(
    answer: AgencyAnswer,
    submission_id: str,
    version: int,
    agency: str,
    now: datetime,
    sequence: int,
) -> AgencyResponse:
    return AgencyResponse(
        submission_id=submission_id,
        version=version,
        agency=agency,
        status=answer.status,
        answered_at=answer.answered_at or now,
        sequence=answer.sequence if answer.sequence is not None else sequence,
        reasons=answer.reasons,
        conditions=answer.conditions,
        documents_required=answer.documents_required,
    )

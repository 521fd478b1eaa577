"""The trader's paths (DESIGN §7, contract): submissions, their events, webhooks."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ValidationError
from starlette.responses import Response

from broker.gateway.auth import current_trader
from broker.gateway.desk import Headers
from broker.gateway.events import decision_events
from broker.gateway.idempotency import (
    FINGERPRINT_HEADER,
    KEY_HEADER,
    MAX_KEY_LENGTH,
    StoredAnswer,
    request_fingerprint,
)
from broker.gateway.openapi import ARRIVAL_BODY, DECLARATION_BODY, WEBHOOK_BODY, problems
from broker.gateway.problems import Problem, field_errors, invalid
from broker.gateway.views import (
    ArrivalAccepted,
    SubmissionAccepted,
    SubmissionView,
    WebhookCreated,
    WebhookRequest,
    WebhookView,
    json_bytes,
)

if TYPE_CHECKING:
    from broker.gateway.app import GatewayState

router = APIRouter()

Trader = Annotated[str, Depends(current_trader)]
SubmissionId = Annotated[
    str, Path(min_length=1, max_length=80, examples=["sub-3f1c9a52b0e74d8a61c2f0aa"])
]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        description="Any unique string (e.g. a UUID): a retry with the same key and body gets "
        "the first answer and creates nothing; the same key with another body is a 409.",
    ),
]
_KEY_PATTERN = re.compile(rf"^[\x21-\x7e]{{1,{MAX_KEY_LENGTH}}}$")
_ACCEPTED_HEADERS = {
    "Location": {"description": "the status URL", "schema": {"type": "string"}},
}


def _state(request: Request) -> GatewayState:
    state: GatewayState = request.app.state.gateway
    return state


def _json(model: BaseModel, status: int, **headers: str) -> Response:
    return Response(json_bytes(model), status, headers=headers, media_type="application/json")


async def _idempotent(
    request: Request,
    trader: str,
    key: str | None,
    action: Callable[[Headers], Awaitable[SubmissionAccepted]],
) -> Response:
    """Run a write once per Idempotency-Key; answer 202 with Location."""
    state = _state(request)
    if key is None:
        accepted = await action(())
        return _json(accepted, 202, Location=accepted.status_url)
    if not _KEY_PATTERN.match(key):
        raise invalid(
            [
                {
                    "field": "Idempotency-Key",
                    "message": f"1 to {MAX_KEY_LENGTH} printable ASCII characters without spaces",
                }
            ]
        )
    body = await request.body()
    fingerprint = request_fingerprint(request.method, request.url.path, request.url.query, body)
    store = state.idempotency
    async with store.locks.hold(f"{trader}\x1f{key}"):
        stored = store.get(trader, key)
        if stored is not None:
            if stored.fingerprint != fingerprint:
                raise Problem(
                    409,
                    "idempotency-key-reused",
                    "Idempotency-Key already used for another request",
                    "this key was used with another method, path or body; use a new key for "
                    "a new request",
                )
            state.metrics.idempotent_replays.inc()
            accepted = SubmissionAccepted.model_validate_json(stored.body)
            return Response(
                stored.body,
                stored.status,
                headers={"Location": accepted.status_url, "Idempotent-Replayed": "true"},
                media_type="application/json",
            )
        accepted = await action(
            ((KEY_HEADER, key.encode()), (FINGERPRINT_HEADER, fingerprint.encode()))
        )
        store.put(trader, key, StoredAnswer(fingerprint, 202, json_bytes(accepted), state.clock()))
    return _json(accepted, 202, Location=accepted.status_url)


@router.post(
    "/v1/submissions",
    status_code=202,
    response_model=SubmissionAccepted,
    summary="Lodge a declaration",
    description="Answers 202 only once the broker acknowledged the write (acks=all). The "
    "submission id is derived from your trader id and the declaration's LRN: an LRN you used "
    "before answers the first acceptance again when the body is byte-identical, else 409. "
    "Unknown fields are refused (422 naming them).",
    responses={202: {"headers": _ACCEPTED_HEADERS}, **problems(401, 409, 413, 422, 503)},
    openapi_extra=DECLARATION_BODY,
    tags=["submissions"],
)
async def submit(request: Request, trader: Trader, key: IdempotencyKey = None) -> Response:
    state = _state(request)
    body = await request.body()
    return await _idempotent(
        request, trader, key, lambda headers: state.desk.submit(trader, body, headers)
    )


@router.get(
    "/v1/submissions/{submission_id}",
    response_model=SubmissionView,
    summary="The current decision and the version history",
    responses=problems(401, 404),
    tags=["submissions"],
)
async def get_submission(request: Request, trader: Trader, submission_id: SubmissionId) -> Any:
    return _json(_state(request).desk.entry_of(trader, submission_id).view(), 200)


@router.put(
    "/v1/submissions/{submission_id}",
    status_code=202,
    response_model=SubmissionAccepted,
    summary="Amend: the body becomes the next version",
    description="Allowed until the submission is cancelled or its latest version has a final "
    "decision; 409 with the rule after that. The LRN must stay the same. A body identical to "
    "the latest version answers that version again.",
    responses={202: {"headers": _ACCEPTED_HEADERS}, **problems(401, 404, 409, 413, 422, 503)},
    openapi_extra=DECLARATION_BODY,
    tags=["submissions"],
)
async def amend(
    request: Request, trader: Trader, submission_id: SubmissionId, key: IdempotencyKey = None
) -> Response:
    state = _state(request)
    body = await request.body()
    return await _idempotent(
        request,
        trader,
        key,
        lambda headers: state.desk.amend(trader, submission_id, body, headers),
    )


@router.delete(
    "/v1/submissions/{submission_id}",
    status_code=202,
    response_model=SubmissionAccepted,
    summary="Cancel the submission",
    description="Allowed until the submission is cancelled or its latest version has a final "
    "decision; 409 with the rule after that.",
    responses={202: {"headers": _ACCEPTED_HEADERS}, **problems(401, 404, 409, 422, 503)},
    tags=["submissions"],
)
async def cancel(
    request: Request,
    trader: Trader,
    submission_id: SubmissionId,
    reason: Annotated[str, Query(min_length=1, max_length=512)] = "cancelled by the trader",
    key: IdempotencyKey = None,
) -> Response:
    state = _state(request)
    return await _idempotent(
        request,
        trader,
        key,
        lambda headers: state.desk.cancel(trader, submission_id, reason, headers),
    )


@router.post(
    "/v1/submissions/{submission_id}/arrival",
    status_code=202,
    response_model=ArrivalAccepted,
    summary="The goods arrived: a release decided before arrival takes effect",
    description="For a declaration lodged before its goods arrived (its decision says "
    "`release_on_arrival`). Answers 202 once the broker acknowledged the notice; the decision "
    "is then re-issued with `arrived_at`. The first notice counts: sending it again answers "
    "the recorded arrival (`Idempotent-Replayed: true`) and writes nothing. 409 when no "
    "arrival is awaited (cancelled, rejected, or lodged after arrival).",
    responses={202: {"headers": _ACCEPTED_HEADERS}, **problems(401, 404, 409, 413, 422, 503)},
    openapi_extra=ARRIVAL_BODY,
    tags=["submissions"],
)
async def arrival(request: Request, trader: Trader, submission_id: SubmissionId) -> Response:
    state = _state(request)
    accepted, written = await state.desk.arrive(trader, submission_id, await request.body())
    headers = {"Location": accepted.status_url}
    if not written:
        headers["Idempotent-Replayed"] = "true"
    return _json(accepted, 202, **headers)


@router.get(
    "/v1/submissions/{submission_id}/events",
    summary="Server-sent events: one `decision` event per decision change",
    description="The current decision first, then each change; the event id is the decision "
    "id (send `Last-Event-ID` when reconnecting). The stream ends after a final decision.",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
            "description": "an event stream",
        },
        **problems(401, 404),
    },
    tags=["submissions"],
)
async def events(
    request: Request,
    trader: Trader,
    submission_id: SubmissionId,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID")] = None,
) -> StreamingResponse:
    state = _state(request)
    state.desk.entry_of(trader, submission_id)
    stream = decision_events(
        state.read_model,
        submission_id,
        last_event_id=last_event_id,
        keepalive_s=state.settings.gateway.sse_keepalive_s,
        metrics=state.metrics,
    )
    return StreamingResponse(
        stream,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


@router.post(
    "/v1/webhooks",
    status_code=201,
    response_model=WebhookCreated,
    summary="Register a callback URL for the decisions of your submissions",
    description="Each decision change is POSTed with `Swb-Event-Id` (de-duplicate on it) and "
    "`Swb-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, t + '.' + body)>`. The secret is "
    "shown only in this answer.",
    responses=problems(401, 409, 413, 422, 503),
    openapi_extra=WEBHOOK_BODY,
    tags=["webhooks"],
)
async def register_webhook(request: Request, trader: Trader) -> Response:
    # Parsed here, not by FastAPI: any bad body (even bytes that are not UTF-8) is a 422
    # naming the field, as for declarations.
    try:
        wanted = WebhookRequest.model_validate_json(await request.body())
    except ValidationError as exc:
        raise invalid(field_errors(exc), "The webhook is invalid") from exc
    hook = await _state(request).webhooks.register(trader, wanted.url)
    created = WebhookCreated(
        webhook_id=hook.webhook_id, url=hook.url, created_at=hook.created_at, secret=hook.secret
    )
    return _json(created, 201, Location=f"/v1/webhooks/{hook.webhook_id}")


@router.get(
    "/v1/webhooks",
    response_model=list[WebhookView],
    summary="Your webhooks",
    responses=problems(401),
    tags=["webhooks"],
)
async def list_webhooks(request: Request, trader: Trader) -> list[WebhookView]:
    return [
        WebhookView(webhook_id=h.webhook_id, url=h.url, created_at=h.created_at)
        for h in _state(request).webhooks.for_trader(trader)
    ]


@router.delete(
    "/v1/webhooks/{webhook_id}",
    status_code=204,
    summary="Remove a webhook",
    responses=problems(401, 404, 503),
    tags=["webhooks"],
)
async def remove_webhook(
    request: Request, trader: Trader, webhook_id: Annotated[str, Path(max_length=80)]
) -> Response:
    if not await _state(request).webhooks.remove(trader, webhook_id):
        raise Problem(404, "not-found", "No such webhook", f"you have no webhook {webhook_id!r}")
    return Response(status_code=204)

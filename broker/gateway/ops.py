"""Operator paths: liveness, readiness, Prometheus metrics. No API key: keep them on the
operator's network (or behind the ingress)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.responses import Response

from broker.gateway.views import Health, json_bytes

if TYPE_CHECKING:
    from broker.gateway.app import GatewayState

router = APIRouter(tags=["operations"])


@router.get("/healthz", response_model=Health, summary="The process is alive")
async def healthz() -> Health:
    return Health(status="ok")


@router.get(
    "/readyz",
    response_model=Health,
    summary="Ready to serve: broker reachable, read model rebuilt and following, webhook "
    "dispatcher in its group",
    responses={503: {"model": Health, "description": "not ready; `checks` says what is not"}},
)
async def readyz(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    checks = {
        "broker": await state.transport.ping(),
        "read_model": state.follower.ready.is_set(),
        "webhooks": state.dispatcher.ready.is_set(),
    }
    ready = all(checks.values())
    health = Health(status="ready" if ready else "not ready", checks=checks)
    return Response(json_bytes(health), 200 if ready else 503, media_type="application/json")


@router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=Response,
    responses={
        200: {
            "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}},
            "description": "text exposition format",
        }
    },
)
async def metrics(request: Request) -> Response:
    state: GatewayState = request.app.state.gateway
    state.metrics.read_model_submissions.set(len(state.read_model))
    return Response(generate_latest(state.registry), media_type=CONTENT_TYPE_LATEST)

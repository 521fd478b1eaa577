"""The FastAPI application: `create_gateway(app)` wires the gateway's parts from the
composition root's `App` (transport, codec, topics, metrics registry, clock, settings)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from broker.gateway import ops, routes
from broker.gateway.auth import ApiKeys
from broker.gateway.delivery import WebhookDispatcher
from broker.gateway.desk import SubmissionDesk
from broker.gateway.follower import ReadModelFollower
from broker.gateway.idempotency import IdempotencyStore
from broker.gateway.limits import BodyLimitMiddleware
from broker.gateway.metrics import GatewayMetrics, HttpMetricsMiddleware
from broker.gateway.openapi import install_openapi
from broker.gateway.problems import install_problem_handlers
from broker.gateway.read_model import ReadModel
from broker.gateway.webhooks import WebhookRegistry, webhooks_topic
from broker.runtime.transport import Transport
from broker.settings import Settings

if TYPE_CHECKING:
    from broker.bootstrap import App, Clock

_WRITE_MARGIN_S = 2.0

DESCRIPTION = """\
Submit a declaration once; follow one coordinated decision from every border agency.

Authenticate with the API key your operator issued: `X-API-Key: <key>` or
`Authorization: Bearer <key>`. Errors are RFC 9457 `application/problem+json`.
"""


@dataclass
class GatewayState:
    """The parts the HTTP handlers and the background loops share."""

    settings: Settings
    transport: Transport
    registry: CollectorRegistry
    clock: Clock
    api_keys: ApiKeys
    metrics: GatewayMetrics
    read_model: ReadModel
    idempotency: IdempotencyStore
    webhooks: WebhookRegistry
    desk: SubmissionDesk
    follower: ReadModelFollower
    dispatcher: WebhookDispatcher


def build_state(app: App) -> GatewayState:
    settings, gateway = app.settings, app.settings.gateway
    # A write is answered 503 only after the producer itself gave up (request_timeout_ms),
    # so a write we call failed is not still queued in the client to land later.
    write_timeout_s = gateway.write_timeout_s or (
        settings.kafka.request_timeout_ms / 1000 + _WRITE_MARGIN_S
    )
    clock = app.clock
    metrics = GatewayMetrics.on(app.metrics.registry)
    read_model = ReadModel(
        clock=clock,
        finished_retention_s=gateway.finished_retention_s,
        max_finished=gateway.max_finished,
    )
    idempotency = IdempotencyStore(
        clock=clock, ttl_s=gateway.idempotency_ttl_s, max_keys=gateway.idempotency_max_keys
    )
    webhooks = WebhookRegistry(
        app.transport.producer(),
        webhooks_topic(app.topics),
        clock,
        write_timeout_s=write_timeout_s,
        retry_after_s=gateway.retry_after_s,
        max_per_trader=gateway.max_webhooks_per_trader,
    )
    desk = SubmissionDesk(
        app.transport.producer(),
        app.codec,
        app.topics,
        read_model,
        clock,
        write_timeout_s=write_timeout_s,
        retry_after_s=gateway.retry_after_s,
    )
    follower = ReadModelFollower(
        app.transport, app.codec, app.topics, read_model, idempotency, webhooks, metrics
    )
    dispatcher = WebhookDispatcher(app.transport, app.codec, app.topics, webhooks, metrics, gateway)
    return GatewayState(
        settings=settings,
        transport=app.transport,
        registry=app.metrics.registry,
        clock=clock,
        api_keys=ApiKeys(settings.api_keys),
        metrics=metrics,
        read_model=read_model,
        idempotency=idempotency,
        webhooks=webhooks,
        desk=desk,
        follower=follower,
        dispatcher=dispatcher,
    )


def create_gateway(app: App, state: GatewayState | None = None) -> FastAPI:
    """The ASGI app. The caller runs `state.follower` and `state.dispatcher` (GatewayService
    does); until the follower is ready, /readyz says so."""
    state = state or build_state(app)
    api = FastAPI(
        title="Single Window trader API",
        version="1",
        description=DESCRIPTION,
        openapi_tags=[
            {"name": "submissions", "description": "Lodge, amend, cancel, follow"},
            {"name": "webhooks", "description": "Decision changes pushed to you"},
            {"name": "operations", "description": "Health and metrics for operators"},
        ],
        docs_url="/docs",
        redoc_url=None,
    )
    api.state.gateway = state
    api.include_router(routes.router)
    api.include_router(ops.router)
    install_problem_handlers(api)
    install_openapi(api)
    api.add_middleware(BodyLimitMiddleware, max_bytes=state.settings.gateway.max_body_bytes)
    api.add_middleware(HttpMetricsMiddleware, metrics=state.metrics)
    return api

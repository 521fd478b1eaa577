"""The gateway's Prometheus metrics, on the App's injected registry, and the ASGI middleware
that counts requests. Routes are labelled by their template (`/v1/submissions/{submission_id}`),
never by the raw path, so a scan of random ids cannot blow up the series count."""

from __future__ import annotations

import time
import weakref

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, GatewayMetrics] = (
    weakref.WeakKeyDictionary()
)


class GatewayMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.http_requests = Counter(
            "swb_http_requests",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=r,
        )
        self.http_latency = Histogram(
            "swb_http_request_duration_seconds",
            "Time to the start of the response, by route template and method",
            ["route", "method"],
            buckets=_HTTP_BUCKETS,
            registry=r,
        )
        self.webhook_deliveries = Counter(
            "swb_webhook_deliveries",
            "Webhook delivery attempts, by result (delivered, retried, failed, dropped)",
            ["result"],
            registry=r,
        )
        self.webhook_queued = Gauge(
            "swb_webhook_queued", "Webhook deliveries waiting, over all receivers", registry=r
        )
        self.sse_streams = Gauge("swb_sse_streams", "Open server-sent event streams", registry=r)
        self.read_model_submissions = Gauge(
            "swb_gateway_read_model_submissions", "Submissions held by the read model", registry=r
        )
        self.idempotent_replays = Counter(
            "swb_http_idempotent_replays",
            "Requests answered again from an earlier answer (Idempotency-Key)",
            registry=r,
        )

    @classmethod
    def on(cls, registry: CollectorRegistry) -> GatewayMetrics:
        """One set per registry: several gateways in one process (tests) share it."""
        metrics = _by_registry.get(registry)
        if metrics is None:
            metrics = _by_registry[registry] = cls(registry)
        return metrics


class HttpMetricsMiddleware:
    """Counts every answer and times it to the response start (an SSE stream is timed to
    its first byte, not its end)."""

    def __init__(self, app: ASGIApp, metrics: GatewayMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        method = scope.get("method", "GET")

        def route() -> str:
            matched = scope.get("route")
            return str(getattr(matched, "path", None) or "(unmatched)")

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                self.metrics.http_latency.labels(route(), method).observe(
                    time.perf_counter() - started
                )
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.metrics.http_requests.labels(route(), method, str(status)).inc()

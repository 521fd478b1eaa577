"""The agency's HTTP endpoint as the bridge sees it: POST a request until the agency has it.

`deliver` never gives up on a request the agency has not refused: it retries with backoff
(honouring Retry-After), behind a circuit breaker, until the agency answers or accepts it, or
until shutdown cancels it (then the request is not committed and comes again). Meanwhile the
decision shows the agency PENDING, then OVERDUE past its SLA.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable

import httpx
import structlog

from broker.core.messages import AgencyRequest
from broker.settings import BridgeSettings
from connectors.errors import AgencyUnavailable, RequestRefused
from connectors.rest.breaker import BreakerState, CircuitBreaker
from connectors.rest.config import backoff_of, breaker_of, request_headers
from connectors.rest.wire import Reply, classify_reply, request_body

__all__ = ["AgencyEndpoint"]

log = structlog.get_logger("swb.bridge")


class AgencyEndpoint:
    """POSTs requests to `settings.url`. `transport` is httpx's (a `MockTransport` in tests).
    Use as `async with`; the HTTP client lives between `start()` and `stop()`."""

    def __init__(
        self,
        settings: BridgeSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        if not settings.url:
            raise ValueError("the REST bridge needs the agency's URL (SWB_BRIDGE__URL or --url)")
        self.url = settings.url
        self._settings = settings
        self._transport = transport
        self._monotonic = monotonic
        self._rng = rng or random.Random()
        self._backoff = backoff_of(settings)
        self.breaker: CircuitBreaker = breaker_of(settings)
        self._breaker_changed = asyncio.Condition()
        self._client: httpx.AsyncClient | None = None
        self._in_flight = asyncio.Semaphore(settings.max_concurrency)
        self.attempts = 0  # HTTP calls made, for tests and logs

    async def start(self) -> None:
        if self._client is None:
            self._client = httpx.AsyncClient(
                transport=self._transport,
                timeout=httpx.Timeout(self._settings.timeout_s),
                follow_redirects=False,
            )

    async def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def __aenter__(self) -> AgencyEndpoint:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def deliver(self, request: AgencyRequest, callback_url: str | None = None) -> Reply:
        """The agency's reply to `request`. Raises RequestRefused if the agency refuses it for
        good; retries everything else until it succeeds or the task is cancelled."""
        attempt = 0
        while True:
            await self._admitted()
            try:
                reply = await self._attempt(request, callback_url)
            except AgencyUnavailable as exc:
                await self._verdict(ok=False)
                delay = max(self._backoff.delay(attempt, self._rng), exc.retry_after_s or 0.0)
                delay = min(delay, max(self._settings.retry_max_s, exc.retry_after_s or 0.0))
                attempt += 1
                log.warning(
                    "agency endpoint unavailable; retrying",
                    error=str(exc),
                    attempt=attempt,
                    retry_in_s=round(delay, 3),
                    breaker=self.breaker.state.value,
                )
                await asyncio.sleep(delay)
                continue
            except RequestRefused:
                await self._verdict(ok=True)  # the endpoint works; it said no to this one
                raise
            except BaseException:
                self.breaker.abandoned(self._monotonic())
                raise
            await self._verdict(ok=True)
            return reply

    async def _attempt(self, request: AgencyRequest, callback_url: str | None) -> Reply:
        if self._client is None:
            raise RuntimeError("AgencyEndpoint is not started: use `async with` or start()")
        headers = request_headers(self._settings, request.request_id, callback_url)
        self.attempts += 1
        try:
            async with self._in_flight, asyncio.timeout(self._settings.timeout_s):
                response = await self._client.post(
                    self.url, content=request_body(request), headers=headers
                )
        except (httpx.TransportError, TimeoutError) as exc:
            raise AgencyUnavailable(f"agency endpoint {self.url} unreachable: {exc!r}") from exc
        return classify_reply(
            response.status_code, response.content, response.headers.get("retry-after")
        )

    async def _admitted(self) -> None:
        """Wait until the breaker lets a call through (at once while it is closed)."""
        while True:
            wait = self.breaker.admit(self._monotonic())
            if wait <= 0:
                return
            async with self._breaker_changed:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(wait):
                        await self._breaker_changed.wait()

    async def _verdict(self, *, ok: bool) -> None:
        before = self.breaker.state
        if ok:
            self.breaker.succeeded()
        else:
            self.breaker.failed(self._monotonic())
        if self.breaker.state is not before:
            level = log.info if self.breaker.state is BreakerState.CLOSED else log.warning
            level("circuit breaker", state=self.breaker.state.value, url=self.url)
        async with self._breaker_changed:
            self._breaker_changed.notify_all()

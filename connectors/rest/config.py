"""What a REST bridge is configured with: `BridgeSettings` (SWB_BRIDGE__*, `swb bridge` flags),
and the retry policy, breaker and headers derived from it."""

from __future__ import annotations

from broker.settings import BridgeSettings
from connectors.rest.breaker import CircuitBreaker
from connectors.retry import Backoff

__all__ = ["BridgeSettings", "backoff_of", "breaker_of", "request_headers"]

USER_AGENT = "swb-rest-bridge/1"


def backoff_of(settings: BridgeSettings) -> Backoff:
    initial = settings.retry_initial_s
    return Backoff(initial_s=initial, max_s=max(initial, settings.retry_max_s))


def breaker_of(settings: BridgeSettings) -> CircuitBreaker:
    return CircuitBreaker(settings.breaker_failures, settings.breaker_reset_s)


def request_headers(
    settings: BridgeSettings, request_id: str, callback_url: str | None = None
) -> dict[str, str]:
    """Headers of every POST: JSON, the idempotency key (the request id is deterministic, so a
    re-delivered request carries the same key), the auth header, the callback URL if any."""
    headers = {
        "Content-Type": "application/json",
        "Accept": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": request_id,
    }
    if settings.auth_value is not None:
        headers[settings.auth_header] = settings.auth_value.get_secret_value()
    callback = callback_url or settings.callback_url
    if callback:
        headers["X-SWB-Callback-URL"] = callback
    return headers

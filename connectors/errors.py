"""The connector SDK's errors, under the package's one root (`broker.errors.SwbError`).

A handler raises `RequestRefused` for a request it will never be able to handle (the SDK
dead-letters it) and `AgencyUnavailable` when the agency's system cannot take it *now* (the SDK
retries with backoff and does not commit past it). Anything else a handler raises is treated
as a refusal too: a bug must not stall every request behind it.
"""

from __future__ import annotations

from broker.errors import SwbError

__all__ = ["AgencyUnavailable", "ConnectorError", "RequestRefused"]


class ConnectorError(SwbError):
    """Root of the connector SDK's errors."""


class RequestRefused(ConnectorError):
    """A request that cannot be handled, ever: it goes to the DLQ with `reason`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason  # short machine-readable cause, e.g. "agency-refused"


class AgencyUnavailable(ConnectorError):
    """The agency's system cannot take the request now; trying again later may succeed.
    `retry_after_s` is the agency's own hint (an HTTP Retry-After), if it gave one."""

    retriable = True

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s

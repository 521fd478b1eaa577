"""The REST bridge's handler: a request in, the agency endpoint's answers out.

Reviews and withdrawals are both forwarded (the agency must learn that a version no longer
concerns it); answers to a withdrawal are ignored. An endpoint that only accepts (202) answers
later through the callback endpoint, so the handler returns nothing and the SDK commits: the
agency has the request, nothing is lost.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

import structlog

from broker.core.declaration import now_utc
from broker.core.messages import AgencyRequest, AgencyResponse, RequestKind
from connectors.rest.endpoint import AgencyEndpoint
from connectors.rest.wire import responses_for

__all__ = ["RestHandler"]

log = structlog.get_logger("swb.bridge")


class RestHandler:
    def __init__(
        self,
        endpoint: AgencyEndpoint,
        *,
        clock: Callable[[], datetime] = now_utc,
        callback_url: str | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.callback_url = callback_url  # advertised to the agency with every request
        self._clock = clock

    async def __call__(self, request: AgencyRequest) -> list[AgencyResponse]:
        reply = await self.endpoint.deliver(request, self.callback_url)
        if request.kind is RequestKind.WITHDRAWAL:
            if reply.answers:
                log.info("answers to a withdrawal ignored", count=len(reply.answers))
            return []
        if reply.accepted_only:
            log.info(
                "agency accepted the request; its answer will come by callback",
                http_status=reply.status_code,
            )
            return []
        return responses_for(request, reply.answers, self._clock())

"""The REST bridge: the SDK connector of an agency whose system speaks HTTP.

Requests go to the agency's endpoint (`endpoint`, retried behind a circuit breaker); its
synchronous answers are published by the connector, its later answers arrive through the
callback endpoint (`callback`) or `accept_answers`, and are published from there.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx

from broker.core.declaration import now_utc
from broker.core.messages import AgencyResponse
from broker.settings import BridgeSettings
from connectors.rest.callback import CallbackServer, callback_app
from connectors.rest.endpoint import AgencyEndpoint
from connectors.rest.handler import RestHandler
from connectors.rest.wire import CallbackAnswer, callback_responses
from connectors.sdk import ConnectorFactory

__all__ = ["RestBridge"]


class RestBridge:
    """Agency `agency`'s connector whose handler is its HTTP endpoint. `run` owns the HTTP
    client, the callback server and the connector."""

    def __init__(
        self,
        agency: str,
        settings: BridgeSettings,
        connector_factory: ConnectorFactory,
        *,
        http_transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], datetime] = now_utc,
    ) -> None:
        if settings.callback_port is not None and settings.callback_token is None:
            raise ValueError(
                "set SWB_BRIDGE__CALLBACK_TOKEN (or --callback-token): without it anyone "
                "reaching the callback endpoint could answer as the agency"
            )
        self.agency = agency
        self._clock = clock
        self.endpoint = AgencyEndpoint(settings, transport=http_transport)
        self.handler = RestHandler(self.endpoint, clock=clock, callback_url=settings.callback_url)
        self.connector = connector_factory(agency, self.handler)
        self.callback: CallbackServer | None = None
        if settings.callback_port is not None and settings.callback_token is not None:
            token = settings.callback_token.get_secret_value()
            app = callback_app(agency, self.accept_answers, token, self._health)
            self.callback = CallbackServer(app, settings.callback_host, settings.callback_port)

    async def run(self, stopping: asyncio.Event) -> None:
        async with self.endpoint, asyncio.TaskGroup() as tasks:
            if self.callback is not None:
                await self.callback.start()
                self.handler.callback_url = self.handler.callback_url or self.callback.url
                tasks.create_task(self.callback.serve(stopping))
            await self.connector.run(stopping)

    async def accept_answers(self, answers: list[CallbackAnswer]) -> list[AgencyResponse]:
        """Publish answers the agency gives later; returns once Kafka has them. Raises
        ValueError for an answer naming another agency."""
        responses = callback_responses(self.agency, answers, self._clock())
        await self.connector.publish(responses)
        return responses

    def _health(self) -> dict[str, Any]:
        return {"breaker": self.endpoint.breaker.state.value, "endpoint": self.endpoint.url}

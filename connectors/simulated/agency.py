"""A simulated border agency: the SDK connector around the pure `decide`/`followup` handler.

Inspections and holds are followed by a final answer after `followup_s`, published through
the connector like an agency's later answer would be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from broker.core.messages import AgencyRequest, AgencyResponse, RequestKind
from connectors.sdk import ConnectorFactory
from connectors.simulated.config import SimulationProfile
from connectors.simulated.handler import decide, followup

__all__ = ["ConnectorFactory", "SimulatedAgency"]


class SimulatedAgency:
    """Answers one agency's requests. `run` owns the connector and the follow-up tasks."""

    def __init__(
        self,
        agency: str,
        connector_factory: ConnectorFactory,
        profile: SimulationProfile | None = None,
    ) -> None:
        self.agency = agency
        self.profile = profile or SimulationProfile()
        self.connector = connector_factory(agency, self.answer)
        self._followups: asyncio.TaskGroup | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as followups:
            self._followups = followups
            await self.connector.run(stopping)

    async def answer(self, request: AgencyRequest) -> Sequence[AgencyResponse]:
        if request.kind is RequestKind.WITHDRAWAL:
            return []
        if self.profile.latency_s:
            await asyncio.sleep(self.profile.latency_s)
        first = decide(request, self.profile)
        follow = followup(request, first, self.profile)
        if follow is not None and self._followups is not None:
            self._followups.create_task(self._publish_later(follow))
        return [first]

    async def _publish_later(self, response: AgencyResponse) -> None:
        await asyncio.sleep(self.profile.followup_s)
        await self.connector.publish([response])

"""The customs risk agency: the SDK connector around the pure risk `decide` handler.

A red lane's examination result is published `inspection_s` after the INSPECTION answer,
through the connector, like any agency's later answer. The agency keeps the lane of each
submission's latest assessed version (bounded), so the demo and operators can report the mix.
"""

from __future__ import annotations

import asyncio
from collections import Counter, OrderedDict
from collections.abc import Sequence

import structlog

from broker.core.messages import AgencyRequest, AgencyResponse, RequestKind
from broker.core.risk import Lane
from connectors.customs_risk.config import CustomsRiskConfig
from connectors.customs_risk.handler import decide
from connectors.sdk import ConnectorFactory

__all__ = ["CustomsRiskAgency"]

log = structlog.get_logger("swb.customs-risk")


class CustomsRiskAgency:
    """Answers customs' requests by risk lane. `run` owns the connector and the examinations."""

    def __init__(
        self,
        connector_factory: ConnectorFactory,
        config: CustomsRiskConfig | None = None,
        *,
        agency: str = "customs",
        remember: int = 100_000,
    ) -> None:
        self.agency = agency
        self.config = config or CustomsRiskConfig()
        self.connector = connector_factory(agency, self.answer)
        self._lanes: OrderedDict[str, Lane] = OrderedDict()
        self._remember = remember
        self._examinations: asyncio.TaskGroup | None = None

    async def run(self, stopping: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as examinations:
            self._examinations = examinations
            try:
                await self.connector.run(stopping)
            finally:
                self._examinations = None

    async def answer(self, request: AgencyRequest) -> Sequence[AgencyResponse]:
        if request.kind is RequestKind.WITHDRAWAL:
            return []
        if self.config.latency_s:
            await asyncio.sleep(self.config.latency_s)
        answer = decide(request, self.config)
        self._remember_lane(request.submission_id, answer.assessment.lane)
        log.info(
            "risk assessed",
            submission_id=request.submission_id,
            version=request.version,
            lane=answer.assessment.lane.value,
            score=answer.assessment.score,
            profiles=[hit.profile.id for hit in answer.assessment.hits],
            randomly_selected=answer.assessment.randomly_selected,
        )
        if answer.final is not None:
            if self._examinations is None:  # not running (a harness calling us directly)
                return [answer.first, answer.final]
            self._examinations.create_task(self._publish_later(answer.final))
        return [answer.first]

    def lane_of(self, submission_id: str) -> Lane | None:
        """The lane of the submission's latest assessed version, if still remembered."""
        return self._lanes.get(submission_id)

    def lane_mix(self) -> Counter[Lane]:
        """Lanes of the latest assessed version of every remembered submission."""
        return Counter(self._lanes.values())

    def _remember_lane(self, submission_id: str, lane: Lane) -> None:
        self._lanes[submission_id] = lane
        self._lanes.move_to_end(submission_id)
        while len(self._lanes) > self._remember:
            self._lanes.popitem(last=False)

    async def _publish_later(self, response: AgencyResponse) -> None:
        await asyncio.sleep(self.config.inspection_s)
        await self.connector.publish([response])

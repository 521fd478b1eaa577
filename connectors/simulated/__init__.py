"""Simulated border agencies for the demo, the tests and the benchmark.

Same anatomy as every connector: `config` (the profile), `handler` (request -> answers, pure),
`agency` (the runnable agency around an SDK `AgencyConnector`).
"""

from __future__ import annotations

from connectors.simulated.agency import ConnectorFactory, SimulatedAgency
from connectors.simulated.config import (
    CONDITIONS,
    EXPECTED_DOCUMENTS,
    PROPORTIONS,
    SimulationProfile,
)
from connectors.simulated.handler import decide, followup

__all__ = [
    "CONDITIONS",
    "EXPECTED_DOCUMENTS",
    "PROPORTIONS",
    "ConnectorFactory",
    "SimulatedAgency",
    "SimulationProfile",
    "decide",
    "followup",
]

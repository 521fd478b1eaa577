"""Customs as a risk engine: lanes from risk profiles kept as data (`broker/core/risk.py`).

Same anatomy as every connector: `config` (policy, seed, timings), `handler` (request ->
lane and answers, pure), `agency` (the runnable agency around an SDK `AgencyConnector`).
"""

from __future__ import annotations

from connectors.customs_risk.agency import CustomsRiskAgency
from connectors.customs_risk.config import INSPECTION_OUTCOMES, CustomsRiskConfig
from connectors.customs_risk.handler import RiskAnswer, decide, examination_result

__all__ = [
    "INSPECTION_OUTCOMES",
    "CustomsRiskAgency",
    "CustomsRiskConfig",
    "RiskAnswer",
    "decide",
    "examination_result",
]

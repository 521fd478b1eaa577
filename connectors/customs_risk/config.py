"""What the customs risk agency is configured with: the risk policy, the seed, the timings and
the outcomes of a physical examination."""

from __future__ import annotations

from dataclasses import dataclass, field

from broker.core.messages import AgencyStatus
from broker.core.risk import RiskPolicy, load_risk_policy

__all__ = ["INSPECTION_OUTCOMES", "CustomsRiskConfig"]

#: (final status, weight) after a red-lane examination: most goods match their declaration.
INSPECTION_OUTCOMES: tuple[tuple[AgencyStatus, float], ...] = (
    (AgencyStatus.CLEARED, 0.85),
    (AgencyStatus.CLEARED_WITH_CONDITIONS, 0.11),
    (AgencyStatus.REJECTED, 0.04),
)


@dataclass(frozen=True, slots=True)
class CustomsRiskConfig:
    """`policy` defaults to `broker/rules/risk_profiles.toml` (`load_risk_policy(path)` for
    another file)."""

    seed: int = 7
    policy: RiskPolicy = field(default_factory=load_risk_policy)
    latency_s: float = 0.0  # how long the assessment "takes" before the first answer
    inspection_s: float = 0.0  # how long a red-lane examination takes before the final answer
    documents_deadline_h: float = 48.0  # documents asked for in the yellow lane are due by then
    inspection_outcomes: tuple[tuple[AgencyStatus, float], ...] = INSPECTION_OUTCOMES

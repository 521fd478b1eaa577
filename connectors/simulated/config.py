"""What a simulated agency is configured with: proportions, timings, expected documents."""

from __future__ import annotations

from dataclasses import dataclass

from broker.core.messages import AgencyStatus

__all__ = ["CONDITIONS", "EXPECTED_DOCUMENTS", "PROPORTIONS", "SimulationProfile"]

#: The certificate each agency expects to see cited (EU TARIC document codes).
EXPECTED_DOCUMENTS: dict[str, tuple[str, str]] = {
    "veterinary": ("N853", "Common Health Entry Document for animal products (CHED-P)"),
    "plant": ("N851", "Phytosanitary certificate"),
    "wildlife": ("C400", "CITES permit"),
    "strategic": ("X002", "Dual-use export authorisation"),
    "police": ("C079", "Firearms import licence / end-user certificate"),
}

#: (status, weight) for an agency's first answer once its rules are satisfied.
PROPORTIONS: tuple[tuple[AgencyStatus, float], ...] = (
    (AgencyStatus.CLEARED, 0.80),
    (AgencyStatus.CLEARED_WITH_CONDITIONS, 0.08),
    (AgencyStatus.DOCUMENTS_REQUIRED, 0.03),
    (AgencyStatus.INSPECTION, 0.06),
    (AgencyStatus.HOLD, 0.02),
    (AgencyStatus.REJECTED, 0.01),
)

#: The condition each agency attaches when it clears with conditions.
CONDITIONS = {
    "veterinary": "Keep under cold chain below -18 °C to the approved store",
    "plant": "Fumigate at the border inspection post before release",
    "food": "Release to bonded store pending laboratory sample results",
    "standards": "Affix conformity marking before sale",
    "environment": "Quantity counts against the importer's annual quota",
    "excise": "Release under excise duty suspension to the tax warehouse",
}


@dataclass(frozen=True, slots=True)
class SimulationProfile:
    seed: int = 7
    latency_s: float = 0.0  # how long the agency "thinks" before its first answer
    followup_s: float = 0.0  # how long an inspection or a hold takes
    disclaim_rate: float = 0.5  # share of "may be required" routes answered NOT_CONCERNED
    proportions: tuple[tuple[AgencyStatus, float], ...] = PROPORTIONS

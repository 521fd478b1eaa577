"""What a permit-issuing agency is configured with: the permit types it issues and writes off."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from broker.core.messages import Permit

__all__ = ["PERMIT_TYPES", "PermitConfig", "sample_permits"]

#: The permits each agency issues and writes off (type code, what it is). C400 and X002 are EU
#: TARIC document codes; 1ODS is the national ODS licence code of the shipped sample 08.
PERMIT_TYPES: dict[str, tuple[tuple[str, str], ...]] = {
    "wildlife": (("C400", "CITES permit"),),
    "strategic": (("X002", "Dual-use export authorisation"),),
    "environment": (("1ODS", "Ozone-depleting substances licence within the national quota"),),
}


@dataclass(frozen=True, slots=True)
class PermitConfig:
    """`permit_types`: (type code, description) of the permits this agency issues."""

    permit_types: tuple[tuple[str, str], ...]
    documents_deadline_h: float = 48.0  # documents asked for are due this long after the answer

    @classmethod
    def for_agency(cls, agency: str) -> PermitConfig:
        types = PERMIT_TYPES.get(agency)
        if types is None:
            known = ", ".join(sorted(PERMIT_TYPES))
            raise ValueError(f"{agency} issues no permits here; permit agencies: {known}")
        return cls(permit_types=types)

    @property
    def type_codes(self) -> tuple[str, ...]:
        return tuple(code for code, _ in self.permit_types)


def sample_permits(now: datetime) -> tuple[Permit, ...]:
    """The permits the shipped sample declarations cite (broker/samples 07, 08 and 11), valid
    around `now`, so the demo can write them off: a CITES permit for one carving (used up
    entirely, UK DE 2/3 style), an ODS import quota of 30 t, a dual-use licence for 4 machines."""
    valid = {
        "valid_from": now - timedelta(days=60),
        "valid_to": now + timedelta(days=300),
        "issued_at": now - timedelta(days=60),
    }
    return (
        Permit(
            permit_id="26NL123456/20",
            type_code="C400",
            issuing_agency="wildlife",
            holder_id="NL870012345",
            hs_prefixes=("9601",),
            unit="NAR",
            total_quantity=Decimal(1),
            **valid,
        ),
        Permit(
            permit_id="NEMA/ODS/IL/2026/014",
            type_code="1ODS",
            issuing_agency="environment",
            holder_id="P052987654W",
            hs_prefixes=("290371", "290372"),
            unit="KGM",
            total_quantity=Decimal(30000),
            **valid,
        ),
        Permit(
            permit_id="DE-BAFA-2026-0041275",
            type_code="X002",
            issuing_agency="strategic",
            holder_id="DE8123456",
            hs_prefixes=("8457", "8458"),
            unit="NAR",
            total_quantity=Decimal(4),
            **valid,
        ),
    )

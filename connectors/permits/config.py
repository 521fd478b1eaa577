"""What a permit-issuing agency is configured with: the permit types it issues and writes off."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["PERMIT_TYPES", "PermitConfig"]

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

"""Customs risk assessment, sans I/O: a package in, a lane and its explanation out.

Customs sees every declaration (DOMAIN.md) and sorts it into an ASYCUDA-style lane: green
(release), blue (release, post-clearance audit), yellow (documentary check), red (physical
examination). The lane comes from *risk profiles kept as data* (`broker/rules/risk_profiles.toml`):
each profile targets a commodity (HS prefix), origin, trader and procedure and adds its weight
to the declaration's score. SAFE Framework AEO status scales the score down (AEOF most), and a
small random selection keeps every trader, AEO or not, with a chance of control, as the WCO
recommends, so targeting can be evaluated.

Determinism: the random draw is a hash of the seed and the submission id (not the version, so
a trader cannot re-roll a selection by amending); same package, same seed, same lane. Every
assessment explains itself: which profiles fired, on which items, with what points, the AEO
factor, the random selection and the thresholds crossed.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from broker.core.declaration import AeoStatus, DeclarationType, Party
from broker.core.messages import InformationPackage
from broker.core.rules import Country, DocumentType, HsPrefix
from broker.errors import RulesError

__all__ = [
    "DEFAULT_RISK_PROFILES",
    "AeoRelief",
    "Assessment",
    "Lane",
    "ProfileHit",
    "RequestedDocument",
    "RiskPolicy",
    "RiskProfile",
    "Thresholds",
    "assess",
    "load_risk_policy",
    "parse_risk_policy",
    "selection_draw",
    "trader_of",
]

#: Where the risk profiles shipped in the package live (importlib.resources package, file).
DEFAULT_RISK_PROFILES = ("broker.rules", "risk_profiles.toml")


class Lane(StrEnum):
    """ASYCUDA lanes, in increasing order of control."""

    GREEN = "green"
    BLUE = "blue"
    YELLOW = "yellow"
    RED = "red"

    @property
    def rank(self) -> int:
        return _LANE_ORDER.index(self)


_LANE_ORDER = (Lane.GREEN, Lane.BLUE, Lane.YELLOW, Lane.RED)


class _Data(BaseModel):
    """Unknown keys are errors: a misspelt condition must not silently widen a profile."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class RequestedDocument(_Data):
    """A document customs asks for in a documentary check (yellow lane)."""

    type_code: DocumentType
    description: str = Field(min_length=1, max_length=200)


class RiskProfile(_Data):
    """One targeting rule. Conditions are ANDed; item conditions (HS prefix, origin) must hold
    on the same goods item, header conditions (trader, procedure) on the declaration."""

    id: str = Field(pattern=r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$", max_length=80)
    description: str = Field(min_length=1, max_length=300)
    weight: float = Field(gt=0, le=100, description="points added to the score when it fires")
    hs_prefixes: tuple[HsPrefix, ...] = ()
    origin_countries: tuple[Country, ...] = ()
    trader_ids: tuple[str, ...] = ()
    procedures: tuple[DeclarationType, ...] = ()
    procedure_codes: tuple[str, ...] = Field(
        default=(), description="prefixes of the 4-digit customs procedure code, e.g. 42"
    )
    aeo_relief: bool = Field(
        default=True,
        description="false for prohibitions and security targets an AEO status does not lift",
    )
    documents: tuple[RequestedDocument, ...] = Field(
        default=(), description="what a documentary check asks for when this profile fires"
    )

    @model_validator(mode="after")
    def _has_conditions(self) -> Self:
        if not (
            self.hs_prefixes
            or self.origin_countries
            or self.trader_ids
            or self.procedures
            or self.procedure_codes
        ):
            raise ValueError("a profile needs at least one condition")
        return self

    @property
    def looks_at_items(self) -> bool:
        return bool(self.hs_prefixes or self.origin_countries)


class Thresholds(_Data):
    """Score from which each lane applies (below `blue`: green)."""

    blue: float = Field(gt=0)
    yellow: float = Field(gt=0)
    red: float = Field(gt=0)

    @model_validator(mode="after")
    def _increasing(self) -> Self:
        if not self.blue < self.yellow < self.red:
            raise ValueError("thresholds must increase: blue < yellow < red")
        return self

    def lane(self, score: float) -> Lane:
        if score >= self.red:
            return Lane.RED
        if score >= self.yellow:
            return Lane.YELLOW
        if score >= self.blue:
            return Lane.BLUE
        return Lane.GREEN

    def threshold(self, lane: Lane) -> float:
        return {Lane.GREEN: 0.0, Lane.BLUE: self.blue, Lane.YELLOW: self.yellow}.get(lane, self.red)


class AeoRelief(_Data):
    """How much an AEO status lowers risk: the score and the random selection rate are
    multiplied by these factors (1 = no relief)."""

    score_factor: float = Field(gt=0, le=1)
    selection_factor: float = Field(ge=0, le=1)


_NO_RELIEF = AeoRelief(score_factor=1.0, selection_factor=1.0)


class RiskPolicy(_Data):
    """The whole risk-profile file: thresholds, random selection, AEO relief, profiles."""

    thresholds: Thresholds
    random_selection_rate: float = Field(ge=0, le=1)
    random_selection_lane: Lane = Lane.RED
    aeo: dict[AeoStatus, AeoRelief] = Field(default_factory=dict)
    yellow_documents: tuple[RequestedDocument, ...] = Field(min_length=1)
    post_clearance_condition: str = Field(min_length=1, max_length=300)
    profiles: tuple[RiskProfile, ...] = ()

    @model_validator(mode="after")
    def _unique_ids(self) -> Self:
        seen: set[str] = set()
        for profile in self.profiles:
            if profile.id in seen:
                raise ValueError(f"profile id {profile.id!r} is used twice: ids must be unique")
            seen.add(profile.id)
        return self

    def relief(self, status: AeoStatus) -> AeoRelief:
        return self.aeo.get(status, _NO_RELIEF)


@dataclass(frozen=True, slots=True)
class ProfileHit:
    """A profile that fired: on which goods items, and the points it added after AEO relief."""

    profile: RiskProfile
    items: tuple[int, ...]
    points: float

    def explain(self) -> str:
        where = f" on item {', '.join(map(str, self.items))}" if self.items else ""
        profile = self.profile
        relief = "" if self.points == profile.weight else f" (weight {profile.weight:g})"
        return f"profile {profile.id} +{self.points:g}{relief}{where}: {profile.description}"


@dataclass(frozen=True, slots=True)
class Assessment:
    """The lane of one version of one declaration, and everything that led to it."""

    lane: Lane
    score: float
    raw_score: float
    hits: tuple[ProfileHit, ...]
    trader_id: str | None
    aeo_status: AeoStatus
    relief: AeoRelief
    selection_rate: float
    randomly_selected: bool
    score_lane: Lane
    thresholds: Thresholds
    documents: tuple[RequestedDocument, ...]

    def explain(self) -> tuple[str, ...]:
        """Reasons a trader and an auditor can read: lane and score first, then each profile."""
        lines = [f"risk lane {self.lane.value}: {self._why()}"]
        lines += [hit.explain() for hit in self.hits]
        if self.aeo_status is not AeoStatus.NONE:
            lines.append(
                f"AEO {self.aeo_status.value} ({self.trader_id}): score "
                f"x{self.relief.score_factor:g}, random selection x{self.relief.selection_factor:g}"
            )
        if self.randomly_selected:
            lines.append(
                f"random selection (rate {self.selection_rate:.2%}) for {self.lane.value} lane"
            )
        return tuple(lines)

    def _why(self) -> str:
        score = f"score {self.score:g}"
        if self.score_lane is Lane.GREEN:
            head = f"{score} below the blue threshold {self.thresholds.blue:g}"
        else:
            limit = self.thresholds.threshold(self.score_lane)
            head = f"{score} at or above the {self.score_lane.value} threshold {limit:g}"
        if not self.hits:
            head += ", no risk profile fired"
        return head


def trader_of(package: InformationPackage) -> Party | None:
    """The trader customs holds responsible: the importer on import, the exporter on export,
    the declarant (the transit principal) otherwise or when that party is not given."""
    match package.type:
        case DeclarationType.IMPORT:
            party = package.importer
        case DeclarationType.EXPORT:
            party = package.exporter
        case _:
            party = None
    return party or package.declarant


def selection_draw(seed: int, submission_id: str) -> float:
    """A uniform number in [0, 1) fixed by the seed and the submission (not its version)."""
    digest = hashlib.sha256(f"{seed}\x1fselection\x1f{submission_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assess(
    package: InformationPackage, policy: RiskPolicy, *, submission_id: str, seed: int
) -> Assessment:
    """Score the package against every profile, apply AEO relief, draw the random selection."""
    trader = trader_of(package)
    status = trader.aeo_status if trader is not None else AeoStatus.NONE
    relief = policy.relief(status)
    hits = tuple(
        ProfileHit(
            profile,
            items,
            round(profile.weight * (relief.score_factor if profile.aeo_relief else 1.0), 2),
        )
        for profile in policy.profiles
        if (items := _fires(profile, package)) is not None
    )
    raw = round(sum(hit.profile.weight for hit in hits), 2)
    score = round(sum(hit.points for hit in hits), 2)
    score_lane = policy.thresholds.lane(score)
    rate = policy.random_selection_rate * relief.selection_factor
    selected = selection_draw(seed, submission_id) < rate
    lane = score_lane
    if selected and policy.random_selection_lane.rank > lane.rank:
        lane = policy.random_selection_lane
    else:
        selected = False  # the draw changed nothing: do not claim it did
    return Assessment(
        lane=lane,
        score=score,
        raw_score=raw,
        hits=hits,
        trader_id=trader.identifier if trader is not None else None,
        aeo_status=status,
        relief=relief,
        selection_rate=rate,
        randomly_selected=selected,
        score_lane=score_lane,
        thresholds=policy.thresholds,
        documents=_documents(policy, hits),
    )


def _fires(profile: RiskProfile, package: InformationPackage) -> tuple[int, ...] | None:
    """The items a profile fires on (empty for a header-only profile), or None if it does not."""
    if profile.procedures and package.type not in profile.procedures:
        return None
    if profile.procedure_codes and not package.procedure_code.startswith(profile.procedure_codes):
        return None
    if profile.trader_ids:
        parties = (package.declarant, package.importer, package.exporter)
        if not any(p is not None and p.identifier in profile.trader_ids for p in parties):
            return None
    if not profile.looks_at_items:
        return ()
    items = tuple(
        item.sequence
        for item in package.items
        if (not profile.hs_prefixes or item.hs_code.startswith(profile.hs_prefixes))
        and (not profile.origin_countries or item.origin_country in profile.origin_countries)
    )
    return items or None


def _documents(policy: RiskPolicy, hits: Iterable[ProfileHit]) -> tuple[RequestedDocument, ...]:
    """What a documentary check asks for: the fired profiles' documents, else the defaults."""
    wanted = {doc.type_code: doc for hit in hits for doc in hit.profile.documents}
    return tuple(wanted.values()) or policy.yellow_documents


def parse_risk_policy(text: str, source: str) -> RiskPolicy:
    """Parse and validate risk profiles from TOML; `source` names the file in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"risk profiles {source} are not valid TOML: {exc}") from exc
    try:
        return RiskPolicy.model_validate(data)
    except ValidationError as exc:
        problems = [
            f"  {'.'.join(str(p) for p in d['loc']) or '(file)'}: "
            f"{d['msg'].removeprefix('Value error, ')}"
            for d in exc.errors(include_url=False)
        ]
        raise RulesError(
            f"risk profiles {source} are invalid; fix these fields:\n" + "\n".join(problems)
        ) from exc


def load_risk_policy(path: Path | None = None) -> RiskPolicy:
    """Load risk profiles from `path`, or the profiles shipped in the package when None."""
    if path is None:
        package, name = DEFAULT_RISK_PROFILES
        source = f"{package.replace('.', '/')}/{name} (package default)"
        text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
        return parse_risk_policy(text, source)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise RulesError(f"risk profiles {path} cannot be read: {exc}") from exc
    return parse_risk_policy(text, str(path))

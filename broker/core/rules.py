"""The routing rules file (DESIGN §6): which agency sees which goods, by when, and what it gets.

Routing is data, not code: a TOML file lists every agency with its SLA, its information package
and its triggers. The file is validated completely at load, so a typo fails the start-up with
the file and the field path named, never a routing decision later.
"""

from __future__ import annotations

import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from broker.core.declaration import Declaration, DeclarationType, GoodsItem
from broker.core.messages import AGENCY_CODES, Requirement
from broker.core.reference import HS_CHAPTERS, check_country
from broker.errors import RulesError

__all__ = [
    "DEFAULT_RULES",
    "PACKAGE_FIELDS",
    "AgencyRules",
    "PackageField",
    "RuleBook",
    "Trigger",
    "load_rules",
    "parse_rules",
]

#: Where the rules shipped in the package live (importlib.resources package, file name).
DEFAULT_RULES = ("broker.rules", "default.toml")

PackageField = Literal[
    "declarant",
    "importer",
    "exporter",
    "transport",
    "export_country",
    "destination_country",
    "invoice",
    "documents",
    "ucr",
]
PACKAGE_FIELDS: tuple[PackageField, ...] = (
    "declarant",
    "importer",
    "exporter",
    "transport",
    "export_country",
    "destination_country",
    "invoice",
    "documents",
    "ucr",
)


def _check_agency_code(code: str) -> str:
    if code not in AGENCY_CODES:
        raise ValueError(f"unknown agency {code!r}: use one of {', '.join(AGENCY_CODES)}")
    return code


def _check_hs_prefix(prefix: str) -> str:
    if not (prefix.isdigit() and 2 <= len(prefix) <= 10):
        raise ValueError(f"HS prefix {prefix!r} must be 2 to 10 digits")
    if prefix[:2] not in HS_CHAPTERS:
        raise ValueError(f"HS prefix {prefix!r}: chapter {prefix[:2]} does not exist")
    return prefix


AgencyCodeName = Annotated[str, AfterValidator(_check_agency_code)]
HsPrefix = Annotated[str, AfterValidator(_check_hs_prefix)]
Country = Annotated[str, AfterValidator(check_country)]
DocumentType = Annotated[str, Field(pattern=r"^[A-Z0-9]{4}$")]
UnNumber = Annotated[str, Field(pattern=r"^[0-9]{4}$")]


class _Rules(BaseModel):
    """Unknown keys are errors: a misspelt condition must not silently widen a trigger."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class Trigger(_Rules):
    """One reason an agency must (or may have to) see a declaration. Conditions are ANDed.

    Item conditions (HS prefix, origin, UN number, CITES, document type) pick the goods items
    the agency receives; a trigger with header conditions only gives the agency every item.
    Documents cited on the header count for every item."""

    id: str = Field(
        pattern=r"^[a-z0-9]+(?:[.-][a-z0-9]+)*$",
        max_length=80,
        description="reason shown to traders, e.g. veterinary.animal-products",
    )
    description: str = Field(min_length=1, max_length=300)
    requirement: Literal["required", "may_be_required"]
    hs_prefixes: tuple[HsPrefix, ...] = ()
    procedures: tuple[DeclarationType, ...] = ()
    origin_countries: tuple[Country, ...] = ()
    destination_countries: tuple[Country, ...] = ()
    document_types: tuple[DocumentType, ...] = ()
    dangerous_goods: bool = False
    un_numbers: tuple[UnNumber, ...] = ()
    cites: bool = False
    all_declarations: bool = False

    @field_validator("dangerous_goods", "cites", "all_declarations")
    @classmethod
    def _flag_true_or_absent(cls, value: bool) -> bool:
        if not value:
            raise ValueError(
                "a flag only narrows a trigger when true: set it to true or leave it out"
            )
        return value

    @model_validator(mode="after")
    def _has_conditions(self) -> Self:
        conditions = [
            name
            for name in (
                "hs_prefixes",
                "procedures",
                "origin_countries",
                "destination_countries",
                "document_types",
                "dangerous_goods",
                "un_numbers",
                "cites",
            )
            if getattr(self, name)
        ]
        if self.all_declarations and conditions:
            raise ValueError(
                f"all_declarations = true cannot be combined with {', '.join(conditions)}"
            )
        if not self.all_declarations and not conditions:
            raise ValueError("a trigger needs at least one condition, or all_declarations = true")
        return self

    @property
    def flag(self) -> Requirement:
        """The US ACE flag this trigger raises: R (required) or M (may be required)."""
        if self.requirement == "required":
            return Requirement.REQUIRED
        return Requirement.MAY_BE_REQUIRED

    @property
    def selects_items(self) -> bool:
        """True when the trigger looks at goods items, so only matching items concern it."""
        return bool(
            self.hs_prefixes
            or self.origin_countries
            or self.document_types
            or self.dangerous_goods
            or self.un_numbers
            or self.cites
        )

    @cached_property
    def match(self) -> TriggerMatch:
        """The conditions compiled once: routing tests them for every item of every declaration."""
        return TriggerMatch.of(self)


class AgencyRules(_Rules):
    """An agency's SLA, the header fields it receives, and the triggers that route to it."""

    code: AgencyCodeName
    name: str = Field(min_length=1, max_length=100)
    sla_minutes: int = Field(gt=0, le=60 * 24 * 30, description="answer expected within")
    package: tuple[PackageField, ...] = Field(
        description="header fields received beyond the identity (lrn, type, procedure ...)"
    )
    triggers: tuple[Trigger, ...] = Field(min_length=1)

    @field_validator("package")
    @classmethod
    def _package_unique(cls, value: tuple[PackageField, ...]) -> tuple[PackageField, ...]:
        repeated = sorted({field for field in value if value.count(field) > 1})
        if repeated:
            raise ValueError(f"package lists {', '.join(repeated)} more than once")
        return value

    @property
    def sla(self) -> timedelta:
        return timedelta(minutes=self.sla_minutes)


@dataclass(frozen=True, slots=True)
class TriggerMatch:
    """A trigger's conditions as frozensets and a prefix tuple, the one definition of when a
    trigger holds for a declaration and a goods item."""

    procedures: frozenset[str] = frozenset()
    destination_countries: frozenset[str] = frozenset()
    selects_items: bool = False
    hs_prefixes: tuple[str, ...] = ()
    origin_countries: frozenset[str] = frozenset()
    needs_un_number: bool = False
    un_numbers: frozenset[str] = frozenset()
    cites: bool = False
    document_types: frozenset[str] = frozenset()

    @classmethod
    def of(cls, trigger: Trigger) -> TriggerMatch:
        if trigger.all_declarations:  # every item of every declaration, whatever else it says
            return cls()
        return cls(
            procedures=frozenset(trigger.procedures),
            destination_countries=frozenset(trigger.destination_countries),
            selects_items=trigger.selects_items,
            hs_prefixes=trigger.hs_prefixes,
            origin_countries=frozenset(trigger.origin_countries),
            needs_un_number=trigger.dangerous_goods or bool(trigger.un_numbers),
            un_numbers=frozenset(trigger.un_numbers),
            cites=trigger.cites,
            document_types=frozenset(trigger.document_types),
        )

    def header_holds(self, declaration: Declaration) -> bool:
        """The header conditions (procedure, destination) hold."""
        if self.procedures and declaration.type not in self.procedures:
            return False
        return not (
            self.destination_countries
            and declaration.destination_country not in self.destination_countries
        )

    def item_holds(self, item: GoodsItem, header_documents: frozenset[str]) -> bool:
        """Every item condition holds for this goods item; header documents count for it."""
        if self.hs_prefixes and not item.hs_code.startswith(self.hs_prefixes):
            return False
        if self.origin_countries and item.origin_country not in self.origin_countries:
            return False
        if self.needs_un_number:
            if item.un_number is None:
                return False
            if self.un_numbers and item.un_number not in self.un_numbers:
                return False
        if self.cites and not item.cites:
            return False
        if self.document_types and self.document_types.isdisjoint(header_documents):
            return any(doc.type_code in self.document_types for doc in item.documents)
        return True


class TriggerIndex:
    """Every trigger of a rule book, numbered in routing order, with the item-selecting ones
    filed under their HS prefixes: routing a declaration looks each goods item's HS code up
    instead of testing every trigger against every item."""

    def __init__(self, agencies: Sequence[AgencyRules]) -> None:
        pairs = [(agency, trigger) for agency in agencies for trigger in agency.triggers]
        #: By trigger number: the trigger and the agency it routes to.
        self.triggers = tuple(trigger for _, trigger in pairs)
        self.agency_of = tuple(agency for agency, _ in pairs)
        self._matches = tuple(trigger.match for trigger in self.triggers)
        by_prefix: dict[str, list[int]] = {}
        for number, match in enumerate(self._matches):
            for prefix in match.hs_prefixes:
                by_prefix.setdefault(prefix, []).append(number)
        self._by_prefix = {prefix: tuple(numbers) for prefix, numbers in by_prefix.items()}
        self._prefix_lengths = tuple(sorted({len(prefix) for prefix in by_prefix}))
        # Select items by something other than an HS prefix: tried on every item.
        self._unprefixed = tuple(
            n for n, m in enumerate(self._matches) if m.selects_items and not m.hs_prefixes
        )
        # Header conditions only: every item or none.
        self._whole = tuple(n for n, m in enumerate(self._matches) if not m.selects_items)
        # (type, destination) -> which triggers' header conditions hold; at most 3 x 250 entries.
        self._header_holds: dict[tuple[str, str], tuple[bool, ...]] = {}

    def select(self, declaration: Declaration) -> dict[int, set[int]]:
        """Trigger number -> the sequences of the goods items it selects, for the triggers that
        fire; the same items as `routing.selected_items` gives for each trigger alone."""
        header = (declaration.type, declaration.destination_country)
        holds = self._header_holds.get(header)
        if holds is None:
            holds = tuple(match.header_holds(declaration) for match in self._matches)
            self._header_holds[header] = holds
        selected: dict[int, set[int]] = {}
        every_item = {item.sequence for item in declaration.items}
        for number in self._whole:
            if holds[number] and every_item:
                selected[number] = set(every_item)
        header_documents = frozenset(doc.type_code for doc in declaration.documents)
        for item in declaration.items:
            candidates = [
                number
                for length in self._prefix_lengths
                for number in self._by_prefix.get(item.hs_code[:length], ())
            ]
            for number in (*candidates, *self._unprefixed):
                if holds[number] and self._matches[number].item_holds(item, header_documents):
                    selected.setdefault(number, set()).add(item.sequence)
        return selected


class RuleBook(_Rules):
    """Every agency's rules, keyed by agency code. All twelve agencies must be present."""

    agencies: dict[str, AgencyRules]  # keys are checked through each agency's code

    @model_validator(mode="before")
    @classmethod
    def _code_from_table_name(cls, data: object) -> object:
        """`[agencies.food]` names the agency once; copy the name into its `code`."""
        if isinstance(data, dict) and isinstance(data.get("agencies"), dict):
            agencies = {
                key: {"code": key, **value} if isinstance(value, dict) else value
                for key, value in data["agencies"].items()
            }
            data = {**data, "agencies": agencies}
        return data

    @field_validator("agencies")
    @classmethod
    def _complete_and_consistent(cls, agencies: dict[str, AgencyRules]) -> dict[str, AgencyRules]:
        for key, agency in agencies.items():
            if agency.code != key:
                raise ValueError(
                    f"[agencies.{key}] says code = {agency.code!r}: leave code out or make it match"
                )
        missing = [code for code in AGENCY_CODES if code not in agencies]
        if missing:
            raise ValueError(
                f"missing {', '.join(missing)}; all {len(AGENCY_CODES)} must be listed"
            )
        seen: set[str] = set()
        for agency in agencies.values():
            for trigger in agency.triggers:
                if trigger.id in seen:
                    raise ValueError(
                        f"trigger id {trigger.id!r} of {agency.code} is already used: "
                        "ids must be unique, traders see them as reasons"
                    )
                seen.add(trigger.id)
        return agencies

    def agency(self, code: str) -> AgencyRules:
        return self.agencies[code]

    def in_order(self) -> tuple[AgencyRules, ...]:
        """Agencies in AGENCY_CODES order, so plans and explanations read the same every time."""
        return tuple(self.agencies[code] for code in AGENCY_CODES)

    @cached_property
    def index(self) -> TriggerIndex:
        """The triggers compiled for routing, in AGENCY_CODES then rules-file order."""
        return TriggerIndex(self.in_order())

    def trigger(self, trigger_id: str) -> Trigger | None:
        for agency in self.agencies.values():
            for trigger in agency.triggers:
                if trigger.id == trigger_id:
                    return trigger
        return None


def parse_rules(text: str, source: str) -> RuleBook:
    """Parse and validate rules from TOML text; `source` names the file in error messages."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise RulesError(f"rules file {source} is not valid TOML: {exc}") from exc
    try:
        return RuleBook.model_validate(data)
    except ValidationError as exc:
        problems = []
        for detail in exc.errors(include_url=False):
            path = ".".join(str(part) for part in detail["loc"]) or "(rules)"
            problems.append(f"  {path}: {detail['msg'].removeprefix('Value error, ')}")
        raise RulesError(
            f"rules file {source} is invalid; fix these fields:\n" + "\n".join(problems)
        ) from exc


def load_rules(path: Path | None = None) -> RuleBook:
    """Load the rules from `path`, or the default rules shipped in the package when None."""
    if path is None:
        package, name = DEFAULT_RULES
        source = f"{package.replace('.', '/')}/{name} (package default)"
        try:
            text = resources.files(package).joinpath(name).read_text(encoding="utf-8")
        except (OSError, ModuleNotFoundError) as exc:
            raise RulesError(f"rules file {source} cannot be read: {exc}") from exc
        return parse_rules(text, source)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise RulesError(
            f"rules file {path} does not exist: check SWB_RULES_FILE or leave it unset "
            "to use the rules shipped in the package"
        ) from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise RulesError(f"rules file {path} cannot be read: {exc}") from exc
    return parse_rules(text, str(path))

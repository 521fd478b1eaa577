"""The trader's declaration, aligned with the WCO Data Model.

`Declaration > GoodsShipment > GovernmentAgencyGoodsItem` is flattened to what a single window
routes on: a header, the parties, transport, countries, the invoice, goods items and the
additional documents (LPCO). Validation names the field path and says what is wrong.
"""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)

from broker.core.reference import (
    MAX_GOODS_ITEMS,
    check_country,
    check_currency,
    check_hs_code,
)


def _utc_millis(value: datetime) -> datetime:
    """Avro timestamp-millis keeps milliseconds in UTC; normalise so round trips are exact."""
    if value.tzinfo is UTC and not value.microsecond % 1000:
        return value  # already normalised (decoded Avro, our own clock): the slow path's result
    if value.tzinfo is None:
        raise ValueError("timestamp must include a time zone, e.g. 2026-11-30T08:00:00Z")
    try:
        value = value.astimezone(UTC)
    except OverflowError as exc:  # e.g. 0001-01-01T00:00:00+01:00 is before year 1 in UTC
        raise ValueError("timestamp is out of range once converted to UTC") from exc
    return value.replace(microsecond=value.microsecond // 1000 * 1000)


Timestamp = Annotated[datetime, AfterValidator(_utc_millis)]
CountryCode = Annotated[str, AfterValidator(check_country)]
CurrencyCode = Annotated[str, AfterValidator(check_currency)]
HsCode = Annotated[str, AfterValidator(check_hs_code)]
# Built once: parsing the exponent on every validation was half the cost of the quantize.
_CENTS = Decimal("0.01")
_GRAMS = Decimal("0.001")


def _not_a_sequence(value: object) -> object:
    """pydantic hands a list to `Decimal()`, which reads three items as (sign, digits,
    exponent) and raises a plain ValueError that escapes validation as a crash (found by
    schemathesis: `"gross_mass_kg": [1, null, [[290]]]`). An amount is a number or a string."""
    if isinstance(value, list | tuple):
        raise ValueError("must be a number or a numeric string, not a list")
    return value

# Avro decimal(18,2) for money and decimal(16,3) for masses: the model refuses what the wire
# cannot carry exactly and keeps the wire's scale, so a decoded model prints (and hashes) like
# the original. JSON carries them as strings so no float ever touches them.
Money = Annotated[
    Decimal,
    BeforeValidator(_not_a_sequence),
    Field(ge=0, max_digits=18, decimal_places=2),
    AfterValidator(lambda d: d.quantize(_CENTS)),
    PlainSerializer(str, return_type=str, when_used="json"),
]
Mass = Annotated[
    Decimal,
    BeforeValidator(_not_a_sequence),
    Field(ge=0, max_digits=16, decimal_places=3),
    AfterValidator(lambda d: d.quantize(_GRAMS)),
    PlainSerializer(str, return_type=str, when_used="json"),
]
Quantity = Mass


class Strict(BaseModel):
    """Unknown fields are errors: a misspelt field must not silently drop data."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class DeclarationType(StrEnum):
    IMPORT = "IMPORT"
    EXPORT = "EXPORT"
    TRANSIT = "TRANSIT"


class AeoStatus(StrEnum):
    """SAFE Framework Authorised Economic Operator status."""

    NONE = "NONE"
    AEOC = "AEOC"  # customs simplifications
    AEOS = "AEOS"  # security and safety
    AEOF = "AEOF"  # both


class TransportMode(StrEnum):
    """UN/ECE Recommendation 19 modes of transport."""

    SEA = "SEA"
    RAIL = "RAIL"
    ROAD = "ROAD"
    AIR = "AIR"
    POSTAL = "POSTAL"
    FIXED_INSTALLATION = "FIXED_INSTALLATION"
    INLAND_WATERWAY = "INLAND_WATERWAY"


class Incoterm(StrEnum):
    """Incoterms 2020."""

    EXW = "EXW"
    FCA = "FCA"
    CPT = "CPT"
    CIP = "CIP"
    DAP = "DAP"
    DPU = "DPU"
    DDP = "DDP"
    FAS = "FAS"
    FOB = "FOB"
    CFR = "CFR"
    CIF = "CIF"


class Party(Strict):
    """WCO DM Declarant / Importer / Exporter."""

    name: str = Field(min_length=1, max_length=70)
    identifier: str = Field(
        min_length=2, max_length=35, description="EORI, TIN or national trader id (WCO DM ID)"
    )
    country: CountryCode
    aeo_status: AeoStatus = AeoStatus.NONE


class Transport(Strict):
    """WCO DM BorderTransportMeans and the goods' arrival or departure."""

    mode: TransportMode
    means_id: str = Field(min_length=1, max_length=35, description="vessel IMO, flight, plate")
    arrival_at: Timestamp | None = None
    departure_at: Timestamp | None = None


class Invoice(Strict):
    """WCO DM Invoice and TradeTerms."""

    amount: Money
    currency: CurrencyCode
    incoterm: Incoterm


class AdditionalDocument(Strict):
    """WCO DM AdditionalDocument: a licence, permit, certificate or other (LPCO)."""

    type_code: str = Field(
        pattern=r"^[A-Z0-9]{4}$", description="document type, e.g. N853 (CHED-P), C400 (CITES)"
    )
    id: str = Field(min_length=1, max_length=35)
    issuer: str | None = Field(default=None, max_length=70)
    quantity_used: Quantity | None = None


class GoodsItem(Strict):
    """WCO DM GovernmentAgencyGoodsItem with its Commodity, Classification and Origin."""

    sequence: int = Field(ge=1, le=MAX_GOODS_ITEMS)
    description: str = Field(min_length=1, max_length=512)
    hs_code: HsCode
    origin_country: CountryCode
    net_mass_kg: Mass
    gross_mass_kg: Mass
    supplementary_quantity: Quantity | None = None
    supplementary_unit: str | None = Field(default=None, max_length=8)
    value: Money
    un_number: str | None = Field(
        default=None, pattern=r"^[0-9]{4}$", description="dangerous goods UN number"
    )
    cites: bool = False
    documents: tuple[AdditionalDocument, ...] = ()

    @model_validator(mode="after")
    def _net_not_above_gross(self) -> Self:
        if self.net_mass_kg > self.gross_mass_kg:
            raise ValueError(
                f"net_mass_kg {self.net_mass_kg} is above gross_mass_kg {self.gross_mass_kg}"
            )
        return self

    @property
    def chapter(self) -> str:
        return self.hs_code[:2]


class Declaration(Strict):
    """One goods declaration as the trader lodges it (WCO DM Declaration)."""

    lrn: str = Field(min_length=1, max_length=35, description="trader's own reference (WCO DM LRN)")
    type: DeclarationType
    procedure_code: str = Field(pattern=r"^[0-9]{4}$", description="customs procedure, e.g. 4000")
    issued_at: Timestamp
    customs_office: str = Field(pattern=r"^[A-Z]{2}[A-Z0-9]{6}$", description="e.g. NLRTM000")
    declarant: Party
    importer: Party | None = None
    exporter: Party | None = None
    transport: Transport
    export_country: CountryCode
    destination_country: CountryCode
    invoice: Invoice
    items: tuple[GoodsItem, ...] = Field(min_length=1)
    documents: tuple[AdditionalDocument, ...] = ()
    ucr: str | None = Field(
        default=None,
        pattern=r"^[0-9A-Z][0-9A-Z./+-]{0,34}$",
        description="WCO Unique Consignment Reference, e.g. 6DE8123456-SWM20261187: links the "
        "export and import declarations of one consignment across single windows",
    )

    @field_validator("items")
    @classmethod
    def _items_consistent(cls, items: tuple[GoodsItem, ...]) -> tuple[GoodsItem, ...]:
        if len(items) > MAX_GOODS_ITEMS:
            raise ValueError(
                f"{len(items)} goods items: a declaration holds at most {MAX_GOODS_ITEMS}"
            )
        first_index: dict[int, int] = {}
        for index, item in enumerate(items):
            if item.sequence in first_index:
                raise ValueError(
                    f"items.{index}.sequence: duplicate goods item sequence {item.sequence}"
                    f" (already used by items.{first_index[item.sequence]})"
                )
            first_index[item.sequence] = index
        return items

    def document_codes(self) -> set[str]:
        codes = {doc.type_code for doc in self.documents}
        for item in self.items:
            codes.update(doc.type_code for doc in item.documents)
        return codes


def validation_messages(error: Exception) -> list[str]:
    """Turn a pydantic ValidationError into 'path: message' lines a trader can act on."""
    from pydantic import ValidationError

    if not isinstance(error, ValidationError):
        return [str(error)]
    lines = []
    for detail in error.errors(include_url=False):
        path = ".".join(str(part) for part in detail["loc"]) or "(declaration)"
        message = detail["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return lines


def now_utc() -> datetime:
    return _utc_millis(datetime.now(UTC))

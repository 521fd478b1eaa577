"""Property tests: every valid wire model survives the Avro round trip, and no bytes crash the
decoder with anything but a CodecError."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel

from broker.core import declaration as decl
from broker.core import messages as msg
from broker.core.codec import Codec, SchemaRepository
from broker.core.reference import HS_CHAPTERS, MAX_GOODS_ITEMS
from broker.errors import CodecError

CODEC = Codec()
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

COUNTRIES = ("KE", "TZ", "UG", "NL", "DE", "BE", "FR", "US", "CN", "IN", "BR", "ZA", "AE")
CURRENCIES = ("EUR", "USD", "KES", "GBP", "CNY", "TZS")
ZONES = (UTC, timezone(timedelta(hours=3)), timezone(timedelta(hours=-5, minutes=-30)))

# Text the model keeps as is (no whitespace at either end): letters, digits, punctuation,
# symbols, from any script, with single spaces inside.
_word = st.text(st.characters(categories=("L", "N", "P", "S")), min_size=1, max_size=10)


def text(min_size: int, max_size: int) -> st.SearchStrategy[str]:
    joined = st.lists(_word, min_size=1, max_size=6).map(" ".join)
    strategy = joined.map(lambda s: s[:max_size].rstrip()).filter(lambda s: len(s) >= min_size)
    return st.just("") | strategy if min_size == 0 else strategy


free_text = st.text(max_size=40)  # fields without constraints: anything, the model strips it
sha256 = st.from_regex(r"[0-9a-f]{64}", fullmatch=True)
agency = st.sampled_from(msg.AGENCY_CODES)
version = st.integers(1, 2**63 - 1)
timestamps = st.builds(
    lambda moment, zone: moment.replace(
        microsecond=moment.microsecond // 1000 * 1000, tzinfo=UTC
    ).astimezone(zone),
    st.datetimes(datetime(2000, 1, 1), datetime(2099, 12, 31, 23, 59, 59)),
    st.sampled_from(ZONES),
)


def decimals(whole_digits: int, places: int) -> st.SearchStrategy[Decimal]:
    """Values the wire's decimal(p, s) carries exactly, at any scale up to s."""
    top = Decimal(10**whole_digits) - Decimal(1).scaleb(-places)
    return st.integers(0, places).flatmap(
        lambda scale: st.decimals(0, top, places=scale, allow_nan=False, allow_infinity=False)
    )


money = decimals(16, 2)
mass = decimals(13, 3)
hs_code = st.builds(
    lambda chapter, rest: chapter + rest,
    st.sampled_from(sorted(HS_CHAPTERS)),
    st.from_regex(r"[0-9]{4,8}", fullmatch=True),
)

party = st.builds(
    decl.Party,
    name=text(1, 70),
    identifier=text(2, 35),
    country=st.sampled_from(COUNTRIES),
    aeo_status=st.sampled_from(decl.AeoStatus),
)
transport = st.builds(
    decl.Transport,
    mode=st.sampled_from(decl.TransportMode),
    means_id=text(1, 35),
    arrival_at=st.none() | timestamps,
    departure_at=st.none() | timestamps,
)
invoice = st.builds(
    decl.Invoice,
    amount=money,
    currency=st.sampled_from(CURRENCIES),
    incoterm=st.sampled_from(decl.Incoterm),
)
document = st.builds(
    decl.AdditionalDocument,
    type_code=st.from_regex(r"[A-Z0-9]{4}", fullmatch=True),
    id=text(1, 35),
    issuer=st.none() | text(0, 70),
    quantity_used=st.none() | mass,
)
documents = st.lists(document, max_size=3).map(tuple)


@st.composite
def goods_item(draw: st.DrawFn, sequence: int) -> decl.GoodsItem:
    net, gross = sorted(draw(st.lists(mass, min_size=2, max_size=2)))
    return decl.GoodsItem(
        sequence=sequence,
        description=draw(text(1, 512)),
        hs_code=draw(hs_code),
        origin_country=draw(st.sampled_from(COUNTRIES)),
        net_mass_kg=net,
        gross_mass_kg=gross,
        supplementary_quantity=draw(st.none() | mass),
        supplementary_unit=draw(st.none() | text(0, 8)),
        value=draw(money),
        un_number=draw(st.none() | st.from_regex(r"[0-9]{4}", fullmatch=True)),
        cites=draw(st.booleans()),
        documents=draw(documents),
    )


@st.composite
def goods_items(draw: st.DrawFn, min_size: int = 1) -> tuple[decl.GoodsItem, ...]:
    unique = st.lists(st.integers(1, MAX_GOODS_ITEMS), min_size=min_size, max_size=4, unique=True)
    return tuple(draw(goods_item(sequence)) for sequence in draw(unique))


declarations = st.builds(
    decl.Declaration,
    lrn=text(1, 35),
    type=st.sampled_from(decl.DeclarationType),
    procedure_code=st.from_regex(r"[0-9]{4}", fullmatch=True),
    issued_at=timestamps,
    customs_office=st.from_regex(r"[A-Z]{2}[A-Z0-9]{6}", fullmatch=True),
    declarant=party,
    importer=st.none() | party,
    exporter=st.none() | party,
    transport=transport,
    export_country=st.sampled_from(COUNTRIES),
    destination_country=st.sampled_from(COUNTRIES),
    invoice=invoice,
    items=goods_items(),
    documents=documents,
)


@st.composite
def submissions(draw: st.DrawFn) -> msg.Submission:
    kind = draw(st.sampled_from(msg.SubmissionKind))
    cancelled = kind is msg.SubmissionKind.CANCELLATION
    return msg.Submission(
        submission_id=draw(text(1, 80)),
        version=1 if kind is msg.SubmissionKind.NEW else draw(version),
        kind=kind,
        trader_id=draw(text(1, 80)),
        channel=draw(text(1, 20)),
        received_at=draw(timestamps),
        payload_sha256=draw(sha256),
        declaration=None if cancelled else draw(declarations),
        reason=draw(st.none() | text(0, 512)),
    )


packages = st.builds(
    msg.InformationPackage,
    lrn=free_text,
    type=st.sampled_from(decl.DeclarationType),
    procedure_code=free_text,
    issued_at=timestamps,
    customs_office=free_text,
    declarant=st.none() | party,
    importer=st.none() | party,
    exporter=st.none() | party,
    transport=st.none() | transport,
    export_country=st.none() | st.sampled_from(COUNTRIES),
    destination_country=st.none() | st.sampled_from(COUNTRIES),
    invoice=st.none() | invoice,
    items=goods_items(min_size=0),
    documents=documents,
)
reasons = st.lists(free_text, max_size=3).map(tuple)
agency_requests = st.builds(
    msg.AgencyRequest,
    request_id=free_text,
    submission_id=free_text,
    version=version,
    agency=agency,
    kind=st.sampled_from(msg.RequestKind),
    requirement=st.sampled_from(msg.Requirement),
    reasons=reasons,
    deadline=timestamps,
    sent_at=timestamps,
    package=st.none() | packages,
    withdrawal_reason=st.none() | free_text,
)
agency_responses = st.builds(
    msg.AgencyResponse,
    submission_id=free_text,
    version=version,
    agency=agency,
    status=st.sampled_from(msg.AgencyStatus),
    answered_at=timestamps,
    sequence=st.integers(0, 2**63 - 1),
    reasons=reasons,
    conditions=reasons,
    documents_required=st.lists(
        st.builds(
            msg.DocumentRequest,
            type_code=free_text,
            description=free_text,
            deadline=st.none() | timestamps,
        ),
        max_size=3,
    ).map(tuple),
)
routing_plans = st.builds(
    msg.RoutingPlan,
    submission_id=free_text,
    version=version,
    kind=st.sampled_from(msg.SubmissionKind),
    trader_id=free_text,
    planned_at=timestamps,
    payload_sha256=sha256,
    agencies=st.lists(
        st.builds(
            msg.AgencyRoute,
            agency=agency,
            requirement=st.sampled_from(msg.Requirement),
            reasons=reasons,
            deadline=timestamps,
            item_sequences=st.lists(st.integers(1, MAX_GOODS_ITEMS), max_size=5).map(tuple),
        ),
        max_size=4,
    ).map(tuple),
)
decisions = st.builds(
    msg.Decision,
    decision_id=free_text,
    submission_id=free_text,
    version=version,
    trader_id=free_text,
    outcome=st.sampled_from(msg.Outcome),
    final=st.booleans(),
    decided_at=timestamps,
    payload_sha256=sha256,
    agencies=st.lists(
        st.builds(
            msg.AgencyDecision,
            agency=agency,
            requirement=st.sampled_from(msg.Requirement),
            status=st.sampled_from(msg.AgencyState),
            reasons=reasons,
            conditions=reasons,
            answered_at=st.none() | timestamps,
            deadline=timestamps,
        ),
        max_size=4,
    ).map(tuple),
    joint_inspection=st.none()
    | st.builds(msg.JointInspection, agencies=st.lists(agency, max_size=3).map(tuple)),
    documents_required=st.lists(
        st.builds(
            msg.RequiredDocument,
            agency=agency,
            type_code=free_text,
            description=free_text,
            deadline=st.none() | timestamps,
        ),
        max_size=3,
    ).map(tuple),
)

messages = st.one_of(
    submissions(), agency_requests, agency_responses, routing_plans, decisions, declarations
)


def assert_round_trip(message: BaseModel) -> None:
    data = CODEC.encode(message)
    back = CODEC.decode(data, type(message))
    assert back == message
    assert CODEC.encode(back) == data  # the wire form is canonical: same model, same bytes


@PROPERTY
@given(messages)
def test_every_valid_message_round_trips(message: BaseModel) -> None:
    assert_round_trip(message)


@PROPERTY
@given(submissions())
def test_submissions_round_trip(submission: msg.Submission) -> None:
    assert_round_trip(submission)


@PROPERTY
@given(st.sampled_from(["Submission", "AgencyResponse", "Decision"]), st.binary(max_size=200))
def test_garbage_after_a_valid_header_is_only_ever_a_codec_error(name: str, tail: bytes) -> None:
    header = _header(name)
    try:
        CODEC.decode_dict(header + tail)
    except CodecError as error:
        assert error.reason in {"truncated", "bad-datum"}


@PROPERTY
@given(st.binary(max_size=64))
def test_arbitrary_bytes_are_only_ever_a_codec_error(data: bytes) -> None:
    try:
        CODEC.decode(data, msg.AgencyResponse)
    except CodecError as error:
        assert error.reason in {
            "truncated",
            "bad-magic",
            "unknown-fingerprint",
            "unknown-schema-id",
        }


def _header(name: str) -> bytes:
    return b"\xc3\x01" + CODEC.repository.get(name).fingerprint.to_bytes(8, "little")


def test_every_record_field_and_enum_has_a_doc() -> None:
    repository = SchemaRepository()
    names = repository.names()
    assert names
    for name in names:
        schema: dict[str, Any] = json.loads((repository.directory / f"{name}.avsc").read_text())
        assert schema["doc"].strip(), name
        for field in schema.get("fields", []):
            assert isinstance(field.get("doc"), str) and field["doc"].strip(), (name, field)


def test_declaration_types_name_their_wco_data_model_class() -> None:
    repository = SchemaRepository()
    for short in (
        "Declaration",
        "Party",
        "Transport",
        "Invoice",
        "AdditionalDocument",
        "GoodsItem",
    ):
        schema = json.loads((repository.directory / f"swb.v1.{short}.avsc").read_text())
        assert schema["doc"].startswith("WCO DM: "), short
        assert all("WCO DM" in f["doc"] for f in schema["fields"] if f["name"] != "cites"), short

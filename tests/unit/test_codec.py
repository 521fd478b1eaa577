"""The Avro codec (DESIGN §4): framing, fingerprints, evolution, one error type for bad bytes."""

from __future__ import annotations

import json
import shutil
import typing
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

import fastavro.schema
import pytest
from pydantic import BaseModel

from broker.core import declaration as decl
from broker.core import messages as msg
from broker.core.codec import Codec, SchemaRepository, crc64_avro, default_schema_dir
from broker.errors import CodecError

T0 = datetime(2026, 11, 30, 8, 15, 30, 123000, tzinfo=UTC)
SHA = "3f" * 32

SCHEMA_NAMES = (
    *("Submission", "AgencyRequest", "AgencyResponse", "RoutingPlan", "Decision"),
    *("DeclarationType", "AeoStatus", "TransportMode", "Incoterm", "Party", "Transport"),
    *("Invoice", "AdditionalDocument", "GoodsItem", "Declaration", "SubmissionKind"),
    *("Requirement", "RequestKind", "InformationPackage", "AgencyStatus", "DocumentRequest"),
    *("AgencyRoute", "AgencyState", "Outcome", "AgencyDecision", "RequiredDocument"),
    "JointInspection",
    # Border management (issue 8): pre-arrival and partner-customs exchange.
    *("ArrivalNotice", "PartnerExport", "PartnerLink", "PartnerLinkStatus", "PartnerMismatch"),
    # Border management (issue 8): permits (LPCO) with quantity write-off.
    *("Permit", "PermitUsage"),
)


def declaration() -> decl.Declaration:
    """Frozen Nile perch and cut roses from Mombasa to Rotterdam, with dry ice as coolant."""
    chedp = decl.AdditionalDocument(
        type_code="N853", id="CHEDP.NL.2026.0012345", issuer="NVWA", quantity_used=Decimal("18000")
    )
    return decl.Declaration(
        lrn="RFI-2026-000123",
        type=decl.DeclarationType.IMPORT,
        procedure_code="4000",
        issued_at=T0,
        customs_office="NLRTM000",
        declarant=decl.Party(
            name="Rotterdam Fresh Imports BV",
            identifier="NL123456789",
            country="NL",
            aeo_status=decl.AeoStatus.AEOF,
        ),
        importer=decl.Party(
            name="Rotterdam Fresh Imports BV", identifier="NL123456789", country="NL"
        ),
        exporter=decl.Party(name="Lake Victoria Fish Ltd", identifier="P051234567X", country="KE"),
        transport=decl.Transport(
            mode=decl.TransportMode.SEA, means_id="IMO9321483", arrival_at=T0 + timedelta(days=2)
        ),
        export_country="KE",
        destination_country="NL",
        invoice=decl.Invoice(
            amount=Decimal("48250.00"), currency="EUR", incoterm=decl.Incoterm.CIF
        ),
        items=(
            decl.GoodsItem(
                sequence=1,
                description="Frozen Nile perch fillets",
                hs_code="0304890090",
                origin_country="KE",
                net_mass_kg=Decimal("18000.000"),
                gross_mass_kg=Decimal("19250.5"),
                value=Decimal("41000.00"),
                documents=(chedp,),
            ),
            decl.GoodsItem(
                sequence=2,
                description="Fresh cut roses",
                hs_code="060311",
                origin_country="KE",
                net_mass_kg=Decimal("1200.250"),
                gross_mass_kg=Decimal("1310.000"),
                supplementary_quantity=Decimal("24000"),
                supplementary_unit="p/st",
                value=Decimal("6850.5"),
            ),
            decl.GoodsItem(
                sequence=3,
                description="Dry ice (solid carbon dioxide) used as coolant",
                hs_code="2811210000",
                origin_country="KE",
                net_mass_kg=Decimal("400"),
                gross_mass_kg=Decimal("400"),
                value=Decimal("400.00"),
                un_number="1845",
            ),
        ),
        documents=(decl.AdditionalDocument(type_code="N380", id="INV-88231"),),
    )


def samples() -> dict[str, BaseModel]:
    d = declaration()
    package = msg.InformationPackage(
        lrn=d.lrn,
        type=d.type,
        procedure_code=d.procedure_code,
        issued_at=d.issued_at,
        customs_office=d.customs_office,
        importer=d.importer,
        transport=d.transport,
        export_country="KE",
        items=d.items[:1],
        documents=d.items[0].documents,
    )
    deadline = T0 + timedelta(hours=4)
    return {
        "submission-new": msg.Submission(
            submission_id="NL123456789-RFI-2026-000123",
            version=1,
            kind=msg.SubmissionKind.NEW,
            trader_id="NL123456789",
            channel="rest",
            received_at=T0,
            payload_sha256=SHA,
            declaration=d,
        ),
        "submission-cancel": msg.Submission(
            submission_id="NL123456789-RFI-2026-000123",
            version=3,
            kind=msg.SubmissionKind.CANCELLATION,
            trader_id="NL123456789",
            channel="kafka",
            received_at=T0 + timedelta(hours=1),
            payload_sha256=SHA,
            reason="Consignment rerouted to Antwerp",
        ),
        "request": msg.AgencyRequest(
            request_id="req-0001",
            submission_id="NL123456789-RFI-2026-000123",
            version=1,
            agency="veterinary",
            kind=msg.RequestKind.REVIEW,
            requirement=msg.Requirement.REQUIRED,
            reasons=("HS chapter 03: fish and crustaceans",),
            deadline=deadline,
            sent_at=T0,
            package=package,
        ),
        "response": msg.AgencyResponse(
            submission_id="NL123456789-RFI-2026-000123",
            version=1,
            agency="veterinary",
            status=msg.AgencyStatus.DOCUMENTS_REQUIRED,
            answered_at=T0 + timedelta(minutes=42),
            sequence=2,
            reasons=("Health certificate missing for item 1",),
            documents_required=(
                msg.DocumentRequest(
                    type_code="C085", description="Fishery products health certificate"
                ),
            ),
        ),
        "plan": msg.RoutingPlan(
            submission_id="NL123456789-RFI-2026-000123",
            version=1,
            kind=msg.SubmissionKind.NEW,
            trader_id="NL123456789",
            planned_at=T0,
            payload_sha256=SHA,
            agencies=(
                msg.AgencyRoute(
                    agency="veterinary",
                    requirement=msg.Requirement.REQUIRED,
                    reasons=("HS chapter 03",),
                    deadline=deadline,
                    item_sequences=(1,),
                ),
                msg.AgencyRoute(
                    agency="plant",
                    requirement=msg.Requirement.MAY_BE_REQUIRED,
                    reasons=("HS chapter 06: live plants and cut flowers",),
                    deadline=deadline,
                    item_sequences=(2,),
                ),
            ),
        ),
        "decision": msg.Decision(
            decision_id="dec-0007",
            submission_id="NL123456789-RFI-2026-000123",
            version=1,
            trader_id="NL123456789",
            outcome=msg.Outcome.INSPECTION,
            final=False,
            decided_at=T0 + timedelta(minutes=50),
            payload_sha256=SHA,
            agencies=(
                msg.AgencyDecision(
                    agency="veterinary",
                    requirement=msg.Requirement.REQUIRED,
                    status=msg.AgencyState.INSPECTION,
                    reasons=("Random physical check",),
                    answered_at=T0 + timedelta(minutes=42),
                    deadline=deadline,
                ),
                msg.AgencyDecision(
                    agency="plant",
                    requirement=msg.Requirement.MAY_BE_REQUIRED,
                    status=msg.AgencyState.PENDING,
                    deadline=deadline,
                ),
            ),
            joint_inspection=msg.JointInspection(agencies=("veterinary", "customs")),
            documents_required=(
                msg.RequiredDocument(
                    agency="veterinary",
                    type_code="C085",
                    description="Fishery products health certificate",
                    deadline=deadline,
                ),
            ),
        ),
    }


@pytest.fixture(scope="module")
def codec() -> Codec:
    return Codec()


@pytest.fixture
def response() -> msg.AgencyResponse:
    sample = samples()["response"]
    assert isinstance(sample, msg.AgencyResponse)
    return sample


def copy_schemas(target: Path) -> Path:
    shutil.copytree(default_schema_dir(), target)
    return target


def expect_error(reason: str, call: typing.Callable[[], object]) -> CodecError:
    with pytest.raises(CodecError) as caught:
        call()
    assert caught.value.reason == reason, str(caught.value)
    assert str(caught.value)
    return caught.value


# --- round trips and framing --------------------------------------------------------------


@pytest.mark.parametrize("key", list(samples()))
def test_every_message_type_round_trips(codec: Codec, key: str) -> None:
    message = samples()[key]
    data = codec.encode(message)
    assert codec.decode(data, type(message)) == message
    name, record = codec.decode_dict(data)
    assert name == f"swb.v1.{type(message).__name__}"
    assert codec.encode_dict(name, record) == data


def test_decimals_keep_their_value_at_the_wire_scale(codec: Codec) -> None:
    """Avro decimal has a fixed scale: 19250.5 comes back as 19250.500, equal in value."""
    submission = samples()["submission-new"]
    assert isinstance(submission, msg.Submission)
    back = codec.decode(codec.encode(submission), msg.Submission)
    assert back.declaration is not None
    mass = back.declaration.items[0].gross_mass_kg
    assert mass == Decimal("19250.5")
    assert mass.as_tuple().exponent == -3


def test_single_object_header_is_magic_and_little_endian_fingerprint(
    codec: Codec, response: msg.AgencyResponse
) -> None:
    data = codec.encode(response)
    info = codec.repository.get("swb.v1.AgencyResponse")
    expected = bytes.fromhex(fastavro.schema.fingerprint(info.canonical, "CRC-64-AVRO"))
    assert data[:2] == b"\xc3\x01"
    assert data[2:10] == expected == info.fingerprint.to_bytes(8, "little")


def test_own_crc64_avro_matches_fastavro_for_every_schema() -> None:
    repository = SchemaRepository()
    names = repository.names()
    assert set(names) == {f"swb.v1.{name}" for name in SCHEMA_NAMES}
    for name in names:
        canonical = repository.get(name).canonical
        expected = fastavro.schema.fingerprint(canonical, "CRC-64-AVRO")
        assert crc64_avro(canonical.encode()).to_bytes(8, "little").hex() == expected, name
    assert crc64_avro(b"") == 0xC15D213AA4D7A795  # the spec's EMPTY value


def test_repository_defaults_to_the_top_level_schemas_directory() -> None:
    repository = SchemaRepository()
    assert repository.directory == Path(__file__).resolve().parents[2] / "schemas"
    assert repository.get("Submission") is repository.get("swb.v1.Submission")  # parsed once


def test_confluent_framing_round_trips_through_the_registry(response: msg.AgencyResponse) -> None:
    registry = {7: SchemaRepository().expanded("swb.v1.AgencyResponse")}
    calls: list[int] = []

    def lookup(schema_id: int) -> dict[str, Any] | None:
        calls.append(schema_id)
        return registry.get(schema_id)

    codec = Codec(registry_lookup=lookup)
    data = codec.encode(response, confluent_id=7)
    assert data[:5] == b"\x00\x00\x00\x00\x07"
    assert codec.decode(data, msg.AgencyResponse) == response
    assert codec.decode(data, msg.AgencyResponse) == response
    assert calls == [7]  # cached after the first lookup
    unknown = b"\x00\x00\x00\x00\x08" + data[5:]
    expect_error("unknown-schema-id", lambda: codec.decode(unknown, msg.AgencyResponse))


def test_confluent_framing_without_a_registry_is_refused(
    codec: Codec, response: msg.AgencyResponse
) -> None:
    data = codec.encode(response, confluent_id=1)
    expect_error("unknown-schema-id", lambda: codec.decode_dict(data))


def test_schemas_mirror_the_models_field_for_field() -> None:
    """Names, order, optionality and defaults must agree, or the round trip cannot hold."""
    repository = SchemaRepository()
    models = {
        name: obj
        for module in (decl, msg)
        for name, obj in vars(module).items()
        if isinstance(obj, type) and obj.__module__ == module.__name__
    }
    for fullname in repository.names():
        raw = json.loads((repository.directory / f"{fullname}.avsc").read_text())
        model = models[raw["name"]]
        if raw["type"] == "enum":
            assert issubclass(model, Enum)
            assert raw["symbols"] == [member.value for member in model], fullname
            continue
        assert issubclass(model, BaseModel)
        fields = model.model_fields
        assert [f["name"] for f in raw["fields"]] == list(fields), fullname
        for field in raw["fields"]:
            info = fields[field["name"]]
            optional = type(None) in typing.get_args(info.annotation)
            assert (isinstance(field["type"], list) and field["type"][0] == "null") == optional
            assert ("default" in field) == (not info.is_required()), (fullname, field["name"])


# --- errors: always CodecError with a reason ----------------------------------------------


def test_unknown_fingerprint(codec: Codec, response: msg.AgencyResponse) -> None:
    data = codec.encode(response)
    forged = data[:2] + bytes(8) + data[10:]
    error = expect_error("unknown-fingerprint", lambda: codec.decode(forged, msg.AgencyResponse))
    assert "0000000000000000" in str(error)


@pytest.mark.parametrize("keep", [1, 5, 9, 10, 11, -1])
def test_truncated_bytes(codec: Codec, response: msg.AgencyResponse, keep: int) -> None:
    data = codec.encode(response)
    expect_error("truncated", lambda: codec.decode(data[:keep], msg.AgencyResponse))


def test_empty_bytes(codec: Codec) -> None:
    expect_error("truncated", lambda: codec.decode(b"", msg.AgencyResponse))


@pytest.mark.parametrize(
    "data",
    [b'{"submission_id": "x"}', b"\xc3\x02" + bytes(20), b"\x01garbage", b"\xff" * 64],
)
def test_wrong_magic_and_garbage(codec: Codec, data: bytes) -> None:
    expect_error("bad-magic", lambda: codec.decode(data, msg.Submission))


def test_garbage_after_a_valid_header(codec: Codec, response: msg.AgencyResponse) -> None:
    header = codec.encode(response)[:10]
    expect_error("bad-datum", lambda: codec.decode_dict(header + b"\x02\xff\xfe"))
    expect_error("bad-datum", lambda: codec.decode_dict(codec.encode(response) + b"\x00"))


def test_record_failing_validation_is_invalid_record(
    codec: Codec, response: msg.AgencyResponse
) -> None:
    record = response.model_dump(mode="python") | {"version": 0}
    data = codec.encode_dict("swb.v1.AgencyResponse", record)
    error = expect_error("invalid-record", lambda: codec.decode(data, msg.AgencyResponse))
    assert "version" in str(error)
    assert codec.decode_dict(data)[1]["version"] == 0  # the dict path does not validate


def test_decoding_as_the_wrong_model(codec: Codec, response: msg.AgencyResponse) -> None:
    data = codec.encode(response)
    expect_error("unexpected-schema", lambda: codec.decode(data, msg.Submission))


@pytest.mark.parametrize(
    "change",
    [
        {"status": "MAYBE"},
        {"answered_at": "yesterday"},
        {"unexpected": 1},
        {"version": 2**63},
    ],
)
def test_unencodable_records(
    codec: Codec, response: msg.AgencyResponse, change: dict[str, Any]
) -> None:
    record = response.model_dump(mode="python") | change
    expect_error("unencodable", lambda: codec.encode_dict("AgencyResponse", record))


def test_missing_required_field_is_unencodable(codec: Codec, response: msg.AgencyResponse) -> None:
    record = response.model_dump(mode="python")
    del record["agency"]
    expect_error("unencodable", lambda: codec.encode_dict("AgencyResponse", record))


def test_misspelt_nested_field_is_unencodable(codec: Codec) -> None:
    """Nested records sit behind unions the codec names up front; they are still checked."""
    record = samples()["submission-new"].model_dump(mode="python")
    record["declaration"]["importer"]["aeo"] = "AEOF"
    expect_error("unencodable", lambda: codec.encode_dict("Submission", record))
    record["declaration"]["importer"] = "Rotterdam Fresh Imports BV"
    expect_error("unencodable", lambda: codec.encode_dict("Submission", record))


def test_unencodable_model_and_unknown_schema(codec: Codec, response: msg.AgencyResponse) -> None:
    huge = response.model_copy(update={"sequence": 2**64})  # the model has no upper bound
    expect_error("unencodable", lambda: codec.encode(huge))
    expect_error("unknown-schema", lambda: codec.encode_dict("swb.v1.Nothing", {}))
    expect_error("unencodable", lambda: codec.encode(response, confluent_id=-1))


# --- schema evolution -------------------------------------------------------------------


def _rewrite_agency_response(
    directory: Path, change: typing.Callable[[dict[str, Any]], None]
) -> None:
    path = directory / "swb.v1.AgencyResponse.avsc"
    schema = json.loads(path.read_text())
    change(schema)
    path.write_text(json.dumps(schema))


def test_newer_reader_reads_data_from_the_current_writer(
    tmp_path: Path, codec: Codec, response: msg.AgencyResponse
) -> None:
    newer = copy_schemas(tmp_path / "v2")
    added = {"name": "channel", "type": "string", "default": "kafka", "doc": "How it arrived."}
    _rewrite_agency_response(newer, lambda schema: schema["fields"].append(added))
    reader = Codec(SchemaRepository(newer))
    data = codec.encode(response)
    expect_error("unknown-fingerprint", lambda: reader.decode_dict(data))

    reader.register_writer_schema(codec.repository.expanded("swb.v1.AgencyResponse"))
    name, record = reader.decode_dict(data)
    assert name == "swb.v1.AgencyResponse"
    assert record == response.model_dump(mode="python") | {
        "channel": "kafka",
        "reasons": list(response.reasons),
        "conditions": [],
        "documents_required": [d.model_dump() for d in response.documents_required],
    }


def test_current_reader_reads_data_from_an_older_writer(
    tmp_path: Path, codec: Codec, response: msg.AgencyResponse
) -> None:
    older = copy_schemas(tmp_path / "v0")
    _rewrite_agency_response(
        older, lambda s: s.update(fields=[f for f in s["fields"] if f["name"] != "conditions"])
    )
    old_codec = Codec(SchemaRepository(older))
    record = response.model_dump(mode="python")
    del record["conditions"]
    data = old_codec.encode_dict("AgencyResponse", record)
    expect_error("unknown-fingerprint", lambda: codec.decode(data, msg.AgencyResponse))

    fingerprint = codec.register_writer_schema(old_codec.repository.expanded("AgencyResponse"))
    assert data[2:10] == fingerprint.to_bytes(8, "little")
    assert codec.decode(data, msg.AgencyResponse) == response


def test_incompatible_writer_schema(tmp_path: Path, response: msg.AgencyResponse) -> None:
    older = copy_schemas(tmp_path / "bad")

    def sequence_as_string(schema: dict[str, Any]) -> None:
        for field in schema["fields"]:
            if field["name"] == "sequence":
                field["type"] = "string"

    _rewrite_agency_response(older, sequence_as_string)
    old_codec = Codec(SchemaRepository(older))
    data = old_codec.encode_dict("AgencyResponse", response.model_dump() | {"sequence": "two"})
    codec = Codec()
    codec.register_writer_schema(old_codec.repository.expanded("AgencyResponse"))
    expect_error("incompatible-schema", lambda: codec.decode(data, msg.AgencyResponse))


def test_bad_writer_schema_is_refused(codec: Codec) -> None:
    expect_error("bad-writer-schema", lambda: codec.register_writer_schema({"type": "record"}))

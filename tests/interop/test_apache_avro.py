"""The apache `avro` package, an independent implementation, agrees with our codec on schemas,
fingerprints and data: an agency using any Avro library can read what we write."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import avro.io
import avro.schema
import pytest
from pydantic import BaseModel

from broker.core import declaration as decl
from broker.core import messages as msg
from broker.core.codec import Codec

T0 = datetime(2026, 11, 30, 8, 0, 0, 250000, tzinfo=UTC)
CODEC = Codec()


def goods_item() -> decl.GoodsItem:
    return decl.GoodsItem(
        sequence=1,
        description="Frozen Nile perch fillets",
        hs_code="0304890090",
        origin_country="KE",
        net_mass_kg=Decimal("18000.5"),
        gross_mass_kg=Decimal("19250.125"),
        supplementary_quantity=Decimal("1200"),
        supplementary_unit="kg",
        value=Decimal("41000.99"),
        documents=(decl.AdditionalDocument(type_code="N853", id="CHEDP.NL.2026.1", issuer="NVWA"),),
    )


def submission() -> msg.Submission:
    return msg.Submission(
        submission_id="NL123456789-RFI-1",
        version=1,
        kind=msg.SubmissionKind.NEW,
        trader_id="NL123456789",
        channel="rest",
        received_at=T0,
        payload_sha256="0f" * 32,
        declaration=decl.Declaration(
            lrn="RFI-1",
            type=decl.DeclarationType.IMPORT,
            procedure_code="4000",
            issued_at=T0,
            customs_office="NLRTM000",
            declarant=decl.Party(name="Rotterdam Fresh Imports BV", identifier="NL1", country="NL"),
            exporter=decl.Party(
                name="Lake Victoria Fish Ltd",
                identifier="P051234567X",
                country="KE",
                aeo_status=decl.AeoStatus.AEOS,
            ),
            transport=decl.Transport(mode=decl.TransportMode.AIR, means_id="KQ1234"),
            export_country="KE",
            destination_country="NL",
            invoice=decl.Invoice(
                amount=Decimal("48250"), currency="EUR", incoterm=decl.Incoterm.CIP
            ),
            items=(goods_item(),),
        ),
    )


def messages() -> list[BaseModel]:
    return [
        submission(),
        msg.AgencyResponse(
            submission_id="NL123456789-RFI-1",
            version=2,
            agency="food",
            status=msg.AgencyStatus.CLEARED_WITH_CONDITIONS,
            answered_at=T0 + timedelta(minutes=5),
            sequence=1,
            conditions=("Keep below -18 °C until release",),
            documents_required=(
                msg.DocumentRequest(
                    type_code="C085", description="Health certificate", deadline=T0
                ),
            ),
        ),
        msg.Decision(
            decision_id="dec-1",
            submission_id="NL123456789-RFI-1",
            version=2,
            trader_id="NL123456789",
            outcome=msg.Outcome.RELEASED_WITH_CONDITIONS,
            final=True,
            decided_at=T0,
            payload_sha256="0f" * 32,
            joint_inspection=msg.JointInspection(agencies=("food", "customs")),
        ),
    ]


def apache_schema(model: type[BaseModel]) -> avro.schema.Schema:
    expanded = CODEC.repository.expanded(model.__name__)
    return avro.schema.parse(json.dumps(expanded))


@pytest.mark.parametrize("message", messages(), ids=lambda m: type(m).__name__)
def test_apache_avro_reads_what_we_write(message: BaseModel) -> None:
    data = CODEC.encode(message)
    schema = apache_schema(type(message))
    decoder = avro.io.BinaryDecoder(io.BytesIO(data[10:]))
    record = avro.io.DatumReader(schema).read(decoder)
    assert record == CODEC.decode_dict(data)[1]
    assert type(message).model_validate(record) == message


@pytest.mark.parametrize("message", messages(), ids=lambda m: type(m).__name__)
def test_we_read_what_apache_avro_writes(message: BaseModel) -> None:
    """The record is given at the schema's scale (48250.00, not 48250): apache avro (Python)
    writes a Decimal's digits as they are, without rescaling, so Decimal("48250") would be read
    back as 482.50 by any reader. fastavro, and so our codec, rescales."""
    data = CODEC.encode(message)
    record = CODEC.decode_dict(data)[1]
    buffer = io.BytesIO()
    buffer.write(data[:10])
    avro.io.DatumWriter(apache_schema(type(message))).write(record, avro.io.BinaryEncoder(buffer))
    assert buffer.getvalue() == data
    assert CODEC.decode(buffer.getvalue(), type(message)) == message


@pytest.mark.parametrize("name", CODEC.repository.names())
def test_fingerprints_agree_with_apache_avro(name: str) -> None:
    """Same canonical form and CRC-64-AVRO, except one known apache-avro (Python) deviation:
    it writes a logical type's base as {"type":"long"} where the spec's [PRIMITIVES] rule, Java
    and fastavro write "long". Agencies computing fingerprints with it must normalise that."""
    ours = CODEC.repository.get(name)
    theirs = avro.schema.parse(json.dumps(CODEC.repository.expanded(name)))
    canonical = theirs.canonical_form
    for primitive in ("bytes", "long"):
        canonical = canonical.replace(f'{{"type":"{primitive}"}}', f'"{primitive}"')
    assert canonical == ours.canonical
    if canonical == theirs.canonical_form:
        assert theirs.fingerprint("CRC-64-AVRO") == ours.fingerprint.to_bytes(8, "little")

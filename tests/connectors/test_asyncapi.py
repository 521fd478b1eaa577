"""The AsyncAPI document is valid AsyncAPI 3.0 (checked against the official JSON Schema, which
also checks every Avro payload schema) and says what the wire and the topics say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import fastavro
import jsonschema
import pytest
import yaml
from click.testing import CliRunner
from fastavro.schema import to_parsing_canonical_form

from broker.asyncapi import asyncapi_document
from broker.cli import main
from broker.core.codec import SchemaRepository
from broker.core.messages import AGENCY_CODES
from broker.core.topics import Topics

SPEC = Path(__file__).with_name("asyncapi-3.0.0.schema.json")


@pytest.fixture(scope="module")
def validator() -> jsonschema.protocols.Validator:
    schema = json.loads(SPEC.read_text())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def errors(validator: jsonschema.protocols.Validator, document: dict[str, Any]) -> list[str]:
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]


def test_document_is_valid_asyncapi_3(validator: jsonschema.protocols.Validator) -> None:
    document = asyncapi_document()
    assert document["asyncapi"] == "3.0.0"
    assert errors(validator, document) == []


def test_validation_would_catch_a_broken_document(
    validator: jsonschema.protocols.Validator,
) -> None:
    document = asyncapi_document()
    document["operations"]["sendDecisions"]["action"] = "publish"  # AsyncAPI 2 wording
    document["components"]["messages"]["Decision"]["payload"]["schema"]["type"] = "recrod"
    found = errors(validator, document)
    assert any("operations" in e for e in found)
    assert any("components" in e for e in found)


def test_document_follows_topics_and_schemas() -> None:
    topics = Topics("prod")
    document = asyncapi_document(topics, server="kafka.example:9093", partitions=12)
    channels = document["channels"]
    assert channels["agencyRequests"]["address"] == "prod.agency.{agency}.requests"
    assert channels["agencyResponses"]["parameters"]["agency"]["enum"] == list(AGENCY_CODES)
    assert channels["decisions"]["bindings"]["kafka"] == {
        "topic": "prod.decisions",
        "partitions": 12,
        "bindingVersion": "0.5.0",
    }
    assert "aggregatorChangelog" not in channels  # internal
    repository = SchemaRepository()
    for name in ("Submission", "AgencyRequest", "AgencyResponse", "RoutingPlan", "Decision"):
        payload = document["components"]["messages"][name]["payload"]
        published = fastavro.parse_schema(payload["schema"])  # still Avro, and the same one
        assert to_parsing_canonical_form(published) == repository.get(name).canonical
    actions = {op["channel"]["$ref"]: op["action"] for op in document["operations"].values()}
    assert actions["#/channels/agencyRequests"] == "send"
    assert actions["#/channels/agencyResponses"] == "receive"
    assert document["servers"]["kafka"]["host"] == "kafka.example:9093"


def test_swb_asyncapi_prints_json_and_yaml(validator: jsonschema.protocols.Validator) -> None:
    runner = CliRunner()
    as_json = runner.invoke(main, ["asyncapi"])
    assert as_json.exit_code == 0, as_json.output
    as_yaml = runner.invoke(main, ["asyncapi", "--format", "yaml", "--server", "k:9092"])
    assert as_yaml.exit_code == 0, as_yaml.output
    from_yaml = yaml.safe_load(as_yaml.output)
    assert from_yaml["servers"]["kafka"]["host"] == "k:9092"
    assert errors(validator, json.loads(as_json.output)) == []
    assert errors(validator, from_yaml) == []

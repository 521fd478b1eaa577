"""Against `swb run` as a subprocess: `swb submit` and `swb status` as a clerk types them, and a
schemathesis run over /openapi.json finding no 5xx and no answer outside the schema."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from gateway_stack import KEY_A, KEY_B, beef, body
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from swb_server import SwbServer, swb_run

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]


@pytest.fixture(scope="module")
def server(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SwbServer]:
    with swb_run(kafka_bootstrap, tmp_path_factory.mktemp("swb-run")) as running:
        yield running


def test_swb_submit_and_status(server: SwbServer, tmp_path: Path) -> None:
    declaration = tmp_path / "beef.json"
    declaration.write_bytes(body(beef("BEEF-CLI-1")))
    submitted = server.swb("submit", str(declaration))
    assert submitted.returncode == 0, submitted.stderr
    accepted = json.loads(submitted.stdout)
    sid = accepted["submission_id"]
    assert accepted["version"] == 1 and accepted["status_url"] == f"/v1/submissions/{sid}"

    deadline = time.monotonic() + 30
    while True:  # the router and the aggregator of `swb run` issue the first decision
        status = server.swb("status", sid)
        assert status.returncode == 0, status.stderr
        if "PENDING" in status.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert sid in status.stdout and "LRN BEEF-CLI-1" in status.stdout
    assert "PENDING" in status.stdout and "customs" in status.stdout
    assert "may still be amended" in status.stdout

    as_json = json.loads(server.swb("status", sid, "--json").stdout)
    assert as_json["submission_id"] == sid and as_json["version"] == 1

    others = server.swb("status", sid, key=KEY_B)
    assert others.returncode == 2 and "No such submission" in others.stderr

    invalid = tmp_path / "invalid.json"
    broken = beef("BEEF-CLI-2")
    broken["items"][0]["hs_code"] = "1"
    invalid.write_bytes(body(broken))
    refused = server.swb("submit", str(invalid))
    assert refused.returncode == 2 and "items.0.hs_code" in refused.stderr


@pytest.fixture
def api_schema(server: SwbServer) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(f"{server.url}/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.include(method="POST", path="/v1/submissions").parametrize()
@settings(
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow],
)
def test_openapi_no_server_error_and_no_answer_outside_the_schema(
    case: schemathesis.Case, server: SwbServer
) -> None:
    case.call_and_validate(
        headers={"X-API-Key": KEY_A},
        checks=[
            not_a_server_error,
            status_code_conformance,
            content_type_conformance,
            response_headers_conformance,
            response_schema_conformance,
        ],
    )


def test_openapi_documents_the_contract_paths_with_examples(server: SwbServer) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    paths = document["paths"]
    for path in (
        "/v1/submissions",
        "/v1/submissions/{submission_id}",
        "/v1/submissions/{submission_id}/events",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths
    assert {"get", "put", "delete"} <= set(paths["/v1/submissions/{submission_id}"])
    post = paths["/v1/submissions"]["post"]
    example = post["requestBody"]["content"]["application/json"]["examples"]["frozen-beef"]
    assert example["value"]["lrn"]
    assert "application/problem+json" in post["responses"]["422"]["content"]
    assert "Retry-After" in post["responses"]["503"]["headers"]
    assert document["components"]["schemas"]["Declaration"]["additionalProperties"] is False

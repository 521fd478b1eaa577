"""The schema-registry client and Confluent framing end to end.

No schema registry server can be installed here, so `RegistryDouble` plays one: a small HTTP
server (stdlib, in a thread) implementing the two documented Confluent Schema Registry REST
endpoints the client uses, `POST /subjects/{subject}/versions` (register; an identical schema
keeps its global id) and `GET /schemas/ids/{id}` (404 with error_code 40403 when unknown), with
the `application/vnd.schemaregistry.v1+json` content type. It is a double, not the product."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

import fastavro
import pytest
from agency_flow import (
    DecisionWatch,
    clears,
    kafka_settings,
    running,
    sample_submission,
    submit,
)

from broker.bootstrap import open_app
from broker.core.codec import Codec
from broker.core.declaration import now_utc
from broker.core.layout import topic_schemas
from broker.core.messages import AgencyRequest, AgencyResponse, AgencyStatus
from broker.core.topics import Topics
from broker.errors import CodecError, TransportError
from broker.runtime.registry import RegistryError, SchemaRegistryClient, subject_for
from connectors.testing import T0

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryDouble(ThreadingHTTPServer):
    """Subjects -> versions of schema ids; schemas by global id; a log of every request."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.ids: dict[str, int] = {}  # schema text -> global id
        self.subjects: dict[str, list[int]] = {}
        self.requests: list[tuple[str, str]] = []
        self.failing = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def schema_text(self, schema_id: int) -> str | None:
        return next((text for text, i in self.ids.items() if i == schema_id), None)


class _Handler(BaseHTTPRequestHandler):
    server: RegistryDouble

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", CONTENT_TYPE)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self) -> None:
        self.server.requests.append(("POST", self.path))
        parts = self.path.strip("/").split("/")
        if self.server.failing:
            return self._reply(500, {"error_code": 50001, "message": "Error in the backend"})
        if len(parts) != 3 or parts[0] != "subjects" or parts[2] != "versions":
            return self._reply(404, {"error_code": 404, "message": "HTTP 404 Not Found"})
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        try:
            fastavro.parse_schema(json.loads(body["schema"]))
        except Exception:
            return self._reply(422, {"error_code": 42201, "message": "Invalid schema"})
        schema_id = self.server.ids.setdefault(body["schema"], len(self.server.ids) + 1)
        versions = self.server.subjects.setdefault(unquote(parts[1]), [])
        if schema_id not in versions:
            versions.append(schema_id)
        self._reply(200, {"id": schema_id})

    def do_GET(self) -> None:
        self.server.requests.append(("GET", self.path))
        parts = self.path.strip("/").split("/")
        if len(parts) == 3 and parts[:2] == ["schemas", "ids"]:
            text = self.server.schema_text(int(parts[2]))
            if text is not None:
                return self._reply(200, {"schema": text})
            return self._reply(404, {"error_code": 40403, "message": "Schema not found"})
        self._reply(404, {"error_code": 404, "message": "HTTP 404 Not Found"})


@pytest.fixture
def registry() -> Iterator[RegistryDouble]:
    server = RegistryDouble()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def cleared() -> AgencyResponse:
    return AgencyResponse(
        submission_id="S-1",
        version=1,
        agency="food",
        status=AgencyStatus.CLEARED,
        answered_at=T0,
        sequence=1,
    )


async def test_registers_topic_name_strategy_subjects_and_writes_confluent_framing(
    registry: RegistryDouble,
) -> None:
    topics = Topics("sw")
    client = SchemaRegistryClient(registry.url)
    try:
        codec = await client.codec_for(topics)
    finally:
        await client.aclose()
    assert set(registry.subjects) == {subject_for(t) for t in topic_schemas(topics)}
    assert "sw.agency.food.responses-value" in registry.subjects
    assert "sw.dlq-value" not in registry.subjects  # opaque bytes: no schema
    # One id per schema text, shared by its subjects: the flow's five and ArrivalNotice.
    assert len(registry.ids) == 6
    response_id = registry.subjects["sw.agency.food.responses-value"][0]
    assert registry.subjects["sw.agency.customs.responses-value"] == [response_id]
    data = codec.encode(cleared())
    assert data[:1] == b"\x00" and int.from_bytes(data[1:5], "big") == response_id
    assert codec.decode(data, AgencyResponse) == cleared()
    assert not any(method == "GET" for method, _ in registry.requests)  # own ids are cached


async def test_decoder_resolves_unknown_ids_once_and_refuses_unknown_ones(
    registry: RegistryDouble,
) -> None:
    writer = SchemaRegistryClient(registry.url)
    try:
        data = (await writer.codec_for(Topics("sw"))).encode(cleared())
    finally:
        await writer.aclose()
    reader_client = SchemaRegistryClient(registry.url)  # another process: an empty cache
    reader = Codec(registry_lookup=reader_client.lookup)
    try:
        assert reader.decode(data, AgencyResponse) == cleared()
        assert reader.decode(data, AgencyResponse) == cleared()
        assert reader_client.fetches == 1
        schema_id = int.from_bytes(data[1:5], "big")
        fresh = SchemaRegistryClient(registry.url)
        first = fresh.lookup(schema_id)
        assert first is not None and first["name"] == "swb.v1.AgencyResponse"
        assert fresh.lookup(schema_id) is first and fresh.fetches == 1
        assert fresh.lookup(999) is None
        await fresh.aclose()
        with pytest.raises(CodecError) as unknown:
            reader.decode(b"\x00" + (999).to_bytes(4, "big") + data[5:], AgencyResponse)
        assert unknown.value.reason == "unknown-schema-id"
    finally:
        await reader_client.aclose()


async def test_registry_outage_is_retriable_and_refusal_is_not(registry: RegistryDouble) -> None:
    client = SchemaRegistryClient(registry.url)
    try:
        registry.failing = True
        with pytest.raises(TransportError):
            await client.register("sw.submissions-value", {"type": "string"})
        registry.failing = False
        with pytest.raises(RegistryError):
            await client.register("sw.submissions-value", {"type": "nope"})
    finally:
        await client.aclose()
    down = SchemaRegistryClient("http://127.0.0.1:9")  # nothing listens on the discard port
    try:
        with pytest.raises(TransportError):
            down.lookup(1)
    finally:
        await down.aclose()


async def test_the_flow_runs_on_confluent_framing_with_a_registry(
    kafka_bootstrap: str, topic_prefix: str, registry: RegistryDouble
) -> None:
    settings = kafka_settings(kafka_bootstrap, topic_prefix, schema_registry_url=registry.url)
    async with open_app(settings) as app:
        agencies = [app.connector(code, clears(code)) for code in ("customs", "food")]
        services = (app.router().run, app.aggregator().run, *(a.run for a in agencies))
        async with DecisionWatch(app) as watch, running(*services):
            submission = sample_submission("13-cakes-malaysia-singapore", now_utc())
            await submit(app, submission)
            final = await watch.until(submission.submission_id, lambda d: d.final, "final")
        requests = [
            record
            for partition in range(2)
            for record in await app.transport.read_partition(app.topics.requests("food"), partition)
        ]
    assert final.outcome.value == "RELEASED"
    (request,) = requests
    assert request.value is not None and request.value[:1] == b"\x00"
    subject = f"{app.topics.requests('food')}-value"
    assert int.from_bytes(request.value[1:5], "big") == registry.subjects[subject][0]
    other_process = SchemaRegistryClient(registry.url)
    try:
        decoded = Codec(registry_lookup=other_process.lookup).decode(request.value, AgencyRequest)
    finally:
        await other_process.aclose()
    assert decoded.agency == "food"

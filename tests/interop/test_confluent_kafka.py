"""An agency built only from independent implementations joins the Single Window.

On the embedded broker, with the router and the aggregator running in process: librdkafka
(`confluent-kafka`) consumes the agency requests topics, the apache `avro` library decodes each
payload against the schemas in `schemas/` (expanded here from the .avsc files, not by our code)
after checking the single-object header, and the agency answers with the same two libraries,
the single-object encoding written by hand (C3 01 + little-endian CRC-64-AVRO fingerprint +
datum). The broker turns those answers into the right coordinated decision.

Tansu quirks (DESIGN §8): the idempotent producer fails, so `enable.idempotence=false` with
`acks=all`; a consumer group's rebalance takes seconds.
"""

from __future__ import annotations

import asyncio
import io
import json
import uuid
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

import avro.io
import avro.schema
from confluent_kafka import Consumer, KafkaError, Producer

from broker.bootstrap import open_app
from broker.core.intake import declare
from broker.core.messages import Decision
from broker.runtime.transport import Outgoing
from broker.settings import KafkaSettings, Settings

SCHEMAS = Path(__file__).resolve().parents[2] / "schemas"
WAIT_S = 60.0
MAGIC = b"\xc3\x01"


# --- the agency's own Avro tooling: the spec, apache avro, and the .avsc files --------------


def _crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification spells it out."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def _expanded(full_name: str) -> dict[str, Any]:
    """A self-contained schema: each named type inlined where it is first used."""
    files = {
        p.name.removesuffix(".avsc"): json.loads(p.read_text()) for p in SCHEMAS.glob("*.avsc")
    }
    defined: set[str] = set()

    def expand(node: Any) -> Any:
        if isinstance(node, str):
            if node in files and node not in defined:
                return expand(files[node])
            return node
        if isinstance(node, list):
            return [expand(branch) for branch in node]
        if not isinstance(node, dict):
            return node
        out = dict(node)
        if node.get("type") in ("record", "enum", "fixed"):
            name = node["name"]
            defined.add(name if "." in name else f"{node.get('namespace', 'swb.v1')}.{name}")
        for key in ("type", "items", "values"):
            if key in out:
                out[key] = expand(out[key])
        if "fields" in out:
            out["fields"] = [{**field, "type": expand(field["type"])} for field in out["fields"]]
        return out

    expanded: dict[str, Any] = expand(full_name)
    return expanded


class AgencyAvro:
    """One record type, as an agency using apache avro would handle it."""

    def __init__(self, name: str) -> None:
        self.schema = avro.schema.parse(json.dumps(_expanded(f"swb.v1.{name}")))
        # apache avro (Python) writes a logical type's base as {"type":"long"}; the spec's
        # canonical form (and Java, and fastavro) write "long": normalise before hashing.
        canonical = self.schema.canonical_form
        for primitive in ("bytes", "long"):
            canonical = canonical.replace(f'{{"type":"{primitive}"}}', f'"{primitive}"')
        self.header = MAGIC + _crc64_avro(canonical.encode()).to_bytes(8, "little")

    def decode(self, data: bytes) -> dict[str, Any]:
        assert data[:10] == self.header, f"not single-object {self.schema.name}: {data[:10]!r}"
        record: dict[str, Any] = avro.io.DatumReader(self.schema).read(
            avro.io.BinaryDecoder(io.BytesIO(data[10:]))
        )
        return record

    def encode(self, record: dict[str, Any]) -> bytes:
        buffer = io.BytesIO()
        buffer.write(self.header)
        avro.io.DatumWriter(self.schema).write(record, avro.io.BinaryEncoder(buffer))
        return buffer.getvalue()


# --- the agency: librdkafka in a thread -----------------------------------------------------


def run_agency(bootstrap: str, prefix: str, agency: str) -> dict[str, Any]:
    """Read one request, answer it, commit after the answer is acknowledged; return the
    request as decoded. Blocking, as a librdkafka client is."""
    requests, responses = AgencyAvro("AgencyRequest"), AgencyAvro("AgencyResponse")
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"swb-agency-{agency}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "heartbeat.interval.ms": 500,
        }
    )
    producer = Producer(
        {"bootstrap.servers": bootstrap, "acks": "all", "enable.idempotence": False}
    )
    try:
        consumer.subscribe([f"{prefix}.agency.{agency}.requests"])
        message = None
        for _ in range(int(WAIT_S / 0.5)):
            message = consumer.poll(0.5)
            if message is None:
                continue
            error = message.error()
            if error is not None and error.code() != KafkaError._PARTITION_EOF:
                raise AssertionError(f"librdkafka: {error}")
            if error is None:
                break
            message = None
        assert message is not None, f"{agency}: no request within {WAIT_S} s"
        request = requests.decode(message.value())
        food = agency == "food"
        answer = {
            "submission_id": request["submission_id"],
            "version": request["version"],
            "agency": agency,
            "status": "CLEARED_WITH_CONDITIONS" if food else "CLEARED",
            "answered_at": datetime.now(UTC),
            "sequence": 1,
            "reasons": ["checked with an independent client"],
            "conditions": ["Keep refrigerated"] if food else [],
            "documents_required": [],
        }
        delivered: list[Any] = []
        producer.produce(
            f"{prefix}.agency.{agency}.responses",
            value=responses.encode(answer),
            key=request["submission_id"].encode(),
            on_delivery=lambda error, msg: delivered.append(error or msg),
        )
        assert producer.flush(30) == 0, f"{agency}: answer not delivered"
        assert len(delivered) == 1 and not isinstance(delivered[0], KafkaError), delivered
        consumer.commit(message=message, asynchronous=False)  # after the answer: at-least-once
        return request
    finally:
        consumer.close()


# --- the test -----------------------------------------------------------------------------


async def test_agency_on_librdkafka_and_apache_avro_gets_its_answer_decided(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap,
        topic_prefix=topic_prefix,
        partitions=2,
        kafka=KafkaSettings(session_timeout_ms=6000, heartbeat_interval_ms=500),
    )
    path = Path(str(resources.files("broker.samples"))) / "13-cakes-malaysia-singapore.json"
    declaration = json.loads(path.read_text())
    declaration["lrn"] = f"INTEROP-{uuid.uuid4().hex[:8]}"
    async with open_app(settings) as app:
        submission = declare(
            json.dumps(declaration).encode(),
            trader_id="NL000000000042",
            channel="test",
            now=app.clock(),
        )
        sid = submission.submission_id
        stopping = asyncio.Event()
        watcher = await app.transport.consumer(f"watch-{topic_prefix}", [app.topics.decisions])
        try:
            async with asyncio.TaskGroup() as services:
                services.create_task(app.router().run(stopping))
                services.create_task(app.aggregator().run(stopping))
                try:
                    await app.transport.producer().send_batch(
                        [
                            Outgoing(
                                app.topics.submissions, app.codec.encode(submission), sid.encode()
                            )
                        ]
                    )
                    customs, food = await asyncio.gather(
                        asyncio.to_thread(run_agency, kafka_bootstrap, topic_prefix, "customs"),
                        asyncio.to_thread(run_agency, kafka_bootstrap, topic_prefix, "food"),
                    )
                    final = await _final_decision(app.codec, watcher, sid)
                finally:
                    stopping.set()
        finally:
            await watcher.stop()
    for request, agency in ((customs, "customs"), (food, "food")):
        assert (request["submission_id"], request["agency"]) == (sid, agency)
        assert request["kind"] == "REVIEW"
        assert request["package"]["lrn"] == declaration["lrn"]
    assert final.outcome.value == "RELEASED_WITH_CONDITIONS"
    lines = {line.agency: line for line in final.agencies}
    assert lines["customs"].status.value == "CLEARED"
    assert lines["food"].status.value == "CLEARED_WITH_CONDITIONS"
    assert lines["food"].conditions == ("Keep refrigerated",)


async def _final_decision(codec: Any, watcher: Any, sid: str) -> Decision:
    async with asyncio.timeout(WAIT_S):
        while True:
            for record in await watcher.getmany(timeout_ms=200):
                decision: Decision = codec.decode(record.value or b"", Decision)
                if decision.submission_id == sid and decision.final:
                    return decision

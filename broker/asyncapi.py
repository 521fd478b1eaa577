"""The published contract as an AsyncAPI 3.0 document, generated from `schemas/` and the topic
layout (`broker.core.layout`), so it cannot drift from what runs. `swb asyncapi` prints it.

It describes the Single Window broker as the application: it *receives* submissions and agency
responses and *sends* agency requests and decisions. An agency does the opposite on its own two
channels. Payloads are the Avro schemas, fully expanded (schemaFormat Avro 1.9.0).
"""

from __future__ import annotations

from typing import Any

import broker
from broker.core.codec import SchemaRepository
from broker.core.layout import AGENCY, Channel, channels
from broker.core.messages import AgencyState, AgencyStatus, Outcome
from broker.core.topics import Topics

__all__ = ["asyncapi_document"]

_WORST_FIRST = [o for o in reversed(Outcome) if o is not Outcome.CANCELLED]
AVRO_FORMAT = "application/vnd.apache.avro;version=1.9.0"
KAFKA_BINDING = "0.5.0"

#: What the broker does on each public channel (its point of view), and why.
_OPERATIONS: dict[str, tuple[str, str]] = {
    "submissions": ("receive", "Receive declarations (gateway or B2B traders)."),
    "arrivals": ("receive", "Receive arrival notices of declarations lodged before arrival."),
    "agencyRequests": ("send", "Send an agency its information package, or a withdrawal."),
    "agencyResponses": ("receive", "Receive an agency's answers on its own topic."),
    "decisions": ("send", "Publish the coordinated decision, on every change."),
    "deadLetters": ("send", "Dead-letter a record it cannot accept, with the reason."),
    "routing": ("send", "Publish the routing plan of each version."),
}

_FRAMING = (
    "Values are Avro single-object encoded (C3 01, the 8-byte little-endian CRC-64-AVRO "
    "fingerprint of the schema's parsing canonical form, then the datum); with a schema "
    "registry configured, Confluent framing (00, 4-byte big-endian schema id, datum) under "
    "TopicNameStrategy subjects `<topic>-value`. The first byte tells them apart."
)


def _namespaced(schema: Any) -> Any:
    """Named types as `name` + `namespace` (AsyncAPI's Avro meta-schema wants simple names);
    the same schema in Avro's eyes, references by full name stay as they are."""
    if isinstance(schema, list):
        return [_namespaced(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    converted = {key: _namespaced(value) for key, value in schema.items()}
    name = schema.get("name")
    if schema.get("type") in ("record", "enum", "fixed") and isinstance(name, str) and "." in name:
        converted["namespace"], converted["name"] = name.rsplit(".", 1)
    return converted


def _message(schema_name: str, repository: SchemaRepository) -> dict[str, Any]:
    expanded: dict[str, Any] = _namespaced(repository.expanded(schema_name))
    return {
        "name": schema_name,
        "title": schema_name,
        "summary": str(expanded.get("doc", schema_name)).split(". ")[0],
        "contentType": "application/octet-stream",
        "payload": {"schemaFormat": AVRO_FORMAT, "schema": expanded},
        "bindings": {
            "kafka": {
                "key": {"type": "string", "description": "submission_id"},
                "bindingVersion": KAFKA_BINDING,
            }
        },
    }


def _dead_letter_message() -> dict[str, Any]:
    header = {"type": "string"}
    return {
        "name": "DeadLetter",
        "title": "DeadLetter",
        "summary": "The refused record, byte for byte; headers say why and where from.",
        "contentType": "application/octet-stream",
        "headers": {
            "type": "object",
            "properties": {
                name: {**header, "description": text}
                for name, text in (
                    ("swb.error.reason", "short machine-readable cause"),
                    ("swb.error.message", "what went wrong, in a sentence"),
                    ("swb.source.topic", "topic of the refused record"),
                    ("swb.source.partition", "its partition"),
                    ("swb.source.offset", "its offset"),
                    ("swb.service", "the service that refused it"),
                )
            },
        },
        "payload": {"type": "string", "format": "binary"},
    }


def _channel(channel: Channel, topics: Topics, partitions: int) -> dict[str, Any]:
    message_name = channel.schema or "DeadLetter"
    document: dict[str, Any] = {
        "address": channel.address,
        "title": channel.id,
        "summary": channel.summary,
        "description": channel.description,
        "messages": {message_name: {"$ref": f"#/components/messages/{message_name}"}},
        "bindings": {"kafka": {"partitions": partitions, "bindingVersion": KAFKA_BINDING}},
    }
    if channel.per_agency:
        name = AGENCY.strip("{}")
        document["parameters"] = {
            name: {
                "description": "The agency code (DESIGN §3); the topic is the agency's identity.",
                "enum": list(topics.agencies),
                "examples": ["food"],
            }
        }
    else:
        document["bindings"]["kafka"]["topic"] = channel.address
    return document


def asyncapi_document(
    topics: Topics | None = None,
    *,
    server: str = "localhost:9092",
    partitions: int = 4,
    repository: SchemaRepository | None = None,
) -> dict[str, Any]:
    """The AsyncAPI 3.0.0 document for `topics` (prefix and agencies) as a JSON-ready dict."""
    topics = topics or Topics()
    repository = repository or SchemaRepository()
    public = [c for c in channels(topics) if c.public]
    messages: dict[str, Any] = {}
    for channel in public:
        if channel.schema is None:
            messages["DeadLetter"] = _dead_letter_message()
        else:
            messages[channel.schema] = _message(channel.schema, repository)
    operations = {}
    for channel in public:
        action, summary = _OPERATIONS[channel.id]
        operations[f"{action}{channel.id[0].upper()}{channel.id[1:]}"] = {
            "action": action,
            "channel": {"$ref": f"#/channels/{channel.id}"},
            "summary": summary,
            "messages": [
                {"$ref": f"#/channels/{channel.id}/messages/{channel.schema or 'DeadLetter'}"}
            ],
        }
    return {
        "asyncapi": "3.0.0",
        "id": "urn:swb:single-window-broker",
        "info": {
            "title": "Single Window Broker",
            "version": broker.__version__,
            "description": (
                "A trader submits a declaration once; each border agency concerned receives "
                "only its own information package on its requests topic and answers on its "
                "responses topic; the broker publishes one coordinated decision.\n\n"
                f"{_FRAMING}\n\nAgency statuses: {', '.join(s.value for s in AgencyStatus)}; "
                f"in decisions also {AgencyState.PENDING.value} and "
                f"{AgencyState.OVERDUE.value} (no answer past the agency's SLA). Outcome, "
                f"worst wins: {' > '.join(o.value for o in _WORST_FIRST)}; or "
                f"{Outcome.CANCELLED.value}. "
                "See docs/agency-guide.md."
            ),
            "license": {"name": "Apache-2.0"},
            "tags": [{"name": "single-window"}, {"name": "wco-data-model"}],
        },
        "defaultContentType": "application/octet-stream",
        "servers": {
            "kafka": {
                "host": server,
                "protocol": "kafka",
                "description": "The Kafka cluster. Each agency has its own principal: it may "
                "read its requests topic (in group swb-agency-<code>) and write its responses "
                "topic, nothing else (deploy/acls).",
                "security": [
                    {"$ref": "#/components/securitySchemes/scram"},
                    {"$ref": "#/components/securitySchemes/mutualTls"},
                ],
            }
        },
        "channels": {c.id: _channel(c, topics, partitions) for c in public},
        "operations": operations,
        "components": {
            "messages": messages,
            "securitySchemes": {
                "scram": {
                    "type": "scramSha512",
                    "description": "SASL/SCRAM-SHA-512 over TLS; username swb-agency-<code>.",
                },
                "mutualTls": {"type": "X509", "description": "TLS client certificates."},
            },
        },
    }

"""Confluent Schema Registry client (REST API v1), used when SWB_SCHEMA_REGISTRY_URL is set.

At start, every schema is registered under its topic's TopicNameStrategy subject
(`<topic>-value`, `POST /subjects/{subject}/versions`); the codec then writes Confluent framing
(`00` + id + datum) with the ids the registry gave. The decoder resolves ids it has not seen
with `GET /schemas/ids/{id}`, once per id (cached for the life of the process: an id's schema
never changes).

The lookup is synchronous because the codec is sans-I/O and synchronous. It is called only on a
cache miss (an id written by someone else's schema version), once per id per process; ids of
our own schemas are cached at registration and never fetched. An outage raises
TransportError (retriable: the record is not dead-lettered, the service stops and is retried);
an id the registry does not know returns None (the codec dead-letters the record).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import structlog

from broker.core.codec import Codec, SchemaRepository
from broker.core.layout import topic_schemas
from broker.core.topics import Topics
from broker.errors import SwbError, TransportError

__all__ = ["RegistryError", "SchemaRegistryClient", "subject_for"]

log = structlog.get_logger("swb.registry")

CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(SwbError):
    """The registry refused a request (an incompatible or invalid schema, a bad subject)."""


def subject_for(topic: str) -> str:
    """TopicNameStrategy: the subject of a topic's record values."""
    return f"{topic}-value"


class SchemaRegistryClient:
    """One registry. `transport`/`sync_transport` are httpx's (tests pass their own)."""

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        transport: httpx.AsyncBaseTransport | None = None,
        sync_transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Accept": CONTENT_TYPE, "Content-Type": CONTENT_TYPE}
        self._client = httpx.AsyncClient(
            base_url=self.url, timeout=timeout_s, transport=transport, headers=headers
        )
        self._sync_client = httpx.Client(
            base_url=self.url, timeout=timeout_s, transport=sync_transport, headers=headers
        )
        self._schemas: dict[int, dict[str, Any]] = {}
        self._lock = threading.Lock()
        self.fetches = 0  # GET /schemas/ids calls made: the cache keeps it at one per id

    async def aclose(self) -> None:
        await self._client.aclose()
        self._sync_client.close()

    async def register(self, subject: str, schema: Mapping[str, Any]) -> int:
        """Register `schema` under `subject` (idempotent: an identical schema keeps its id)."""
        text = json.dumps(schema, separators=(",", ":"))
        path = f"/subjects/{quote(subject, safe='')}/versions"
        try:
            response = await self._client.post(path, content=json.dumps({"schema": text}))
        except httpx.HTTPError as exc:
            raise TransportError(f"schema registry {self.url} unreachable: {exc!r}") from exc
        body = _json(response, f"register {subject}")
        schema_id = body.get("id")
        if not isinstance(schema_id, int):
            raise RegistryError(f"schema registry gave no id for {subject}: {body}")
        self._schemas.setdefault(schema_id, dict(schema))
        return schema_id

    async def register_topics(
        self, topics: Topics, repository: SchemaRepository | None = None
    ) -> dict[str, int]:
        """Register every flow topic's value schema; returns schema name -> id."""
        repository = repository or SchemaRepository()
        ids: dict[str, int] = {}
        for topic, schema_name in topic_schemas(topics).items():
            schema_id = await self.register(subject_for(topic), repository.expanded(schema_name))
            known = ids.setdefault(schema_name, schema_id)
            if known != schema_id:
                log.warning(
                    "one schema, several registry ids; writing the first",
                    schema=schema_name,
                    ids=[known, schema_id],
                    topic=topic,
                )
        log.info("schemas registered", registry=self.url, ids=ids)
        return ids

    async def codec_for(self, topics: Topics, repository: SchemaRepository | None = None) -> Codec:
        """A codec that writes Confluent framing with our ids and resolves others' ids here."""
        repository = repository or SchemaRepository()
        codec = Codec(repository, registry_lookup=self.lookup)
        codec.use_confluent_ids(await self.register_topics(topics, repository))
        return codec

    def lookup(self, schema_id: int) -> Mapping[str, Any] | None:
        """The writer schema of `schema_id` (the codec's `registry_lookup`); None if unknown."""
        with self._lock:
            cached = self._schemas.get(schema_id)
            if cached is not None:
                return cached
            self.fetches += 1
            try:
                response = self._sync_client.get(f"/schemas/ids/{schema_id}")
            except httpx.HTTPError as exc:
                raise TransportError(f"schema registry {self.url} unreachable: {exc!r}") from exc
            if response.status_code == 404:
                return None
            body = _json(response, f"fetch schema {schema_id}")
            if body.get("schemaType", "AVRO") != "AVRO":
                return None
            try:
                schema = json.loads(body["schema"])
            except (KeyError, TypeError, ValueError) as exc:
                raise RegistryError(f"registry schema {schema_id} is not JSON: {exc}") from exc
            if not isinstance(schema, dict):
                return None
            self._schemas[schema_id] = schema
            return schema


def _json(response: httpx.Response, action: str) -> dict[str, Any]:
    """The body of a successful answer; 5xx is an outage (retriable), 4xx a refusal."""
    if response.status_code >= 500:
        raise TransportError(
            f"schema registry could not {action}: HTTP {response.status_code} {response.text}"
        )
    try:
        body = response.json()
    except ValueError:
        body = {"message": response.text}
    if response.status_code >= 400 or not isinstance(body, dict):
        message = body.get("message") if isinstance(body, dict) else body
        raise RegistryError(
            f"schema registry refused to {action}: HTTP {response.status_code}: {message}"
        )
    return body

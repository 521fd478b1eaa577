"""Avro encoding of the wire models (DESIGN §4), sans I/O: bytes in, bytes out.

Single-object encoding (`C3 01` + CRC-64-AVRO fingerprint + datum) by default; Confluent framing
(`00` + schema id + datum) where a registry is configured. The first byte tells them apart.
Every failure is a `CodecError` with a short reason, so a consumer can dead-letter it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import load_schema, to_parsing_canonical_form
from fastavro.types import Schema
from pydantic import BaseModel

import broker
from broker.core.declaration import validation_messages
from broker.errors import CodecError, SwbError

__all__ = [
    "CONFLUENT_MAGIC",
    "NAMESPACE",
    "SINGLE_OBJECT_MAGIC",
    "Codec",
    "RegistryLookup",
    "SchemaInfo",
    "SchemaRepository",
    "crc64_avro",
    "default_schema_dir",
]

NAMESPACE = "swb.v1"
SINGLE_OBJECT_MAGIC = b"\xc3\x01"
CONFLUENT_MAGIC = b"\x00"
_SINGLE_OBJECT_HEADER = len(SINGLE_OBJECT_MAGIC) + 8
_CONFLUENT_HEADER = len(CONFLUENT_MAGIC) + 4

M = TypeVar("M", bound=BaseModel)
#: Schema id -> writer schema (self-contained JSON as a dict), or None / LookupError if unknown.
#: Raise a `SwbError` such as `TransportError` for an outage: it propagates, retriable.
RegistryLookup = Callable[[int], Mapping[str, Any] | None]

_EMPTY64 = 0xC15D213AA4D7A795


def _table_entry(fp: int) -> int:
    for _ in range(8):
        fp = (fp >> 1) ^ (_EMPTY64 & -(fp & 1))
    return fp


_FP_TABLE = tuple(_table_entry(index) for index in range(256))


def crc64_avro(data: bytes) -> int:
    """The Rabin CRC-64-AVRO fingerprint of the Avro spec, as single-object encoding carries."""
    fp = _EMPTY64
    for byte in data:
        fp = (fp >> 8) ^ _FP_TABLE[(fp ^ byte) & 0xFF]
    return fp


def default_schema_dir() -> Path:
    """The top-level `schemas/` of a source checkout, else the copy the wheel carries."""
    package = Path(broker.__file__).parent
    checkout = package.parent / "schemas"
    return checkout if checkout.is_dir() else package / "_schemas"


def _fullname(name: str) -> str:
    return name if "." in name else f"{NAMESPACE}.{name}"


def _strip(schema: Any) -> Any:
    """Drop fastavro's private `__` keys so the schema is plain Avro JSON again."""
    if isinstance(schema, dict):
        return {k: _strip(v) for k, v in schema.items() if not str(k).startswith("__")}
    if isinstance(schema, list):
        return [_strip(v) for v in schema]
    return schema


@dataclass(frozen=True, slots=True)
class SchemaInfo:
    """One parsed schema with its parsing canonical form and fingerprint."""

    name: str
    parsed: dict[str, Any]
    canonical: str
    fingerprint: int

    @classmethod
    def of(cls, parsed: Schema) -> SchemaInfo:
        if not isinstance(parsed, dict) or "name" not in parsed:
            raise ValueError("a message schema must be a named type")
        canonical = to_parsing_canonical_form(parsed)
        return cls(str(parsed["name"]), parsed, canonical, crc64_avro(canonical.encode()))


class SchemaRepository:
    """The shipped `swb.v1` schemas, each parsed and fingerprinted once, on first use."""

    def __init__(self, directory: Path | None = None) -> None:
        self._directory = directory
        self._by_name: dict[str, SchemaInfo] = {}
        self._by_fingerprint: dict[int, SchemaInfo] | None = None

    @property
    def directory(self) -> Path:
        if self._directory is None:
            self._directory = default_schema_dir()
        return self._directory

    def names(self) -> tuple[str, ...]:
        return tuple(sorted(p.name.removesuffix(".avsc") for p in self.directory.glob("*.avsc")))

    def lookup(self, name: str) -> SchemaInfo | None:
        name = _fullname(name)
        info = self._by_name.get(name)
        if info is None:
            path = self.directory / f"{name}.avsc"
            if not path.is_file():
                return None
            try:
                info = SchemaInfo.of(load_schema(str(path)))
            except Exception as exc:
                raise CodecError("bad-schema", f"{path} is not a valid Avro schema: {exc}") from exc
            self._by_name[name] = info
        return info

    def get(self, name: str) -> SchemaInfo:
        info = self.lookup(name)
        if info is None:
            raise CodecError(
                "unknown-schema",
                f"no schema {_fullname(name)} in {self.directory}: not a wire type",
            )
        return info

    def find(self, fingerprint: int) -> SchemaInfo | None:
        if self._by_fingerprint is None:
            infos = (self.get(name) for name in self.names())
            self._by_fingerprint = {info.fingerprint: info for info in infos}
        return self._by_fingerprint.get(fingerprint)

    def expanded(self, name: str) -> dict[str, Any]:
        """Self-contained JSON (named types inline at first use), as a registry needs it."""
        expanded: dict[str, Any] = _strip(self.get(name).parsed)
        return expanded


def _union_hints(schema: Any, named: Mapping[str, Any]) -> Callable[[Any], Any] | None:
    """fastavro picks a union branch by validating the datum against each candidate, a walk of
    the whole subtree at every level; naming the record branch up front (fastavro's tuple
    notation) halves the encode time of a Submission. None where nothing needs naming."""
    schema = named.get(schema, schema) if isinstance(schema, str) else schema
    if isinstance(schema, list):
        branches = [named.get(b, b) if isinstance(b, str) else b for b in schema]
        records = [b for b in branches if isinstance(b, dict) and b["type"] == "record"]
        if len(schema) != 2 or "null" not in schema or len(records) != 1:
            return None
        name, inner = records[0]["name"], _union_hints(records[0], named)
        return lambda value: value if value is None else (name, inner(value) if inner else value)
    if not isinstance(schema, dict):
        return None
    if schema["type"] == "array":
        each = _union_hints(schema["items"], named)
        return None if each is None else lambda values: [each(value) for value in values]
    if schema["type"] != "record":
        return None
    fields = [(f["name"], h) for f in schema["fields"] if (h := _union_hints(f["type"], named))]

    def hint(record: Mapping[str, Any]) -> dict[str, Any]:
        hinted = dict(record)
        for name, field_hint in fields:
            if name in hinted:
                hinted[name] = field_hint(hinted[name])
        return hinted

    return hint if fields else None


@dataclass(frozen=True, slots=True)
class _Writer:
    name: str
    schema: Schema
    reader: Schema | None  # our schema for `name` when it differs from the writer's


class Codec:
    """Encodes wire models to Avro bytes and back; the model's class name picks the schema."""

    def __init__(
        self,
        repository: SchemaRepository | None = None,
        *,
        registry_lookup: RegistryLookup | None = None,
    ) -> None:
        self.repository = repository or SchemaRepository()
        self._registry_lookup = registry_lookup
        self._encoders: dict[str, tuple[bytes, Schema, Callable[[Any], Any] | None]] = {}
        self._by_fingerprint: dict[int, _Writer] = {}
        self._by_schema_id: dict[int, _Writer] = {}
        self._confluent_ids: dict[str, int] = {}

    def use_confluent_ids(self, ids: Mapping[str, int]) -> None:
        """Write Confluent framing with these registry ids (schema name -> id) unless a call
        names another id. Under TopicNameStrategy every subject of one schema text gets the
        same global id from the registry, so one id per schema serves every topic."""
        self._confluent_ids.update({_fullname(name): schema_id for name, schema_id in ids.items()})

    def encode(self, message: BaseModel, *, confluent_id: int | None = None) -> bytes:
        try:
            record = message.model_dump(mode="python")
        except Exception as exc:
            raise CodecError("unencodable", f"cannot dump {type(message).__name__}: {exc}") from exc
        return self.encode_dict(type(message).__name__, record, confluent_id=confluent_id)

    def encode_dict(
        self, schema_name: str, record: Mapping[str, Any], *, confluent_id: int | None = None
    ) -> bytes:
        """Fast path for callers that already hold a record dict: no pydantic involved."""
        header, schema, hint = self._encoder(schema_name)
        if confluent_id is None:
            confluent_id = self._confluent_ids.get(_fullname(schema_name))
        if confluent_id is not None:
            if not 0 <= confluent_id < 2**32:
                raise CodecError("unencodable", f"Confluent id {confluent_id} is not 0..2^32-1")
            header = CONFLUENT_MAGIC + confluent_id.to_bytes(4, "big")
        buffer = BytesIO()
        buffer.write(header)
        try:
            datum = record if hint is None else hint(record)
            schemaless_writer(buffer, schema, datum, strict_allow_default=True)
        except Exception as exc:
            name = _fullname(schema_name)
            raise CodecError("unencodable", f"cannot encode {name} as Avro: {exc}") from exc
        return buffer.getvalue()

    def decode(self, data: bytes, model: type[M]) -> M:
        name, record = self.decode_dict(data)
        expected = _fullname(model.__name__)
        if name != expected:
            raise CodecError("unexpected-schema", f"expected a {expected} record, got {name}")
        try:
            return model.model_validate(record)
        except Exception as exc:
            problems = "; ".join(validation_messages(exc))
            raise CodecError("invalid-record", f"{name} record is invalid: {problems}") from exc

    def decode_dict(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """Decode to the schema's full name and a plain record, resolved to our reader schema."""
        writer, offset = self._writer_for(data)
        stream = BytesIO(data)
        stream.seek(offset)
        try:
            record = schemaless_reader(stream, writer.schema, writer.reader)
        except EOFError as exc:
            raise CodecError("truncated", f"{writer.name} datum ends early: {exc}") from exc
        except SchemaResolutionError as exc:
            raise CodecError("incompatible-schema", f"{writer.name} versions clash: {exc}") from exc
        except Exception as exc:
            raise CodecError("bad-datum", f"bytes are not a {writer.name} datum: {exc!r}") from exc
        if left := len(data) - stream.tell():
            raise CodecError("bad-datum", f"{left} bytes left over after the {writer.name} datum")
        if not isinstance(record, dict):
            raise CodecError("bad-datum", f"{writer.name} is not a record schema")
        return writer.name, record

    def register_writer_schema(self, schema: Mapping[str, Any]) -> int:
        """Accept data written with another version of a schema; returns its fingerprint."""
        info = self._adopt(schema, "writer schema")
        self._by_fingerprint[info.fingerprint] = self._writer(info)
        return info.fingerprint

    def _encoder(self, schema_name: str) -> tuple[bytes, Schema, Callable[[Any], Any] | None]:
        encoder = self._encoders.get(schema_name)
        if encoder is None:
            info = self.repository.get(schema_name)
            self._by_fingerprint.setdefault(info.fingerprint, _Writer(info.name, info.parsed, None))
            header = SINGLE_OBJECT_MAGIC + info.fingerprint.to_bytes(8, "little")
            hint = _union_hints(info.parsed, info.parsed.get("__named_schemas", {}))
            encoder = self._encoders[schema_name] = (header, info.parsed, hint)
        return encoder

    def _writer_for(self, data: bytes) -> tuple[_Writer, int]:
        if not data:
            raise CodecError("truncated", "empty message: expected Avro single-object or Confluent")
        if data[0] == SINGLE_OBJECT_MAGIC[0]:
            if len(data) > 1 and data[1] != SINGLE_OBJECT_MAGIC[1]:
                raise CodecError("bad-magic", f"C3 {data[1]:02X} is not the single-object C3 01")
            if len(data) < _SINGLE_OBJECT_HEADER:
                raise CodecError("truncated", f"{len(data)} bytes: shorter than the 10-byte header")
            fingerprint = int.from_bytes(data[2:_SINGLE_OBJECT_HEADER], "little")
            writer = self._by_fingerprint.get(fingerprint) or self._shipped(fingerprint)
            return writer, _SINGLE_OBJECT_HEADER
        if data[0] == CONFLUENT_MAGIC[0]:
            if len(data) < _CONFLUENT_HEADER:
                raise CodecError("truncated", f"{len(data)} bytes: shorter than a Confluent header")
            schema_id = int.from_bytes(data[1:_CONFLUENT_HEADER], "big")
            writer = self._by_schema_id.get(schema_id) or self._registered(schema_id)
            return writer, _CONFLUENT_HEADER
        raise CodecError(
            "bad-magic", f"first byte {data[0]:02X} is neither C3 (Avro) nor 00 (Confluent)"
        )

    def _shipped(self, fingerprint: int) -> _Writer:
        info = self.repository.find(fingerprint)
        if info is None:
            raise CodecError(
                "unknown-fingerprint",
                f"no known schema has fingerprint {fingerprint.to_bytes(8, 'little').hex()}: "
                "the writer used a schema this broker does not ship; register it or upgrade",
            )
        writer = self._by_fingerprint[fingerprint] = _Writer(info.name, info.parsed, None)
        return writer

    def _registered(self, schema_id: int) -> _Writer:
        if self._registry_lookup is None:
            raise CodecError(
                "unknown-schema-id",
                f"Confluent-framed message (schema id {schema_id}) but no schema registry is set",
            )
        try:
            schema = self._registry_lookup(schema_id)
        except SwbError:
            raise
        except Exception as exc:
            raise CodecError("unknown-schema-id", f"no registry schema {schema_id}: {exc}") from exc
        if schema is None:
            raise CodecError("unknown-schema-id", f"registry has no schema {schema_id}")
        info = self._adopt(schema, f"registry schema {schema_id}")
        writer = self._by_schema_id[schema_id] = self._writer(info)
        return writer

    def _adopt(self, schema: Mapping[str, Any], source: str) -> SchemaInfo:
        try:
            return SchemaInfo.of(parse_schema(dict(schema)))
        except Exception as exc:
            raise CodecError(
                "bad-writer-schema", f"{source} is not a self-contained Avro schema: {exc}"
            ) from exc

    def _writer(self, info: SchemaInfo) -> _Writer:
        ours = self.repository.lookup(info.name)
        reader = None if ours is None or ours.fingerprint == info.fingerprint else ours.parsed
        return _Writer(info.name, info.parsed, reader)

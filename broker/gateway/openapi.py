"""/openapi.json: the declaration schema (from the core model), examples, and problem+json
for every error answer, so generated clients and schemathesis see what the API really does."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from broker.core.declaration import Declaration
from broker.gateway.problems import PROBLEM_MEDIA_TYPE, ProblemDetails
from broker.gateway.views import ArrivalRequest, WebhookRequest

_REF = "#/components/schemas/{model}"
_PROBLEM_REF = {"$ref": "#/components/schemas/ProblemDetails"}

_DESCRIPTIONS = {
    401: "No API key, or an unknown one",
    404: "No such submission among yours (another trader's id answers the same)",
    409: "Conflict: an LRN already used, an Idempotency-Key reused with another request, or a "
    "change no longer allowed (the `rule` member says which)",
    413: "The body is larger than the configured limit",
    422: "Invalid request; `errors` names each field",
    503: "The broker did not acknowledge the write; nothing was accepted. Retry after "
    "`Retry-After` seconds",
}


@cache
def sample_declaration() -> dict[str, Any]:
    """A realistic example body: the frozen beef sample shipped with the package."""
    shipped = resources.files("broker.samples").joinpath("02-frozen-beef-argentina.json")
    data: dict[str, Any] = json.loads(shipped.read_text())
    return data


def problems(*codes: int) -> dict[int | str, dict[str, Any]]:
    """The `responses` entries for these error codes, all problem+json."""
    entries: dict[int | str, dict[str, Any]] = {}
    for code in codes:
        entry: dict[str, Any] = {
            "description": _DESCRIPTIONS[code],
            "content": {PROBLEM_MEDIA_TYPE: {"schema": _PROBLEM_REF}},
        }
        if code == 503:
            entry["headers"] = {
                "Retry-After": {"description": "seconds to wait", "schema": {"type": "integer"}}
            }
        if code == 401:
            entry["headers"] = {
                "WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}
            }
        entries[code] = entry
    return entries


DECLARATION_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/Declaration"},
                "examples": {
                    "frozen-beef": {
                        "summary": "Frozen beef from Argentina (customs, veterinary, food)",
                        "value": sample_declaration(),
                    }
                },
            }
        },
    }
}


WEBHOOK_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/WebhookRequest"},
                "example": {"url": "https://erp.example.com/swb/decisions"},
            }
        },
    }
}


ARRIVAL_BODY: dict[str, Any] = {
    "requestBody": {
        "required": False,
        "content": {
            "application/json": {
                "schema": {"$ref": "#/components/schemas/ArrivalRequest"},
                "example": {"arrived_at": "2026-12-02T06:10:00Z", "means_id": "IMO9321483"},
            }
        },
    }
}


def install_openapi(app: FastAPI) -> None:
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
            tags=app.openapi_tags,
        )
        schemas = schema.setdefault("components", {}).setdefault("schemas", {})
        declaration = Declaration.model_json_schema(ref_template=_REF)
        for name, definition in declaration.pop("$defs", {}).items():
            schemas.setdefault(name, definition)
        schemas["Declaration"] = declaration
        schemas["WebhookRequest"] = WebhookRequest.model_json_schema(ref_template=_REF)
        schemas["ArrivalRequest"] = ArrivalRequest.model_json_schema(ref_template=_REF)
        schemas["ProblemDetails"] = ProblemDetails.model_json_schema(ref_template=_REF)
        for definition in (
            ProblemDetails.model_json_schema(ref_template=_REF).get("$defs", {}).items()
        ):
            schemas.setdefault(*definition)
        schemas["ProblemDetails"].pop("$defs", None)
        _problems_everywhere(schema)
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


def _problems_everywhere(schema: dict[str, Any]) -> None:
    """FastAPI documents its own 422 as JSON `HTTPValidationError`; ours are problems."""
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            responses = operation.get("responses", {})
            if "422" in responses:
                responses["422"] = problems(422)[422]
    for name in ("HTTPValidationError", "ValidationError"):
        schema["components"]["schemas"].pop(name, None)

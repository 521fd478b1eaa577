"""RFC 9457 problem details: every error the gateway answers is `application/problem+json`
naming what went wrong and, for validation errors, each field and what to fix."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse, Response

PROBLEM_MEDIA_TYPE = "application/problem+json"
_TYPE_BASE = "https://swb.example/problems/"


class FieldError(BaseModel):
    """One invalid field: its dotted path in the request and what is wrong with it."""

    field: str = Field(examples=["items.0.hs_code"])
    message: str = Field(examples=["'0201XX' is not a 6-digit HS code"])


class ProblemDetails(BaseModel):
    """RFC 9457 problem details, with the extension members this API uses."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(examples=[f"{_TYPE_BASE}validation"])
    title: str = Field(examples=["The declaration is invalid"])
    status: int = Field(ge=400, le=599, examples=[422])
    detail: str = Field(examples=["2 fields are invalid"])
    instance: str | None = Field(default=None, examples=["/v1/submissions"])
    errors: list[FieldError] | None = None
    submission_id: str | None = None
    status_url: str | None = None
    rule: str | None = None


class Problem(Exception):
    """Raised by handlers; answered as problem+json. `extra` adds extension members."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str,
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.kind = kind
        self.title = title
        self.detail = detail
        self.headers = dict(headers or {})
        self.extra = {k: v for k, v in extra.items() if v is not None}


def problem_response(problem: Problem, instance: str | None = None) -> Response:
    body: dict[str, Any] = {
        "type": _TYPE_BASE + problem.kind,
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if instance:
        body["instance"] = instance
    body.update(problem.extra)
    return JSONResponse(
        body, status_code=problem.status, headers=problem.headers, media_type=PROBLEM_MEDIA_TYPE
    )


def field_errors(error: ValidationError | RequestValidationError) -> list[dict[str, str]]:
    """'field: message' pairs a trader can act on, from pydantic's or FastAPI's errors."""
    errors: list[dict[str, str]] = []
    details = (
        error.errors(include_url=False) if isinstance(error, ValidationError) else (error.errors())
    )
    for detail in details:
        loc = [str(part) for part in detail.get("loc", ())]
        if loc and loc[0] in ("body", "query", "path", "header"):
            loc = loc[1:] if loc[0] == "body" else loc
        path = ".".join(loc) or "(body)"
        message = str(detail.get("msg", "invalid")).removeprefix("Value error, ")
        if detail.get("type") == "extra_forbidden":
            message = "unknown field: not part of the declaration (unknown fields are refused)"
        errors.append({"field": path, "message": message})
    return errors


def invalid(errors: list[dict[str, str]], title: str = "The request is invalid") -> Problem:
    fields = ", ".join(dict.fromkeys(e["field"] for e in errors))
    return Problem(
        422,
        "validation",
        title,
        f"{len(errors)} error(s) in: {fields}" if errors else title,
        errors=errors,
    )


_HTTP_PROBLEMS = {
    400: ("bad-request", "Bad request"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("body-too-large", "The request body is too large"),
}


def install_problem_handlers(app: FastAPI) -> None:
    """Framework errors (404 route, 405, FastAPI parameter validation) become problems too."""

    async def on_problem(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Problem)
        return problem_response(exc, request.url.path)

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        kind, title = _HTTP_PROBLEMS.get(exc.status_code, ("http", "HTTP error"))
        problem = Problem(
            exc.status_code,
            kind,
            title,
            str(exc.detail),
            headers=exc.headers,
        )
        return problem_response(problem, request.url.path)

    async def on_validation(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return problem_response(invalid(field_errors(exc)), request.url.path)

    app.add_exception_handler(Problem, on_problem)
    app.add_exception_handler(StarletteHTTPException, on_http)
    app.add_exception_handler(RequestValidationError, on_validation)

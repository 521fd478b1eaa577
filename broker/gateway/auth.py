"""API keys per trader, configured by the operator (SWB_API_KEYS: key → trader id).

Keys are kept only as SHA-256 digests, so a lookup compares digests, not secrets, and a heap
dump shows no key. A request carries its key as `X-API-Key: <key>` or
`Authorization: Bearer <key>`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from broker.gateway.problems import Problem

_api_key_header = APIKeyHeader(
    name="X-API-Key", auto_error=False, description="The API key the operator issued to you."
)
_bearer = HTTPBearer(auto_error=False, description="The same API key, as a bearer token.")


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """Who a key belongs to. Empty keys are ignored, so an empty setting lets nobody in."""

    def __init__(self, keys: Mapping[str, str]) -> None:
        self._traders = {_digest(key): trader for key, trader in keys.items() if key and trader}

    def __len__(self) -> int:
        return len(self._traders)

    def trader_of(self, key: str | None) -> str | None:
        if not key:
            return None
        return self._traders.get(_digest(key))


def _unauthorized(detail: str) -> Problem:
    return Problem(
        401,
        "unauthorized",
        "Authentication required",
        detail,
        headers={"WWW-Authenticate": 'Bearer realm="swb"'},
    )


async def current_trader(
    request: Request,
    api_key: Annotated[str | None, Depends(_api_key_header)],
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> str:
    """The trader the request's key belongs to; 401 without a known key."""
    keys: ApiKeys = request.app.state.gateway.api_keys
    presented = api_key or (bearer.credentials if bearer else None)
    if not presented:
        raise _unauthorized(
            "send your API key as 'X-API-Key: <key>' or 'Authorization: Bearer <key>'"
        )
    trader = keys.trader_of(presented)
    if trader is None:
        raise _unauthorized("the API key is not known; ask the operator for a valid one")
    return trader

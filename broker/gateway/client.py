"""A small HTTP client for the trader API, used by `swb submit` and `swb status`.

Writes carry an Idempotency-Key made once per command, so the retries after a 503 or a lost
connection can never lodge the declaration twice."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

import httpx

from broker.errors import SwbError

_RETRIABLE = {502, 503, 504}


class GatewayUnreachable(SwbError):
    retriable = True


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class GatewayClient:
    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_s: float = 60.0,
        retries: int = 3,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base_url = base_url.rstrip("/")
        self._retries = retries
        self._http = httpx.Client(
            base_url=self._base_url,
            headers={"X-API-Key": api_key, "User-Agent": "swb-cli"},
            timeout=timeout_s,
            transport=transport,
        )

    def __enter__(self) -> GatewayClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._http.close()

    def submit(self, body: bytes) -> Answer:
        return self._send("POST", "/v1/submissions", body)

    def amend(self, submission_id: str, body: bytes) -> Answer:
        return self._send("PUT", f"/v1/submissions/{submission_id}", body)

    def cancel(self, submission_id: str, reason: str) -> Answer:
        return self._send(
            "DELETE", f"/v1/submissions/{submission_id}", None, params={"reason": reason}
        )

    def status(self, submission_id: str) -> Answer:
        return self._send("GET", f"/v1/submissions/{submission_id}", None)

    def _send(
        self, method: str, path: str, body: bytes | None, params: dict[str, str] | None = None
    ) -> Answer:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if method != "GET":
            headers["Idempotency-Key"] = str(uuid.uuid4())
        for attempt in range(1, self._retries + 2):
            try:
                response = self._http.request(
                    method, path, content=body, headers=headers, params=params
                )
            except httpx.TransportError as exc:
                if attempt > self._retries:
                    raise GatewayUnreachable(
                        f"cannot reach the gateway at {self._base_url} ({exc}); is `swb run` "
                        "running? pass --url or set SWB_GATEWAY_URL"
                    ) from exc
                time.sleep(min(2 ** (attempt - 1), 10))
                continue
            if response.status_code in _RETRIABLE and attempt <= self._retries:
                time.sleep(min(float(response.headers.get("Retry-After", "1")), 30))
                continue
            try:
                payload = response.json()
            except ValueError:
                payload = {"detail": response.text}
            return Answer(
                response.status_code, payload if isinstance(payload, dict) else {"items": payload}
            )
        raise AssertionError("unreachable")  # pragma: no cover

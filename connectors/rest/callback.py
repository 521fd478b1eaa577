"""The bridge's callback endpoint: where an agency gives the answers it did not give at once.

`POST /v1/answers` with one answer or a list (see `wire.CallbackAnswer`) and
`Authorization: Bearer <SWB_BRIDGE__CALLBACK_TOKEN>`: 202 once the answers are on Kafka
(acks=all), so a 202 means durable; 401 without the token, 422 (problem+json) for an invalid
answer, 503 with Retry-After when Kafka did not take the write (call again: it is idempotent
for the same answer). `GET /healthz` tells the circuit breaker's state.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import structlog
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

from broker.core.messages import AgencyResponse
from broker.errors import TransportError
from connectors.rest.wire import CallbackAnswer, parse_callback

__all__ = ["AnswerSink", "CallbackServer", "callback_app"]

log = structlog.get_logger("swb.bridge")

#: Publishes callback answers; raises ValueError for answers it refuses.
AnswerSink = Callable[[list[CallbackAnswer]], Awaitable[list[AgencyResponse]]]


def _problem(status: int, title: str, detail: str, **headers: str) -> JSONResponse:
    """RFC 9457 problem details, as the trader gateway answers too."""
    return JSONResponse(
        {"type": "about:blank", "title": title, "status": status, "detail": detail},
        status_code=status,
        media_type="application/problem+json",
        headers=headers or None,
    )


def callback_app(
    agency: str, sink: AnswerSink, token: str, health: Callable[[], dict[str, Any]]
) -> FastAPI:
    app = FastAPI(
        title=f"Single Window REST bridge callback ({agency})",
        openapi_url=None,
        docs_url=None,
        redoc_url=None,
    )
    expected = f"Bearer {token}".encode()

    @app.post("/v1/answers")
    async def answers(request: Request) -> Response:
        given = request.headers.get("authorization", "").encode()
        if not secrets.compare_digest(given, expected):
            return _problem(
                401,
                "Unauthorized",
                "send Authorization: Bearer <callback token>",
                **{"WWW-Authenticate": "Bearer"},
            )
        try:
            parsed = parse_callback(await request.body())
            published = await sink(parsed)
        except ValueError as exc:
            return _problem(422, "Invalid answer", str(exc))
        except TransportError as exc:
            log.warning("callback answer not published", error=str(exc))
            return _problem(
                503,
                "Broker unavailable",
                "the answer was not published; retry",
                **{"Retry-After": "5"},
            )
        return JSONResponse({"published": len(published)}, status_code=202)

    @app.get("/healthz")
    async def healthz() -> dict[str, Any]:
        return {"status": "ok", "agency": agency, **health()}

    return app


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our event loop: the process's own signal handling stays in charge."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class CallbackServer:
    """Serves `app` on host:port (0: a free port). `start` binds the socket, so the URL is
    known and connections queue from then on; `serve` runs until `stopping` is set."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._socket: socket.socket | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("callback server not started")
        host = f"[{self._host}]" if ":" in self._host else self._host
        return f"http://{host}:{self.port}/v1/answers"

    async def start(self) -> None:
        if self._socket is not None:
            return
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self._host, self._port))
            sock.listen(128)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self._socket, self.port = sock, sock.getsockname()[1]

    async def serve(self, stopping: asyncio.Event) -> None:
        await self.start()
        assert self._socket is not None
        config = uvicorn.Config(
            self._app,
            log_config=None,
            access_log=False,
            lifespan="off",
            ws="none",
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        server = _EmbeddedServer(config)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(server.serve(sockets=[self._socket]))
            await stopping.wait()
            server.should_exit = True
        self._socket = None

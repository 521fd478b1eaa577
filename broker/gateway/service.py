"""`GatewayService.run(stopping)`: the gateway as one of `swb run`'s services.

Serves uvicorn programmatically on settings.http_host/http_port (port 0 picks a free one;
`url` tells which), after the read model is rebuilt, so no request is answered from a
half-built view. On `stopping`: end the event streams, let uvicorn finish the requests in
hand (within the shutdown timeout), then stop following and delivering. Signals stay with
the caller: uvicorn's own handlers are not installed.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import structlog
import uvicorn

from broker.errors import SwbError
from broker.gateway.app import build_state, create_gateway
from broker.gateway.webhooks import webhooks_topic

if TYPE_CHECKING:
    from broker.bootstrap import App

log = structlog.get_logger("swb.gateway")


class GatewayError(SwbError):
    """The gateway could not start (its port is taken, for example)."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield  # the caller owns SIGTERM/SIGINT and sets `stopping`


class GatewayService:
    def __init__(self, app: App, *, host: str | None = None, port: int | None = None) -> None:
        self._app = app
        self.host = host if host is not None else app.settings.http_host
        self.port = port if port is not None else app.settings.http_port
        self.state = build_state(app)
        self.api = create_gateway(app, self.state)
        self.listening = asyncio.Event()
        # Told the URL once listening (the CLI prints it: with port 0 it is known only then).
        self.on_listening: Callable[[str], None] | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def ready(self) -> bool:
        return (
            self.listening.is_set()
            and self.state.follower.ready.is_set()
            and self.state.dispatcher.ready.is_set()
        )

    async def wait_ready(self, timeout_s: float = 30.0) -> None:
        async with asyncio.timeout(timeout_s):
            await self.listening.wait()
            await self.state.follower.ready.wait()
            await self.state.dispatcher.ready.wait()

    async def run(self, stopping: asyncio.Event) -> None:
        settings = self._app.settings
        await self._app.transport.create_topics(
            [webhooks_topic(self._app.topics)], settings.partitions
        )
        if not self.state.api_keys:
            log.warning("no API keys configured (SWB_API_KEYS): every request will get 401")
        inner_stop = asyncio.Event()
        sock = self._bind()
        server = _Server(
            uvicorn.Config(
                self.api,
                log_config=None,
                access_log=False,
                lifespan="off",
                timeout_graceful_shutdown=max(1, int(settings.shutdown_timeout_s / 2)),
            )
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self.state.follower.run(inner_stop))
                tasks.create_task(self.state.dispatcher.run(inner_stop))
                await _first_of(self.state.follower.rebuilt, stopping)
                if not stopping.is_set():
                    serving = tasks.create_task(server.serve(sockets=[sock]))
                    # uvicorn offers a flag, not an event, for "listening".
                    while not (server.started or serving.done() or stopping.is_set()):  # noqa: ASYNC110
                        await asyncio.sleep(0.01)
                    if serving.done() and not server.started:
                        raise GatewayError("the gateway's HTTP server did not start")
                    self.listening.set()
                    if self.on_listening is not None:
                        self.on_listening(self.url)
                    log.info("gateway listening", url=self.url)
                    await stopping.wait()
                    self.state.read_model.close_subscriptions()
                    server.should_exit = True
                    await serving
                inner_stop.set()
        finally:
            inner_stop.set()
            self.listening.clear()
            sock.close()

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        # IPPROTO_TCP explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says
        # TCP; without it Nagle and delayed ACKs add 40 ms to every answer.
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host, self.port))
        except OSError as exc:
            sock.close()
            raise GatewayError(
                f"the gateway cannot listen on {self.host}:{self.port} ({exc.strerror}); "
                "set SWB_HTTP_PORT to a free port"
            ) from exc
        sock.listen(128)
        sock.setblocking(False)
        self.port = sock.getsockname()[1]
        return sock


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        await asyncio.gather(*waiters, return_exceptions=True)

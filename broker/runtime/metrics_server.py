"""The Prometheus endpoint of roles that have no gateway: `/metrics`, `/healthz`, `/readyz`.

A tiny HTTP/1.1 server on the process's own event loop, not prometheus_client's thread: a
liveness probe then fails when the loop is stuck, which is the failure worth restarting for.
Every response closes its connection; Prometheus and Kubernetes probes are fine with that.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable

import structlog
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

__all__ = ["MetricsServer"]

log = structlog.get_logger("swb.metrics")

_REQUEST_TIMEOUT_S = 5.0
_READY_TIMEOUT_S = 3.0
_MAX_HEADER_LINES = 100
_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}

Readiness = Callable[[], Awaitable[bool]]


class MetricsServer:
    """Serves the registry until stopped. `ready` answers `/readyz` (e.g. the Kafka transport's
    ping); without it the process is ready as soon as it serves."""

    def __init__(
        self,
        registry: CollectorRegistry,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        ready: Readiness | None = None,
    ) -> None:
        self._registry = registry
        self._host = host
        self._port = port
        self._ready = ready
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def port(self) -> int:
        """The bound port (the configured one, or the one picked for port 0)."""
        if self._server is None or not self._server.sockets:
            return self._port
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def start(self) -> None:
        if self._server is not None:
            return
        self._server = await asyncio.start_server(self._serve, self._host, self._port)
        log.info("metrics endpoint listening", host=self._host, port=self.port)

    async def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)
        await server.wait_closed()

    async def run(self, stopping: asyncio.Event) -> None:
        await self.start()
        try:
            await stopping.wait()
        finally:
            await self.stop()

    async def __aenter__(self) -> MetricsServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            async with asyncio.timeout(_REQUEST_TIMEOUT_S):
                method, path, accept = await _read_request(reader)
                status, content_type, body = await self._respond(method, path, accept)
                head = (
                    f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
                    f"Content-Type: {content_type}\r\n"
                    f"Content-Length: {len(body)}\r\n"
                    "Connection: close\r\n\r\n"
                )
                writer.write(head.encode() + (b"" if method == "HEAD" else body))
                await writer.drain()
        except (TimeoutError, ValueError, ConnectionError, asyncio.IncompleteReadError):
            pass  # a client that hangs up or speaks nonsense gets nothing more
        finally:
            self._connections.discard(task)
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _respond(self, method: str, path: str, accept: str) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if method not in ("GET", "HEAD"):
            return 405, text, b"GET only\n"
        route = path.split("?", 1)[0]
        if route == "/metrics":
            # The format the scraper asks for: OpenMetrics for Prometheus, text otherwise.
            encode, content_type = choose_encoder(accept)
            return 200, content_type, encode(self._registry)
        if route == "/healthz":
            return 200, text, b"ok\n"
        if route == "/readyz":
            if await self._is_ready():
                return 200, text, b"ready\n"
            return 503, text, b"not ready: the Kafka cluster does not answer\n"
        return 404, text, b"try /metrics, /healthz or /readyz\n"

    async def _is_ready(self) -> bool:
        if self._ready is None:
            return True
        try:
            async with asyncio.timeout(_READY_TIMEOUT_S):
                return await self._ready()
        except TimeoutError:
            return False


async def _read_request(reader: asyncio.StreamReader) -> tuple[str, str, str]:
    """The method, the target and the Accept header of a request; other headers are ignored."""
    request_line = (await reader.readline()).decode("latin-1").strip()
    parts = request_line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError(f"not an HTTP request line: {request_line[:80]!r}")
    accept = ""
    for _ in range(_MAX_HEADER_LINES):
        line = (await reader.readline()).decode("latin-1")
        if line in ("\r\n", "\n", ""):
            break
        name, _, value = line.partition(":")
        if name.strip().lower() == "accept":
            accept = value.strip()
    return parts[0].upper(), parts[1], accept

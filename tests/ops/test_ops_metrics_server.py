"""The metrics endpoint of roles without the gateway: /metrics, /healthz, /readyz."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from ops_support import wait_for
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from broker.runtime.metrics import Metrics
from broker.runtime.metrics_server import MetricsServer


async def test_serves_the_injected_registry_and_probes() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    metrics.in_flight.set(7)
    kafka_up = True

    async def ready() -> bool:
        return kafka_up

    async with MetricsServer(registry, "127.0.0.1", 0, ready=ready) as server:
        base = f"http://127.0.0.1:{server.port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as client:
            response = await client.get("/metrics")
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/plain")
            families = {f.name: f for f in text_string_to_metric_families(response.text)}
            assert families["swb_in_flight_submissions"].samples[0].value == 7
            # Prometheus asks for OpenMetrics first.
            accept = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5"
            openmetrics = await client.get("/metrics", headers={"Accept": accept})
            assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
            assert openmetrics.text.rstrip().endswith("# EOF")

            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            kafka_up = False
            not_ready = await client.get("/readyz")
            assert not_ready.status_code == 503
            assert "Kafka" in not_ready.text

            assert (await client.get("/nothing-here")).status_code == 404
            assert (await client.post("/metrics", content=b"x")).status_code == 405
            head = await client.head("/metrics")
            assert head.status_code == 200
            assert head.content == b""
    with pytest.raises(httpx.ConnectError):
        async with httpx.AsyncClient(timeout=2) as client:
            await client.get(f"{base}/healthz")


async def test_garbage_and_silent_clients_do_not_hurt_it() -> None:
    async with MetricsServer(CollectorRegistry(), "127.0.0.1", 0) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x16\x03\x01 not http at all\r\n\r\n")
        await writer.drain()
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed without an answer
        writer.close()
        # A client that connects and says nothing is dropped when the server stops.
        _, idle = await asyncio.open_connection("127.0.0.1", server.port)
        async with httpx.AsyncClient(timeout=5) as client:
            assert (await client.get(f"http://127.0.0.1:{server.port}/healthz")).text == "ok\n"
    idle.close()


async def test_run_stops_with_the_event_and_stop_is_idempotent() -> None:
    server = MetricsServer(CollectorRegistry(), "127.0.0.1", 0)
    stopping = asyncio.Event()
    run = asyncio.create_task(server.run(stopping))
    async with httpx.AsyncClient(timeout=5) as client:

        async def serving() -> bool:
            if not server.port:
                return False
            try:
                return (await client.get(f"http://127.0.0.1:{server.port}/healthz")).is_success
            except httpx.ConnectError:
                return False

        await wait_for(serving, timeout_s=5, what="the endpoint to serve", poll_s=0.01)
    port = server.port
    stopping.set()
    await asyncio.wait_for(run, 5)
    assert run.done() and run.exception() is None
    await server.stop()  # a second stop is harmless
    with pytest.raises(OSError):  # nothing listens any more
        _, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.close()

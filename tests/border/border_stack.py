"""A whole single window per country for the border-management tests (pre-arrival, partner
exchange, audit): the session's embedded broker, a topic prefix per country, router (with the
partner inbox), aggregator, partner exchange, simulated agencies that clear what they can, and
the trader gateway on a free port, all built through `open_app` and stopped after the test."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from importlib import resources
from typing import Any, TypeVar

import httpx
import pytest_asyncio

from broker.bootstrap import App, open_app, run_until_stopped
from broker.core.messages import AgencyRequest, AgencyStatus, Decision
from broker.runtime.transport import Record
from broker.settings import GatewaySettings, KafkaSettings, PartnerSettings, Settings
from connectors.simulated import SimulationProfile

T = TypeVar("T")

TRADER = "NL812345670"
KEY = "key-border-trader-0123456789"
OTHER_TRADER = "DE987654321000"
OTHER_KEY = "key-border-other-0123456789"
WAIT_S = 45.0

#: Every agency clears what it can; the veterinary service still asks for a missing CHED-P.
CLEARING = SimulationProfile(seed=1, disclaim_rate=0.0, proportions=((AgencyStatus.CLEARED, 1.0),))

Service = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def sample(name: str, **changes: Any) -> dict[str, Any]:
    text = resources.files("broker.samples").joinpath(f"{name}.json").read_text()
    data: dict[str, Any] = copy.deepcopy(json.loads(text))
    data.update(changes)
    return data


def body(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def settings_for(
    bootstrap: str,
    prefix: str,
    *,
    keys: dict[str, str] | None = None,
    partner: PartnerSettings | None = None,
) -> Settings:
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        partitions=2,
        http_port=0,
        api_keys=keys or {KEY: TRADER, OTHER_KEY: OTHER_TRADER},
        # Tansu holds a JoinGroup for half the session timeout: 6 s keeps joins at 3 s.
        kafka=KafkaSettings(session_timeout_ms=6000, heartbeat_interval_ms=500),
        gateway=GatewaySettings(sse_keepalive_s=1.0),
        partner=partner or PartnerSettings(),
        shutdown_timeout_s=5,
    )


@dataclass
class Country:
    """One single window: the composition root's App and its gateway's URL."""

    app: App
    url: str

    def client(self, key: str = KEY) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers={"X-API-Key": key}, timeout=30)

    async def view(
        self,
        client: httpx.AsyncClient,
        submission_id: str,
        condition: Callable[[dict[str, Any]], bool],
        what: str,
    ) -> dict[str, Any]:
        """Poll GET until the submission's view satisfies `condition`."""

        async def met() -> dict[str, Any] | None:
            response = await client.get(f"/v1/submissions/{submission_id}")
            view: dict[str, Any] = response.json()
            return view if response.status_code == 200 and condition(view) else None

        return await eventually(met, f"{submission_id}: {what}")

    async def records(self, topic: str) -> list[Record]:
        transport = self.app.transport
        out: list[Record] = []
        for partition in range(await transport.partitions_for(topic)):
            out += await transport.read_partition(topic, partition)
        return out

    async def decisions(self, submission_id: str) -> list[Decision]:
        records = await self.records(self.app.topics.decisions)
        return [
            self.app.codec.decode(r.value or b"", Decision)
            for r in sorted(records, key=lambda r: r.offset)
            if r.key == submission_id.encode()
        ]

    async def requests(self, agency: str, submission_id: str) -> list[AgencyRequest]:
        records = await self.records(self.app.topics.requests(agency))
        return [
            self.app.codec.decode(r.value or b"", AgencyRequest)
            for r in sorted(records, key=lambda r: r.offset)
            if r.key == submission_id.encode()
        ]


async def eventually(check: Callable[[], Coroutine[Any, Any, T | None]], what: str) -> T:
    """Wait (never a bare sleep-and-hope) until `check` returns something, or fail naming it."""
    try:
        async with asyncio.timeout(WAIT_S):
            while True:
                found = await check()
                if found is not None:
                    return found
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {WAIT_S} s waiting for: {what}") from None


StartCountry = Callable[..., Coroutine[Any, Any, Country]]


@pytest_asyncio.fixture(name="countries")
async def countries_fixture() -> AsyncIterator[StartCountry]:
    """Starts single windows on demand (`await countries(settings)`), stops them all after."""
    stops: list[tuple[asyncio.Event, asyncio.Task[None], Any]] = []

    async def start(settings: Settings, *, exchange: bool = True) -> Country:
        """`exchange=False`: without the partner exchange service (the test runs its own)."""
        context = open_app(settings)
        app = await context.__aenter__()
        gateway = app.gateway()
        # Consumer groups of their own: two countries on one cluster must not rebalance each
        # other (Tansu, the embedded broker, can leave a group shared by members reading
        # different topics unable to take new members).
        groups = f"{settings.topic_prefix}.swb"
        services: list[Service] = [
            gateway.run,
            app.router(group_id=f"{groups}-router").run,
            app.aggregator(group_id=f"{groups}-aggregator").run,
        ]
        agencies = app.simulated_agencies(CLEARING, group_prefix=f"{groups}-agency")
        services += [agency.run for agency in agencies]
        if settings.partner.enabled:
            services.append(app.partner_inbox().run)
            if exchange:
                services.append(app.partner_exchange(group_id=f"{groups}-partner").run)
        stopping = asyncio.Event()
        task = asyncio.create_task(run_until_stopped(services, stopping, shutdown_timeout_s=5))
        stops.append((stopping, task, context))
        ready = asyncio.create_task(gateway.wait_ready(60))
        await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            ready.cancel()
            await task  # raises what stopped it
        await ready
        return Country(app, gateway.url)

    yield start
    for stopping, task, context in reversed(stops):
        stopping.set()
        try:
            await task
        finally:
            await context.__aexit__(None, None, None)

"""Helpers for the gateway tests: a whole single window per test (the session's embedded
broker, a fresh topic prefix, router, aggregator, simulated agencies that clear what they can,
and the gateway served by uvicorn on a free loopback port), all built through `open_app`."""

from __future__ import annotations

import asyncio
import copy
import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from importlib import resources
from typing import Any

import httpx

from broker.bootstrap import App
from broker.core.messages import AgencyStatus
from broker.gateway.service import GatewayService
from broker.settings import GatewaySettings, KafkaSettings, Settings
from connectors.simulated import SimulationProfile

TRADER_A = "NL123456789000"
TRADER_B = "DE987654321000"
KEY_A = "key-trader-a-0123456789"
KEY_B = "key-trader-b-0123456789"

# Every agency clears what it can; the veterinary service still asks for a missing CHED-P.
CLEARING = SimulationProfile(seed=1, disclaim_rate=0.0, proportions=((AgencyStatus.CLEARED, 1.0),))

Service = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def beef(lrn: str = "BEEF-2026-0001", *, with_health_certificate: bool = True) -> dict[str, Any]:
    """The frozen beef sample (customs, veterinary, food); without its CHED-P (N853) the
    veterinary service answers DOCUMENTS_REQUIRED."""
    shipped = resources.files("broker.samples").joinpath("02-frozen-beef-argentina.json")
    data: dict[str, Any] = copy.deepcopy(json.loads(shipped.read_text()))
    data["lrn"] = lrn
    if not with_health_certificate:
        data["documents"] = [d for d in data["documents"] if d["type_code"] != "N853"]
    return data


def body(data: dict[str, Any]) -> bytes:
    return json.dumps(data).encode()


@dataclass
class Stack:
    app: App
    gateway: GatewayService
    url: str

    def client(self, key: str | None = KEY_A) -> httpx.AsyncClient:
        headers = {"X-API-Key": key} if key else {}
        return httpx.AsyncClient(base_url=self.url, headers=headers, timeout=30)

    async def decision(
        self,
        client: httpx.AsyncClient,
        submission_id: str,
        *,
        version: int = 1,
        final: bool = True,
        outcome: str | None = None,
        timeout_s: float = 30,
    ) -> dict[str, Any]:
        """Poll GET until the decision for `version` matches; the view that matched."""
        async with asyncio.timeout(timeout_s):
            while True:
                view = (await client.get(f"/v1/submissions/{submission_id}")).json()
                decision = view.get("decision")
                if (
                    decision is not None
                    and decision["version"] == version
                    and (decision["final"] or not final)
                    and (outcome is None or decision["outcome"] == outcome)
                ):
                    return view
                await asyncio.sleep(0.05)


def gateway_settings(
    bootstrap: str, prefix: str, *, request_timeout_ms: int = 30_000, **gateway: Any
) -> Settings:
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        partitions=2,
        http_port=0,
        api_keys={KEY_A: TRADER_A, KEY_B: TRADER_B},
        # Tansu holds a JoinGroup for half the session timeout: 6 s keeps joins at 3 s.
        kafka=KafkaSettings(
            request_timeout_ms=request_timeout_ms,
            session_timeout_ms=6000,
            heartbeat_interval_ms=500,
        ),
        gateway=GatewaySettings(
            webhook_backoff_initial_s=0.05,
            webhook_backoff_max_s=0.2,
            sse_keepalive_s=1.0,
            **gateway,
        ),
        shutdown_timeout_s=5,
    )

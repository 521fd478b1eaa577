"""Webhook registrations and their signatures.

A trader registers callback URLs (`POST /v1/webhooks`); the gateway keeps the registrations
on an internal topic `<prefix>.gateway.webhooks` (key = webhook id, JSON value, null value =
removed), so they survive restarts and every gateway replica knows them. Each delivery is
signed with the registration's secret, Stripe-style: `Swb-Signature: t=<unix>,v1=<hex>` where
hex = HMAC-SHA256(secret, "<t>." + body); the timestamp lets a receiver refuse replays.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import datetime

import structlog

from broker.core.topics import Topics
from broker.errors import TransportError
from broker.gateway.problems import Problem
from broker.runtime.transport import Outgoing, Producer, Record

log = structlog.get_logger("swb.gateway.webhooks")

SIGNATURE_HEADER = "Swb-Signature"
EVENT_ID_HEADER = "Swb-Event-Id"
ATTEMPT_HEADER = "Swb-Delivery-Attempt"


def webhooks_topic(topics: Topics) -> str:
    return topics.webhooks


def sign(secret: str, body: bytes, timestamp: int) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(secret: str, body: bytes, header: str, *, now: float, tolerance_s: float = 300) -> bool:
    """What a receiver does: recompute the HMAC and refuse stale timestamps."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, body, timestamp).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True, slots=True)
class Webhook:
    webhook_id: str
    trader_id: str
    url: str
    secret: str
    created_at: datetime

    def to_json(self) -> bytes:
        data = asdict(self)
        data["created_at"] = self.created_at.isoformat()
        return json.dumps(data).encode()

    @classmethod
    def from_json(cls, value: bytes) -> Webhook:
        data = json.loads(value)
        data["created_at"] = datetime.fromisoformat(data["created_at"])
        return cls(**data)


class WebhookRegistry:
    def __init__(
        self,
        producer: Producer,
        topic: str,
        clock: Callable[[], datetime],
        *,
        write_timeout_s: float,
        retry_after_s: int,
        max_per_trader: int,
    ) -> None:
        self._producer = producer
        self.topic = topic
        self._clock = clock
        self._write_timeout_s = write_timeout_s
        self._retry_after_s = retry_after_s
        self._max_per_trader = max_per_trader
        self._hooks: dict[str, Webhook] = {}

    def __len__(self) -> int:
        return len(self._hooks)

    def for_trader(self, trader_id: str) -> list[Webhook]:
        return sorted(
            (h for h in self._hooks.values() if h.trader_id == trader_id),
            key=lambda h: (h.created_at, h.webhook_id),
        )

    def get(self, webhook_id: str) -> Webhook | None:
        return self._hooks.get(webhook_id)

    def apply_record(self, record: Record) -> None:
        """A registration or a removal read from the topic; undecodable records are skipped."""
        if record.key is None:
            return
        webhook_id = record.key.decode(errors="replace")
        if record.value is None:
            self._hooks.pop(webhook_id, None)
            return
        try:
            hook = Webhook.from_json(record.value)
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("webhook record skipped", offset=record.offset, error=str(exc))
            return
        self._hooks[hook.webhook_id] = hook

    async def register(self, trader_id: str, url: str) -> Webhook:
        if len(self.for_trader(trader_id)) >= self._max_per_trader:
            raise Problem(
                409,
                "too-many-webhooks",
                "Too many webhooks",
                f"a trader may register at most {self._max_per_trader} webhooks; delete one first",
            )
        hook = Webhook(
            webhook_id=f"wh-{secrets.token_hex(8)}",
            trader_id=trader_id,
            url=url,
            secret=f"whsec_{secrets.token_urlsafe(24)}",
            created_at=self._clock(),
        )
        await self._write(hook.webhook_id, hook.to_json())
        self._hooks[hook.webhook_id] = hook
        return hook

    async def remove(self, trader_id: str, webhook_id: str) -> bool:
        hook = self._hooks.get(webhook_id)
        if hook is None or hook.trader_id != trader_id:
            return False
        await self._write(webhook_id, None)
        self._hooks.pop(webhook_id, None)
        return True

    async def _write(self, webhook_id: str, value: bytes | None) -> None:
        record = Outgoing(self.topic, value, key=webhook_id.encode())
        try:
            async with asyncio.timeout(self._write_timeout_s):
                await self._producer.send_batch([record])
        except (TransportError, TimeoutError) as exc:
            raise Problem(
                503,
                "broker-unavailable",
                "The broker did not acknowledge the write",
                f"nothing was changed; try again after {self._retry_after_s} s",
                headers={"Retry-After": str(self._retry_after_s)},
            ) from exc

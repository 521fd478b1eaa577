"""The trader HTTP gateway (DESIGN §7): submit once over HTTP, follow one coordinated
decision by polling, server-sent events or signed webhooks."""

from __future__ import annotations

from broker.gateway.app import GatewayState, create_gateway
from broker.gateway.client import GatewayClient
from broker.gateway.service import GatewayService
from broker.gateway.webhooks import sign, verify

__all__ = ["GatewayClient", "GatewayService", "GatewayState", "create_gateway", "sign", "verify"]

"""REST bridge for agencies whose systems speak HTTP (`swb bridge CODE`).

Same anatomy as every connector: `config` (BridgeSettings and what derives from it), `handler`
(request -> the endpoint's answers), `agency` (the runnable `RestBridge`); plus `wire` (the
HTTP contract), `endpoint` (retries, breaker), `breaker`, and `callback` (answers given later).
"""

from __future__ import annotations

from connectors.rest.agency import RestBridge
from connectors.rest.breaker import BreakerState, CircuitBreaker
from connectors.rest.config import BridgeSettings
from connectors.rest.endpoint import AgencyEndpoint
from connectors.rest.handler import RestHandler
from connectors.rest.wire import AgencyAnswer, CallbackAnswer, Reply

__all__ = [
    "AgencyAnswer",
    "AgencyEndpoint",
    "BreakerState",
    "BridgeSettings",
    "CallbackAnswer",
    "CircuitBreaker",
    "Reply",
    "RestBridge",
    "RestHandler",
]

"""Agency side of the Single Window: the connector SDK and the connectors built on it.

Every connector has the same anatomy. The SDK: `parser` (record -> request), `sdk` (the
subscriber pipeline: handle, publish, commit), `offsets` (what may be committed), `publisher`
(answers -> records), `retry` and `errors`, `testing` (run a handler or a whole agency on the
in-memory transport). Each connector package (`simulated`, `rest`): `config`, `handler`
(request -> answers), `agency` (the runnable agency around an `AgencyConnector`).
"""

from __future__ import annotations

from connectors.errors import AgencyUnavailable, ConnectorError, RequestRefused
from connectors.retry import Backoff
from connectors.sdk import AgencyConnector, ConnectorFactory, Handler

__all__ = [
    "AgencyConnector",
    "AgencyUnavailable",
    "Backoff",
    "ConnectorError",
    "ConnectorFactory",
    "Handler",
    "RequestRefused",
]

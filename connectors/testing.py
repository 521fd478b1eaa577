"""Test a handler the way it will run, without a broker: the SDK connector on the in-memory
transport (which passes the same contract tests as Kafka).

    async with ConnectorHarness("food", my_handler) as harness:
        await harness.send(review_request("food"))
        (answer,) = await harness.responses(1)
        assert answer.status is AgencyStatus.CLEARED
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from broker.core.codec import Codec
from broker.core.declaration import DeclarationType
from broker.core.messages import (
    AgencyRequest,
    AgencyResponse,
    InformationPackage,
    RequestKind,
    Requirement,
)
from broker.core.topics import Topics
from broker.runtime.memory import MemoryTransport
from broker.runtime.transport import Outgoing, Record
from connectors.sdk import AgencyConnector, ConnectorFactory, Handler

__all__ = ["ConnectorHarness", "RunnableAgency", "review_request", "withdrawal_of"]

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)


def review_request(
    agency: str, submission_id: str = "NL1-LRN-1", version: int = 1, **fields: Any
) -> AgencyRequest:
    """A minimal, valid REVIEW request; override any field by name."""
    values: dict[str, Any] = {
        "request_id": f"{submission_id}:{version}:{agency}:REVIEW",
        "submission_id": submission_id,
        "version": version,
        "agency": agency,
        "kind": RequestKind.REVIEW,
        "requirement": Requirement.REQUIRED,
        "reasons": ("test",),
        "deadline": T0 + timedelta(hours=4),
        "sent_at": T0,
        "package": InformationPackage(
            lrn=submission_id.rsplit("-", 1)[-1],
            type=DeclarationType.IMPORT,
            procedure_code="4000",
            issued_at=T0,
            customs_office="NLRTM000",
        ),
    }
    values.update(fields)
    return AgencyRequest(**values)


def withdrawal_of(request: AgencyRequest, reason: str = "amended") -> AgencyRequest:
    return request.model_copy(
        update={
            "request_id": request.request_id.replace("REVIEW", "WITHDRAWAL"),
            "kind": RequestKind.WITHDRAWAL,
            "package": None,
            "withdrawal_reason": reason,
        }
    )


class RunnableAgency(Protocol):
    """A simulated agency, a REST bridge...: built around a connector, run until stopped."""

    connector: AgencyConnector

    async def run(self, stopping: asyncio.Event) -> None: ...


class ConnectorHarness:
    """Runs `handler` as agency `agency` in an `AgencyConnector` on a `MemoryTransport`, or,
    with `build`, the agency `build(connector_factory)` returns (a `RestBridge`, say).
    `connector_options` go to the connector (group_id, graceful_timeout_s, retry...)."""

    def __init__(
        self,
        agency: str,
        handler: Handler | None = None,
        *,
        build: Callable[[ConnectorFactory], RunnableAgency] | None = None,
        topics: Topics | None = None,
        codec: Codec | None = None,
        partitions: int = 2,
        **connector_options: Any,
    ) -> None:
        self.agency = agency
        self.topics = topics or Topics("test")
        self.codec = codec or Codec()
        self.transport = MemoryTransport()
        if (handler is None) == (build is None):
            raise ValueError("give a handler or a build function, not both")
        self._handler = handler
        self._build = build
        self._partitions = partitions
        self._options = connector_options
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.connector: AgencyConnector | None = None
        self.agency_under_test: RunnableAgency | None = None

    async def __aenter__(self) -> ConnectorHarness:
        await self.transport.start()
        names = [self.topics.requests(self.agency), self.topics.responses(self.agency)]
        await self.transport.create_topics([*names, self.topics.dlq], self._partitions)
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        try:
            await self.stop()
        finally:
            await self.transport.stop()

    async def start(self) -> None:
        """Start a connector (a new group member, resuming from the group's commits)."""
        self._stopping = asyncio.Event()
        runnable: RunnableAgency | AgencyConnector
        if self._build is not None:
            runnable = self.agency_under_test = self._build(self._connector)
            self.connector = runnable.connector
        else:
            assert self._handler is not None
            runnable = self.connector = self._connector(self.agency, self._handler)
        self._task = asyncio.create_task(runnable.run(self._stopping))
        async with asyncio.timeout(5):
            await self.connector.ready.wait()

    def _connector(self, agency: str, handler: Handler) -> AgencyConnector:
        return AgencyConnector(
            agency, handler, self.transport, self.codec, self.topics, **self._options
        )

    async def stop(self) -> None:
        """Graceful stop; re-raises what the connector raised."""
        task, self._task = self._task, None
        if task is not None:
            self._stopping.set()
            await task

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def send(self, *requests: AgencyRequest | bytes, key: bytes | None = None) -> None:
        """Write requests (models, or raw bytes for poison tests) to the requests topic."""
        records = [
            Outgoing(
                self.topics.requests(self.agency),
                r if isinstance(r, bytes) else self.codec.encode(r),
                key if isinstance(r, bytes) or key is not None else r.submission_id.encode(),
            )
            for r in requests
        ]
        await self.transport.producer().send_batch(records)

    async def responses(self, count: int, timeout_s: float = 5.0) -> list[AgencyResponse]:
        """Wait until the responses topic holds at least `count` records; decode them all."""
        records = await self._wait_for(self.topics.responses(self.agency), count, timeout_s)
        return [self.codec.decode(r.value or b"", AgencyResponse) for r in records]

    async def dead_letters(self, count: int, timeout_s: float = 5.0) -> list[Record]:
        return await self._wait_for(self.topics.dlq, count, timeout_s)

    async def records(self, topic: str) -> list[Record]:
        """Everything on `topic` now, partition by partition."""
        found: list[Record] = []
        for partition in range(await self.transport.partitions_for(topic)):
            found.extend(await self.transport.read_partition(topic, partition))
        return found

    async def _wait_for(self, topic: str, count: int, timeout_s: float) -> list[Record]:
        async with asyncio.timeout(timeout_s):
            while True:
                found = await self.records(topic)
                if len(found) >= count:
                    return found
                if self._task is not None and self._task.done():
                    await self._task  # surface the connector's failure instead of a timeout
                await asyncio.sleep(0.005)

"""Helpers for the agency-side tests on the embedded broker: settings, a clock the test moves,
services run in the test's loop, submissions, and a watcher of the decisions topic."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from datetime import datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from broker.bootstrap import App
from broker.core.declaration import now_utc
from broker.core.intake import declare
from broker.core.messages import AgencyRequest, AgencyResponse, AgencyStatus, Decision, Submission
from broker.runtime.transport import Consumer, Outgoing
from broker.settings import KafkaSettings, Settings

#: Tansu holds a JoinGroup for half the session timeout: 6 s keeps joins near 3 s.
FAST_GROUPS = KafkaSettings(session_timeout_ms=6000, heartbeat_interval_ms=500)
WAIT_S = 45.0
TRADER = "NL000000000042"


def kafka_settings(bootstrap: str, prefix: str, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "kafka_bootstrap_servers": bootstrap,
        "topic_prefix": prefix,
        "partitions": 2,
        "kafka": FAST_GROUPS,
        "deadline_check_interval_s": 0.1,
        "shutdown_timeout_s": 10.0,
    }
    values.update(extra)
    return Settings(**values)


class MovableClock:
    """Real time plus an offset the test advances (to make an agency overdue)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return now_utc() + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


Service = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


@contextlib.asynccontextmanager
async def running(*services: Service) -> AsyncIterator[asyncio.Event]:
    """Run services in this loop; stop them (and see their failures) on exit."""
    stopping = asyncio.Event()
    async with asyncio.TaskGroup() as tasks:
        for service in services:
            tasks.create_task(service(stopping))
        try:
            yield stopping
        finally:
            stopping.set()


def sample_submission(name: str, now: datetime) -> Submission:
    """A shipped sample declaration with a fresh LRN, as a new submission."""
    path = Path(str(resources.files("broker.samples"))) / f"{name}.json"
    declaration = json.loads(path.read_text())
    declaration["lrn"] = f"T-{uuid.uuid4().hex[:10]}"
    return declare(json.dumps(declaration).encode(), trader_id=TRADER, channel="test", now=now)


async def submit(app: App, submission: Submission) -> None:
    await app.transport.producer().send_batch(
        [
            Outgoing(
                app.topics.submissions,
                app.codec.encode(submission),
                submission.submission_id.encode(),
            )
        ]
    )


def clears(agency: str) -> Callable[[AgencyRequest], Coroutine[Any, Any, Sequence[AgencyResponse]]]:
    """A handler for `agency` that clears every review at once."""

    async def handler(request: AgencyRequest) -> Sequence[AgencyResponse]:
        if request.kind.value == "WITHDRAWAL":
            return []
        return [
            AgencyResponse(
                submission_id=request.submission_id,
                version=request.version,
                agency=agency,
                status=AgencyStatus.CLEARED,
                answered_at=request.sent_at,
                sequence=1,
            )
        ]

    return handler


class DecisionWatch:
    """Follows the decisions topic from the start, in its own consumer group."""

    def __init__(self, app: App) -> None:
        self._app = app
        self._consumer: Consumer | None = None
        self.decisions: list[Decision] = []

    async def __aenter__(self) -> DecisionWatch:
        self._consumer = await self._app.transport.consumer(
            f"test-watch-{uuid.uuid4().hex[:8]}", [self._app.topics.decisions]
        )
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def until(
        self, submission_id: str, condition: Callable[[Decision], bool], what: str
    ) -> Decision:
        assert self._consumer is not None
        try:
            async with asyncio.timeout(WAIT_S):
                while True:
                    for record in await self._consumer.getmany(timeout_ms=100):
                        decision = self._app.codec.decode(record.value or b"", Decision)
                        self.decisions.append(decision)
                        if decision.submission_id == submission_id and condition(decision):
                            return decision
        except TimeoutError:
            seen = [
                (d.outcome.value, {a.agency: a.status.value for a in d.agencies})
                for d in self.decisions
                if d.submission_id == submission_id
            ]
            raise AssertionError(f"no decision {what} within {WAIT_S} s; saw {seen}") from None


def status_of(decision: Decision, agency: str) -> str:
    return next(line.status.value for line in decision.agencies if line.agency == agency)

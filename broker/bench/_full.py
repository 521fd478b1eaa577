"""The full pipeline under bench: the broker's own router and aggregator, and simulated
agencies on the connector SDK that answer at once, built through the composition root.

Consumer groups are named after the run's topic prefix, so a bench on a shared Kafka never
joins the groups of a broker running there, and scale-out workers join the bench's groups.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection, Coroutine, Sequence
from typing import Any

from broker.bench._driver import SendBatch, Tracker
from broker.bench._workload import BENCH_PROFILE
from broker.bootstrap import App, open_app
from broker.core.codec import SINGLE_OBJECT_MAGIC, Codec
from broker.runtime.aggregator import AggregatorService
from broker.runtime.router import RouterService
from broker.runtime.transport import Outgoing
from broker.settings import Settings
from connectors.sdk import AgencyConnector, Handler
from connectors.simulated import SimulatedAgency

__all__ = ["ROLES", "Service", "full_pipeline", "pipeline_services"]

ROLES = ("router", "aggregator", "agencies")
Service = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


def pipeline_services(
    app: App, roles: Collection[str] = ROLES
) -> tuple[list[Service], list[asyncio.Event]]:
    """The services of `roles`, and the events set once each has joined its group."""
    prefix = app.settings.topic_prefix
    services: list[Service] = []
    ready: list[asyncio.Event] = []
    if "router" in roles:
        router = RouterService(
            app.transport,
            app.codec,
            app.rules,
            app.topics,
            app.metrics,
            app.clock,
            group_id=f"{prefix}-router",
        )
        services.append(router.run)
        ready.append(router.ready)
    if "aggregator" in roles:
        aggregator = AggregatorService(
            app.transport,
            app.codec,
            app.topics,
            app.metrics,
            app.clock,
            group_id=f"{prefix}-aggregator",
            deadline_check_interval_s=app.settings.deadline_check_interval_s,
        )
        services.append(aggregator.run)
        ready.append(aggregator.ready)
    if "agencies" in roles:

        def connector(agency: str, handler: Handler) -> AgencyConnector:
            return AgencyConnector(
                agency,
                handler,
                app.transport,
                app.codec,
                app.topics,
                group_id=f"{prefix}-agency-{agency}",
                graceful_timeout_s=app.settings.shutdown_timeout_s / 2,
            )

        for code in app.topics.agencies:
            agency = SimulatedAgency(code, connector, BENCH_PROFILE)
            services.append(agency.run)
            ready.append(agency.connector.ready)
    return services, ready


#: The fields in front of `final` in a Decision, and their Avro kinds (string or long).
_BEFORE_FINAL = (
    ("decision_id", "s"),
    ("submission_id", "s"),
    ("version", "l"),
    ("trader_id", "s"),
    ("outcome", "l"),
)


def _zigzag(data: bytes, pos: int) -> tuple[int, int]:
    shift = result = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return (result >> 1) ^ -(result & 1), pos
        shift += 7


def final_flag(codec: Codec) -> Callable[[bytes], bool]:
    """Whether a Decision's bytes say `final`, read from the few fields in front of it: the
    bench's trader only needs that flag, and a full decode of every interim decision would
    bill the measuring device to the pipeline (the baseline's trader decodes nothing)."""
    info = codec.repository.get("Decision")
    header = SINGLE_OBJECT_MAGIC + info.fingerprint.to_bytes(8, "little")
    names = [f["name"] for f in info.parsed["fields"]]
    if names[: len(_BEFORE_FINAL) + 1] != [n for n, _ in _BEFORE_FINAL] + ["final"]:
        return lambda value: bool(codec.decode_dict(value)[1]["final"])

    def final(value: bytes) -> bool:
        if not value.startswith(header):
            return bool(codec.decode_dict(value)[1]["final"])
        pos = len(header)
        for _, kind in _BEFORE_FINAL:
            number, pos = _zigzag(value, pos)
            if kind == "s":
                pos += number
        return value[pos] == 1

    return final


async def _follow(app: App, tracker: Tracker, stopping: asyncio.Event) -> None:
    """Read `sw.decisions` as a trader would, noting each submission's final decision."""
    is_final = final_flag(app.codec)
    consumer = await app.transport.consumer(
        f"{app.settings.topic_prefix}-bench-follower", [app.topics.decisions]
    )
    try:
        while not stopping.is_set():
            for record in await consumer.getmany(timeout_ms=100):
                if is_final(record.value or b""):
                    tracker.decided(record.key)
                else:
                    tracker.interim()
    finally:
        await consumer.stop()


@contextlib.asynccontextmanager
async def full_pipeline(
    settings: Settings, tracker: Tracker, roles: Sequence[str] = ROLES, *, memory: bool = False
) -> AsyncIterator[SendBatch]:
    """Run the pipeline (the `roles` of it in this process) and a decision follower; yields
    the function that submits (key, value) pairs. Stops everything on exit. `memory`: on the
    in-memory transport, to measure the broker's own CPU without Kafka."""
    async with open_app(settings, memory=memory) as app:
        services, ready = pipeline_services(app, roles)
        stopping = asyncio.Event()

        async def send(items: Sequence[tuple[bytes, bytes]]) -> None:
            topic = app.topics.submissions
            await app.transport.producer().send_batch(
                [Outgoing(topic, value, key=key) for key, value in items]
            )

        async def follow(stopping: asyncio.Event) -> None:
            await _follow(app, tracker, stopping)

        async with asyncio.TaskGroup() as tasks:
            for service in [*services, follow]:
                tasks.create_task(service(stopping))
            try:
                await asyncio.gather(*(event.wait() for event in ready))
                yield send
            finally:
                stopping.set()

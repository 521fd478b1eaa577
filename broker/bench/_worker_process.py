"""The scale-out worker process of `swb bench` (see `_workers`): runs pipeline roles in the
bench's consumer groups, prints `ready` once joined, stops when its stdin closes. A module of
its own, imported by nothing, so `python -m` runs it without importing it twice."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from broker.settings import Settings


async def _stdin_closed() -> None:
    reader = asyncio.StreamReader()
    loop = asyncio.get_running_loop()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    await reader.read()


def _ready() -> None:
    sys.stdout.write("ready\n")
    sys.stdout.flush()


async def _serve(roles: Sequence[str]) -> None:
    """The broker's own services of `roles`."""
    from broker.bench._full import pipeline_services
    from broker.bootstrap import open_app

    stopping = asyncio.Event()

    async def watch_stdin() -> None:
        await _stdin_closed()
        stopping.set()

    async with open_app(Settings(), create_topics=False) as app:
        services, ready = pipeline_services(app, roles)
        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(watch_stdin())
            for service in services:
                tasks.create_task(service(stopping))
            await asyncio.gather(*(event.wait() for event in ready))
            _ready()


async def _serve_bare(roles: Sequence[str]) -> None:
    """The baseline's bare hops of `roles` (agencies: they need no workload)."""
    from broker.bench._baseline import bare_hops
    from broker.bench._workload import bases
    from broker.core.codec import Codec
    from broker.core.declaration import now_utc
    from broker.core.rules import load_rules

    settings = Settings()
    codec = Codec()
    async with bare_hops(settings, bases(load_rules(settings.rules_file), codec, now_utc()), roles):
        _ready()
        await _stdin_closed()


def main() -> None:
    from broker.runtime.logging import configure_logging

    configure_logging("json", "WARNING")
    roles = sys.argv[1].split(",")
    asyncio.run(_serve_bare(roles) if "--bare" in sys.argv[2:] else _serve(roles))


if __name__ == "__main__":
    main()

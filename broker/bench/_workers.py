"""Scale-out workers: more processes running the pipeline's services in the bench's consumer
groups, so Kafka splits the partitions between them (`swb bench --workers N`).

A worker is `python -m broker.bench._worker_process ROLES` with the bench's broker and topic prefix
in its environment. It prints `ready` once its consumers have joined their groups and stops
when its stdin closes, which also happens when the bench dies: no orphan keeps running.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import AsyncIterator, Sequence

from broker.errors import SwbError
from broker.settings import Settings

__all__ = ["Worker", "workers"]

_READY = b"ready"
_START_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 20.0


class Worker:
    """One worker process; `pid` for its CPU time."""

    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process

    @property
    def pid(self) -> int:
        return self.process.pid

    async def ready(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            if line.strip() == _READY:
                return
        raise SwbError(f"bench worker {self.pid} exited before it was ready")

    async def stop(self) -> None:
        if self.process.stdin is not None:
            self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), _STOP_TIMEOUT_S)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()


@contextlib.asynccontextmanager
async def workers(
    roles_per_worker: Sequence[Sequence[str]], settings: Settings, *, bare: bool = False
) -> AsyncIterator[list[Worker]]:
    """Start one worker per entry, running those roles against the broker and prefix of
    `settings`; wait until they have joined their groups, stop them on exit."""
    # The bench's own environment (so SWB_KAFKA__* client settings are the same), with the
    # broker, prefix and partitions this run chose.
    env = {
        **os.environ,
        "SWB_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers or "",
        "SWB_TOPIC_PREFIX": settings.topic_prefix,
        "SWB_PARTITIONS": str(settings.partitions),
        "SWB_LOG_LEVEL": "WARNING",
    }
    started: list[Worker] = []
    try:
        for roles in roles_per_worker:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "broker.bench._worker_process",
                ",".join(roles),
                *(["--bare"] if bare else []),
                env=env,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
            )
            started.append(Worker(process))
        async with asyncio.timeout(_START_TIMEOUT_S):
            await asyncio.gather(*(worker.ready() for worker in started))
        yield started
    finally:
        await asyncio.gather(*(worker.stop() for worker in started))

"""The loop every service runs around its consumer."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from broker.runtime.transport import Consumer, Record

#: How long one fetch may wait for records before the loop looks at `stopping` again.
POLL_MS = 100


async def consume_batches(
    consumer: Consumer,
    stopping: asyncio.Event,
    lock: asyncio.Lock,
    handle: Callable[[list[Record]], Awaitable[None]],
) -> None:
    """Fetch a batch and handle it under the service's lock (so a rebalance callback waits
    for the batch in hand to be written and committed) until `stopping` is set; then leave
    the group, also after a failure."""
    try:
        while not stopping.is_set():
            records = await consumer.getmany(timeout_ms=POLL_MS)
            if records:
                async with lock:
                    await handle(records)
    finally:
        await consumer.stop()

"""The trader's side of a bench phase, the same for the full pipeline and the baseline: offer
pre-encoded submissions (flat out, or at a rate), note when each one's final decision arrives.

Latency runs from when a submission was *due* (its slot at the offered rate, or the moment
its chunk was handed to the producer when flat out) to when its final decision was read, so
a sender that falls behind shows up as latency instead of hiding it.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Coroutine, Iterable, Sequence
from typing import Any

__all__ = ["SendBatch", "Tracker", "offer", "percentile"]

#: Sends (key, value) submissions and returns once the broker has acknowledged them.
SendBatch = Callable[[Sequence[tuple[bytes, bytes]]], Coroutine[Any, Any, None]]

#: Submissions per producer call when flat out: big enough to batch, small enough that the
#: pipeline starts work while the rest is still being sent.
CHUNK = 500


class Tracker:
    """When each submission was offered and when its final decision arrived."""

    def __init__(self, on_decided: Callable[[int], None] | None = None) -> None:
        self.offered_at: dict[bytes, float] = {}
        self.decided_at: dict[bytes, float] = {}
        self.repeated = 0
        self.records = 0  # decision records read, interim ones included
        self.on_decided = on_decided
        self._waiting: set[bytes] = set()
        self._all_decided = asyncio.Event()

    def expect(self, keys: Iterable[bytes]) -> None:
        """The submissions `wait` waits for (those already decided do not count)."""
        self._waiting = {key for key in keys if key not in self.decided_at}
        self._all_decided.clear()
        if not self._waiting:
            self._all_decided.set()

    def offered(self, key: bytes, at: float) -> None:
        self.offered_at.setdefault(key, at)

    def interim(self) -> None:
        """A decision that is not final yet was read."""
        self.records += 1

    def decided(self, key: bytes | None) -> None:
        """A final decision for `key` was read (repeats, and unknown keys, are ignored)."""
        self.records += 1
        if key is None or key not in self.offered_at:
            return
        if key in self.decided_at:
            self.repeated += 1  # a re-delivery (same decision) after a rebalance, say
            return
        self.decided_at[key] = time.perf_counter()
        if key in self._waiting:
            self._waiting.discard(key)
            if self.on_decided is not None:
                self.on_decided(1)
            if not self._waiting:
                self._all_decided.set()

    async def wait(self, timeout_s: float) -> bool:
        """True once every expected submission is decided; False after `timeout_s`."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._all_decided.wait()
        except TimeoutError:
            return False
        return True

    @property
    def missing(self) -> int:
        return len(self._waiting)

    def latencies_ms(self, keys: Iterable[bytes]) -> list[float]:
        return sorted(
            (self.decided_at[k] - self.offered_at[k]) * 1000
            for k in keys
            if k in self.decided_at and k in self.offered_at
        )


async def offer(
    keys: Sequence[bytes],
    values: Sequence[bytes],
    send: SendBatch,
    tracker: Tracker,
    rate: float | None,
) -> None:
    """Send every submission: flat out in chunks, or each at its slot `i / rate`."""
    if rate is None:
        for start in range(0, len(keys), CHUNK):
            chunk = range(start, min(len(keys), start + CHUNK))
            now = time.perf_counter()
            for i in chunk:
                tracker.offered(keys[i], now)
            await send([(keys[i], values[i]) for i in chunk])
        return
    began = time.perf_counter()
    sent = 0
    # Sends overlap (each waits for its acknowledgement), so a slow ack never delays a slot.
    async with asyncio.TaskGroup() as sends:
        while sent < len(keys):
            due = min(len(keys), math.floor((time.perf_counter() - began) * rate) + 1)
            if due > sent:
                for i in range(sent, due):
                    tracker.offered(keys[i], began + i / rate)
                sends.create_task(send([(keys[i], values[i]) for i in range(sent, due)]))
                sent = due
            await asyncio.sleep(max(0.0, began + sent / rate - time.perf_counter()))


def percentile(ordered: Sequence[float], fraction: float) -> float | None:
    """Nearest-rank percentile of an ascending list (None when empty)."""
    if not ordered:
        return None
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]

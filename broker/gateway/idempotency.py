"""Idempotency-Key: a retried request gets the first answer and creates nothing new.

An answer is remembered per (trader, key) with a fingerprint of the request (method, path,
query and body hash): the same key with another request is a 409. Only successful answers
are remembered, so a retry after a 503 tries the write again. The store is bounded (TTL and
a cap, oldest first) and is also fed from the `swb-idempotency-*` headers of the records on
`sw.submissions`, so a key survives a gateway restart and is known to every gateway replica.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta

KEY_HEADER = "swb-idempotency-key"
FINGERPRINT_HEADER = "swb-request-sha256"
MAX_KEY_LENGTH = 200


def request_fingerprint(method: str, path: str, query: str, body: bytes) -> str:
    head = f"{method.upper()} {path}?{query}\n".encode()
    return hashlib.sha256(head + hashlib.sha256(body).digest()).hexdigest()


@dataclass(frozen=True, slots=True)
class StoredAnswer:
    fingerprint: str
    status: int
    body: bytes
    stored_at: datetime


class KeyedLocks:
    """One asyncio lock per key, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[str, tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        lock, users = self._locks.get(key, (asyncio.Lock(), 0))
        self._locks[key] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[key]
            if users == 1:
                del self._locks[key]
            else:
                self._locks[key] = (lock, users - 1)

    def __len__(self) -> int:
        return len(self._locks)


class IdempotencyStore:
    def __init__(self, *, clock: Callable[[], datetime], ttl_s: float, max_keys: int) -> None:
        self._clock = clock
        self._ttl = timedelta(seconds=ttl_s)
        self._max_keys = max_keys
        self._answers: OrderedDict[tuple[str, str], StoredAnswer] = OrderedDict()
        self.locks = KeyedLocks()

    def __len__(self) -> int:
        return len(self._answers)

    def get(self, trader_id: str, key: str) -> StoredAnswer | None:
        self._expire()
        return self._answers.get((trader_id, key))

    def put(self, trader_id: str, key: str, answer: StoredAnswer) -> None:
        """Remember the first answer for a key; a later one never replaces it."""
        self._answers.setdefault((trader_id, key), answer)
        self._expire()

    def _expire(self) -> None:
        cutoff = self._clock() - self._ttl
        while self._answers:
            oldest_key, oldest = next(iter(self._answers.items()))
            if oldest.stored_at >= cutoff and len(self._answers) <= self._max_keys:
                return
            del self._answers[oldest_key]

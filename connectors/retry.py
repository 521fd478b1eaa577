"""Exponential backoff with jitter, shared by the SDK (retriable handler errors) and the REST
bridge (endpoint retries). Pure: the caller sleeps."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """`initial_s * multiplier**attempt`, capped at `max_s`, minus up to `jitter` of itself
    (so a fleet of bridges does not retry in lock step after an outage)."""

    initial_s: float = 0.5
    max_s: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if self.initial_s <= 0 or self.max_s < self.initial_s or self.multiplier < 1:
            raise ValueError("backoff needs 0 < initial_s <= max_s and multiplier >= 1")
        if not 0 <= self.jitter < 1:
            raise ValueError("backoff jitter is a fraction in [0, 1)")

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before retry number `attempt` (0 for the first retry)."""
        base = min(self.max_s, self.initial_s * self.multiplier ** min(attempt, 64))
        roll = (rng or random).random()
        return base * (1 - self.jitter * roll)

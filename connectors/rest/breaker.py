"""A circuit breaker, sans I/O (the caller passes the time): after `failure_threshold`
consecutive failures the endpoint is left alone for `reset_timeout_s`, then one trial request
decides whether it is back. Spares an agency that is down a storm of retries, and makes a
recovered agency's first request the only one that waits on a possibly dead connection."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["BreakerState", "CircuitBreaker"]


class BreakerState(StrEnum):
    CLOSED = "closed"  # calls go through
    OPEN = "open"  # calls wait until the reset timeout
    HALF_OPEN = "half-open"  # one trial call is in flight; the others wait for its outcome


class CircuitBreaker:
    def __init__(self, failure_threshold: int = 5, reset_timeout_s: float = 30.0) -> None:
        if failure_threshold < 1 or reset_timeout_s <= 0:
            raise ValueError("a breaker needs failure_threshold >= 1 and reset_timeout_s > 0")
        self.failure_threshold = failure_threshold
        self.reset_timeout_s = reset_timeout_s
        self.state = BreakerState.CLOSED
        self.failures = 0
        self._opened_at = 0.0

    def admit(self, now: float) -> float:
        """0 when a call may go now (in HALF_OPEN, the caller is the trial); otherwise the
        seconds to wait before asking again."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        if self.state is BreakerState.OPEN:
            remaining = self._opened_at + self.reset_timeout_s - now
            if remaining > 0:
                return remaining
            self.state = BreakerState.HALF_OPEN
            return 0.0
        return self.reset_timeout_s  # a trial is in flight: its outcome will wake the waiters

    def succeeded(self) -> None:
        self.state = BreakerState.CLOSED
        self.failures = 0

    def failed(self, now: float) -> None:
        self.failures += 1
        if self.state is BreakerState.HALF_OPEN or self.failures >= self.failure_threshold:
            self.state = BreakerState.OPEN
            self._opened_at = now

    def abandoned(self, now: float) -> None:
        """A call gave no verdict (cancelled at shutdown): let the next caller try at once."""
        if self.state is BreakerState.HALF_OPEN:
            self.state = BreakerState.OPEN
            self._opened_at = now - self.reset_timeout_s

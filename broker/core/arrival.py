"""Pre-arrival processing (Revised Kyoto Convention: lodging the declaration before the goods
arrive), sans I/O.

A declaration lodged before its goods arrive is routed and decided at once, like any other;
the decision says that a release takes effect on arrival (`Decision.release_on_arrival`), and
the first `ArrivalNotice` for the submission completes it: the aggregator re-issues the
decision with `arrived_at` set. Whether a version is pre-arrival is decided from the
declaration and the time the single window received it, never from a clock, so replaying the
same submission always gives the same answer.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from broker.core.declaration import Declaration, DeclarationType
from broker.core.messages import ArrivalNotice

__all__ = ["ARRIVAL_CLOCK_SKEW", "is_pre_arrival", "notice_of_arrival"]

#: How far in the future an arrival time may lie when the notice is received: clocks of the
#: terminal, the trader and the single window disagree by seconds, not by more.
ARRIVAL_CLOCK_SKEW = timedelta(minutes=5)


def is_pre_arrival(declaration: Declaration | None, received_at: datetime) -> bool:
    """True when the goods had not arrived when the single window received the declaration:
    the declared arrival lies after `received_at`, or an import names no arrival time yet (a
    declaration lodged before the means of transport has even reported). Exports and transits
    without an arrival time concern departing goods: never pre-arrival."""
    if declaration is None:
        return False
    arrival = declaration.transport.arrival_at
    if arrival is None:
        return declaration.type is DeclarationType.IMPORT
    return arrival > received_at


def notice_of_arrival(
    submission_id: str,
    *,
    trader_id: str,
    channel: str,
    received_at: datetime,
    arrived_at: datetime | None = None,
    submitted_by: str | None = None,
    means_id: str | None = None,
) -> ArrivalNotice:
    """An arrival notice as the single window records it. Without `arrived_at` the goods
    arrived when the notice was received. Raises ValueError for an arrival in the future
    (beyond the clock skew allowed): a notice records what happened, not a plan."""
    arrived = arrived_at or received_at
    if arrived > received_at + ARRIVAL_CLOCK_SKEW:
        raise ValueError(
            f"arrived_at {arrived.isoformat()} is in the future (received "
            f"{received_at.isoformat()}); send the notice once the goods have arrived"
        )
    return ArrivalNotice(
        submission_id=submission_id,
        trader_id=trader_id,
        arrived_at=arrived,
        received_at=received_at,
        channel=channel,
        submitted_by=submitted_by,
        means_id=means_id,
    )

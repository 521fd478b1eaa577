"""Which offsets may be committed: per partition, the end of the unbroken run of handled
records. Pure; the SDK's pipeline feeds it."""

from __future__ import annotations

from collections import OrderedDict

from broker.runtime.transport import Record, TopicPartition

__all__ = ["OffsetTracker"]


class OffsetTracker:
    """Records are `add`ed in fetch order and marked `done` in any order; `committable` gives,
    per partition, the offset after the last record of the handled prefix, and forgets it.
    A request still in the handler holds back the commit of its partition, never another's."""

    def __init__(self) -> None:
        self._pending: dict[TopicPartition, OrderedDict[int, bool]] = {}

    def add(self, record: Record) -> None:
        tp = TopicPartition(record.topic, record.partition)
        self._pending.setdefault(tp, OrderedDict()).setdefault(record.offset, False)

    def done(self, record: Record) -> None:
        offsets = self._pending.get(TopicPartition(record.topic, record.partition))
        if offsets is not None and record.offset in offsets:
            offsets[record.offset] = True

    def committable(self) -> dict[TopicPartition, int]:
        ready: dict[TopicPartition, int] = {}
        for tp, offsets in self._pending.items():
            while offsets:
                offset, handled = next(iter(offsets.items()))
                if not handled:
                    break
                offsets.popitem(last=False)
                ready[tp] = offset + 1
        return ready

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Partitions taken away in a rebalance: their new owner starts from the last commit."""
        for tp in partitions:
            self._pending.pop(tp, None)

    def unhandled(self) -> int:
        return sum(not done for offsets in self._pending.values() for done in offsets.values())

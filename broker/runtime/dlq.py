"""Dead letters: the original bytes, with headers saying why and where they came from."""

from __future__ import annotations

from broker.runtime.transport import Outgoing, Record

REASON = "swb.error.reason"
MESSAGE = "swb.error.message"
SOURCE_TOPIC = "swb.source.topic"
SOURCE_PARTITION = "swb.source.partition"
SOURCE_OFFSET = "swb.source.offset"
SERVICE = "swb.service"


def dead_letter(
    dlq_topic: str, record: Record, reason: str, message: str, service: str
) -> Outgoing:
    """A DLQ record for `record`: value and key untouched, the original headers kept after ours."""
    headers = (
        (REASON, reason.encode()),
        (MESSAGE, message[:2000].encode()),
        (SOURCE_TOPIC, record.topic.encode()),
        (SOURCE_PARTITION, str(record.partition).encode()),
        (SOURCE_OFFSET, str(record.offset).encode()),
        (SERVICE, service.encode()),
    )
    return Outgoing(dlq_topic, record.value, key=record.key, headers=headers + record.headers)


def header(record: Record, name: str) -> str | None:
    for key, value in record.headers:
        if key == name:
            return value.decode(errors="replace")
    return None

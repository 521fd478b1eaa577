"""Record -> `AgencyRequest`, or a refusal naming why (the SDK dead-letters it). Pure."""

from __future__ import annotations

from broker.core.codec import Codec
from broker.core.messages import AgencyRequest
from broker.errors import CodecError
from broker.runtime.transport import Record
from connectors.errors import RequestRefused

__all__ = ["parse_request"]


def parse_request(record: Record, codec: Codec, agency: str) -> AgencyRequest:
    """Decode one record of `agency`'s requests topic.

    Raises RequestRefused for bytes that are not an AgencyRequest (the codec's reason), a
    request addressed to another agency (`agency-mismatch`: identity is the topic), or a
    record whose key is not its submission id (`key-mismatch`: ordering per submission relies
    on it)."""
    try:
        request = codec.decode(record.value or b"", AgencyRequest)
    except CodecError as exc:
        raise RequestRefused(exc.reason, str(exc)) from exc
    if request.agency != agency:
        raise RequestRefused(
            "agency-mismatch", f"request for {request.agency!r} on {agency!r}'s requests topic"
        )
    if record.key is not None and record.key != request.submission_id.encode():
        raise RequestRefused(
            "key-mismatch",
            f"record key {record.key!r} is not the submission_id {request.submission_id}",
        )
    return request

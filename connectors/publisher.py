"""`AgencyResponse` -> records on the agency's own responses topic.

A connector speaks for one agency only: an answer naming another agency is a bug in the
handler, refused here before it reaches Kafka (the aggregator would dead-letter it anyway)."""

from __future__ import annotations

from collections.abc import Sequence

from broker.core.codec import Codec
from broker.core.messages import AgencyResponse
from broker.core.topics import Topics
from broker.runtime.transport import Outgoing, Producer
from connectors.errors import ConnectorError

__all__ = ["ResponsePublisher"]


class ResponsePublisher:
    def __init__(self, agency: str, codec: Codec, topics: Topics, producer: Producer) -> None:
        self.agency = agency
        self.topic = topics.responses(agency)
        self._codec = codec
        self._producer = producer

    def outgoing(self, response: AgencyResponse) -> Outgoing:
        """The record for one answer, keyed by submission id (same partition as its plan)."""
        if response.agency != self.agency:
            raise ConnectorError(
                f"the {self.agency!r} connector cannot answer as {response.agency!r}"
            )
        return Outgoing(self.topic, self._codec.encode(response), response.submission_id.encode())

    async def publish(self, responses: Sequence[AgencyResponse]) -> None:
        """Write the answers; returns once the broker acknowledged all of them (acks=all)."""
        await self.send([self.outgoing(response) for response in responses])

    async def send(self, records: Sequence[Outgoing]) -> None:
        await self._producer.send_batch(records)

"""Topic names (DESIGN §3). Every flow topic is keyed by submission_id and has the same
partition count, so one submission's records share a partition number everywhere."""

from __future__ import annotations

from dataclasses import dataclass

from broker.core.messages import AGENCY_CODES


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = "sw"
    agencies: tuple[str, ...] = AGENCY_CODES

    @property
    def submissions(self) -> str:
        return f"{self.prefix}.submissions"

    @property
    def routing(self) -> str:
        return f"{self.prefix}.routing"

    @property
    def decisions(self) -> str:
        return f"{self.prefix}.decisions"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.dlq"

    @property
    def arrivals(self) -> str:
        """Arrival notices of submissions lodged before their goods arrived (flow topic)."""
        return f"{self.prefix}.arrivals"

    def partner_exchange(self, destination: str) -> str:
        """The export data this single window shares with `destination`'s, keyed by UCR.
        Not a flow topic: read whole by the partner, so its partition count is free."""
        return f"{self.prefix}.partner.exchange.{destination.lower()}"

    @property
    def aggregator_changelog(self) -> str:
        """Internal: the aggregator's state per submission, last record per key wins."""
        return f"{self.prefix}.aggregator.changelog"

    @property
    def permits(self) -> str:
        """Permits (LPCO) and their write-offs, keyed by permit id, last record per key wins:
        compact it on Apache Kafka. Not in `all()` (the deployment's flow topics): `open_app`
        and the permit-issuing agencies (`connectors.permits`) create it."""
        return f"{self.prefix}.permits"

    def requests(self, agency: str) -> str:
        return f"{self.prefix}.agency.{agency}.requests"

    def responses(self, agency: str) -> str:
        return f"{self.prefix}.agency.{agency}.responses"

    def agency_of_response_topic(self, topic: str) -> str | None:
        """The agency a responses topic belongs to: identity is the topic, never the payload."""
        head, tail = f"{self.prefix}.agency.", ".responses"
        if topic.startswith(head) and topic.endswith(tail):
            code = topic[len(head) : -len(tail)]
            return code if code in self.agencies else None
        return None

    def all_responses(self) -> list[str]:
        return [self.responses(code) for code in self.agencies]

    @property
    def webhooks(self) -> str:
        """Internal: the gateway's webhook registrations, last record per key wins."""
        return f"{self.prefix}.gateway.webhooks"

    def all(self) -> list[str]:
        """Every topic the broker uses, all with the same partition count (the partner
        exchange topics are per partner country and created by the exchange service)."""
        names = [self.submissions, self.routing, self.decisions, self.dlq, self.arrivals]
        names += [self.aggregator_changelog, self.permits, self.webhooks]
        for code in self.agencies:
            names += [self.requests(code), self.responses(code)]
        return names

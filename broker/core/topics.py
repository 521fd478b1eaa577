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
    def aggregator_changelog(self) -> str:
        """Internal: the aggregator's state per submission, last record per key wins."""
        return f"{self.prefix}.aggregator.changelog"

    @property
    def permits(self) -> str:
        """Permits (LPCO) and their write-offs, keyed by permit id, last record per key wins:
        compact it on Apache Kafka. Not in `all()` (the deployment's topic list): the agencies
        that issue permits create it (`connectors.permits`)."""
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

    def all(self) -> list[str]:
        """Every topic the broker uses, all with the same partition count."""
        names = [self.submissions, self.routing, self.decisions, self.dlq]
        names.append(self.aggregator_changelog)
        for code in self.agencies:
            names += [self.requests(code), self.responses(code)]
        return names

"""The topic layout of DESIGN §3 as data: what each topic carries, who writes it, who reads it.

The AsyncAPI document (`broker.asyncapi`), the Kafka ACLs (`deploy/acls/`) and the schema
registry subjects (`broker.runtime.registry`) are generated from this one table, so the
published contract, the permissions and the wire cannot drift apart. Sans I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

from broker.core.topics import Topics

__all__ = [
    "AGENCY",
    "ROLES",
    "Channel",
    "channels",
    "consumer_group",
    "group_base",
    "topic_schemas",
]

#: Placeholder for the agency code in per-agency channel addresses.
AGENCY = "{agency}"
#: The processes that hold a Kafka principal of their own. `agency` is one principal per code.
ROLES = ("gateway", "router", "aggregator", "agency")


@dataclass(frozen=True, slots=True)
class Channel:
    """One topic, or one topic per agency when `address` contains `{agency}`."""

    id: str
    address: str
    schema: str | None  # the Avro record of every value (in schemas/); None: opaque bytes
    writers: tuple[str, ...]
    readers: tuple[str, ...]
    summary: str
    description: str
    public: bool = True  # internal state topics are not part of the published contract

    @property
    def per_agency(self) -> bool:
        return AGENCY in self.address

    def topic(self, agency: str | None = None) -> str:
        if self.per_agency:
            if agency is None:
                raise ValueError(f"{self.id} is per agency: name the agency")
            return self.address.replace(AGENCY, agency)
        return self.address

    def topic_names(self, agencies: tuple[str, ...]) -> list[str]:
        return [self.topic(code) for code in agencies] if self.per_agency else [self.address]


def channels(topics: Topics) -> tuple[Channel, ...]:
    """Every topic of the flow, in the order a submission travels."""
    return (
        Channel(
            "submissions",
            topics.submissions,
            "Submission",
            writers=("gateway",),
            readers=("router", "gateway"),
            summary="Declarations as lodged: new, amendment or cancellation.",
            description="Keyed by submission_id. Written by the HTTP gateway (and B2B traders "
            "given a principal of their own), read by the router.",
        ),
        Channel(
            "arrivals",
            topics.arrivals,
            "ArrivalNotice",
            writers=("gateway",),
            readers=("aggregator", "gateway"),
            summary="Arrival notices: the goods of a declaration lodged before arrival arrived.",
            description="Keyed by submission_id; co-partitioned with the flow. The first notice "
            "per submission counts: the decision is re-issued with `arrived_at` and the "
            "release takes effect. Written by the HTTP gateway (POST "
            "/v1/submissions/{id}/arrival) and B2B traders given a principal of their own.",
        ),
        Channel(
            "routing",
            topics.routing,
            "RoutingPlan",
            writers=("router",),
            readers=("aggregator", "gateway"),
            summary="The router's plan per version: agencies concerned, why, and by when.",
            description="Keyed by submission_id; co-partitioned with the agency responses.",
        ),
        Channel(
            "agencyRequests",
            topics.requests(AGENCY),
            "AgencyRequest",
            writers=("router", "aggregator"),
            readers=("agency",),
            summary="One agency's information package to review, or a withdrawal.",
            description="Keyed by submission_id. Only agency {agency} may read it. A REVIEW "
            "asks for an answer before `deadline` (the agency's SLA); a WITHDRAWAL says the "
            "version no longer concerns the agency (amended, cancelled or rejected elsewhere).",
        ),
        Channel(
            "agencyResponses",
            topics.responses(AGENCY),
            "AgencyResponse",
            writers=("agency",),
            readers=("aggregator",),
            summary="One agency's answers; the topic, not the payload, says which agency.",
            description="Keyed by submission_id. Only agency {agency} may write it; a record "
            "whose `agency` field names another agency is dead-lettered. Per agency and "
            "version, the answer with the latest (answered_at, sequence) counts.",
        ),
        Channel(
            "decisions",
            topics.decisions,
            "Decision",
            writers=("aggregator",),
            readers=("gateway",),
            summary="The coordinated decision, re-issued on every change.",
            description="Keyed by submission_id; the latest record per key is the current "
            "decision. `final` marks the last one of a version.",
        ),
        Channel(
            "deadLetters",
            topics.dlq,
            None,
            writers=("router", "aggregator"),
            readers=(),
            summary="Records a consumer refused, byte for byte, with headers saying why.",
            description="Headers: swb.error.reason, swb.error.message, swb.source.topic, "
            "swb.source.partition, swb.source.offset, swb.service. Read by operators.",
        ),
        Channel(
            "aggregatorChangelog",
            topics.aggregator_changelog,
            None,
            writers=("aggregator",),
            readers=("aggregator",),
            summary="The aggregator's saved state per submission (internal).",
            description="JSON, last record per key wins. Not part of the published contract.",
            public=False,
        ),
        Channel(
            "gatewayWebhooks",
            f"{topics.prefix}.gateway.webhooks",
            None,
            writers=("gateway",),
            readers=("gateway",),
            summary="The gateway's webhook subscriptions (internal).",
            description="Shared by the gateway replicas. Not part of the published contract.",
            public=False,
        ),
    )


def topic_schemas(topics: Topics) -> dict[str, str]:
    """Concrete topic name -> the Avro record its values carry (schema-registry subjects)."""
    return {
        name: channel.schema
        for channel in channels(topics)
        if channel.schema is not None
        for name in channel.topic_names(topics.agencies)
    }


def group_base(topics: Topics) -> str:
    """`swb` for the default topic prefix, `swb.<prefix>` otherwise: two single windows
    sharing one Kafka cluster under different topic prefixes never share a consumer group."""
    return "swb" if topics.prefix == Topics().prefix else f"swb.{topics.prefix}"


def consumer_group(topics: Topics, role: str, agency: str | None = None) -> tuple[str, bool]:
    """The consumer group (name, is-a-prefix) each role joins; the ACLs grant exactly these.
    Gateway replicas each follow the flow in a group of their own, hence a prefix."""
    if role == "agency":
        if agency is None:
            raise ValueError("an agency's group needs the agency code")
        return f"{group_base(topics)}-agency-{agency}", False
    if role == "gateway":
        return f"{topics.prefix}.gateway-", True
    return f"{group_base(topics)}-{role}", False

"""`swb audit ID`: a submission's whole history, read back from the topics themselves.

Non-repudiation rests on what the topics hold, not on what a service remembers: every version
as received (the SHA-256 of the payload, who the single window authenticated, when), the plan
of each version, every package and withdrawal sent to each agency, every answer, every
decision issued, arrival notices, records refused to the DLQ, and exports shared with a
partner single window. Each flow topic is keyed by submission id, so only the submission's
partition of each is read. The trail also checks what can be checked: each decision names
the SHA-256 and submitter of the version as received.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from broker.core.codec import Codec
from broker.core.messages import (
    AgencyRequest,
    AgencyResponse,
    ArrivalNotice,
    Decision,
    PartnerExport,
    RequestKind,
    RoutingPlan,
    Submission,
)
from broker.core.topics import Topics
from broker.errors import CodecError, SwbError
from broker.runtime.dlq import MESSAGE, REASON, SERVICE, SOURCE_TOPIC, header
from broker.runtime.memory import partition_for_key
from broker.runtime.partner_exchange import EXPORT_HEADER
from broker.runtime.transport import Record, Transport

__all__ = ["AuditEvent", "AuditTrail", "dumps", "read_audit_trail", "render_table"]

#: Events at the same instant, in the order the flow produces them.
_FLOW_ORDER = (
    "submission",
    "plan",
    "request",
    "withdrawal",
    "arrival",
    "answer",
    "decision",
    "partner-export",
    "dead-letter",
)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One record of the submission's history, where it is stored and what it says."""

    at: datetime  # the record's own time (received, planned, sent, answered, decided)
    kind: str  # one of _FLOW_ORDER
    version: int | None
    agency: str | None
    summary: str
    topic: str
    partition: int
    offset: int
    stored_at: datetime  # when Kafka stored it (the record timestamp)
    record: dict[str, Any]  # the record as decoded, JSON-ready

    def as_json(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "kind": self.kind,
            "version": self.version,
            "agency": self.agency,
            "summary": self.summary,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "stored_at": self.stored_at.isoformat(),
            "record": self.record,
        }


@dataclass
class AuditTrail:
    submission_id: str
    events: list[AuditEvent] = field(default_factory=list)
    checks: list[str] = field(default_factory=list)

    @property
    def found(self) -> bool:
        return bool(self.events)

    def of_kind(self, *kinds: str) -> list[AuditEvent]:
        return [event for event in self.events if event.kind in kinds]

    def versions(self) -> list[dict[str, Any]]:
        """Each version as received: what (SHA-256), by whom, when, how."""
        return [
            {
                key: event.record.get(key)
                for key in (
                    "version",
                    "kind",
                    "received_at",
                    "submitted_by",
                    "trader_id",
                    "channel",
                    "payload_sha256",
                    "reason",
                )
            }
            for event in self.of_kind("submission")
        ]

    def as_json(self) -> dict[str, Any]:
        return {
            "submission_id": self.submission_id,
            "versions": self.versions(),
            "events": [event.as_json() for event in self.events],
            "checks": self.checks,
        }


async def read_audit_trail(
    transport: Transport,
    codec: Codec,
    topics: Topics,
    submission_id: str,
    *,
    partner_countries: Iterable[str] = (),
) -> AuditTrail:
    """Everything the topics hold about `submission_id`, in time order."""
    key = submission_id.encode()
    events: list[AuditEvent] = []
    flow = [topics.submissions, topics.routing, topics.arrivals, topics.decisions, topics.dlq]
    for agency in topics.agencies:
        flow += [topics.requests(agency), topics.responses(agency)]
    for topic in flow:
        for record in await _partition_of_key(transport, topic, key):
            if record.key == key:
                event = _event(codec, topics, record)
                if event is not None:
                    events.append(event)
    for country in partner_countries:
        topic = topics.partner_exchange(country)
        for record in await _whole_topic(transport, topic):
            if dict(record.headers).get(EXPORT_HEADER) == key:
                event = _event(codec, topics, record)
                if event is not None:
                    events.append(event)
    events.sort(key=lambda e: (e.at, _FLOW_ORDER.index(e.kind), e.topic, e.offset))
    trail = AuditTrail(submission_id, events)
    trail.checks = _checks(trail)
    return trail


async def _partition_of_key(transport: Transport, topic: str, key: bytes) -> list[Record]:
    try:
        partitions = await transport.partitions_for(topic)
    except SwbError:
        return []  # a topic this deployment never created (an agency that never ran)
    return await transport.read_partition(topic, partition_for_key(key, partitions))


async def _whole_topic(transport: Transport, topic: str) -> list[Record]:
    try:
        partitions = await transport.partitions_for(topic)
    except SwbError:
        return []
    records: list[Record] = []
    for partition in range(partitions):
        records += await transport.read_partition(topic, partition)
    return records


def _event(codec: Codec, topics: Topics, record: Record) -> AuditEvent | None:
    stored_at = datetime.fromtimestamp(record.timestamp_ms / 1000, UTC)

    def event(
        at: datetime,
        kind: str,
        version: int | None,
        agency: str | None,
        summary: str,
        data: dict[str, Any],
    ) -> AuditEvent:
        return AuditEvent(
            at,
            kind,
            version,
            agency,
            summary,
            record.topic,
            record.partition,
            record.offset,
            stored_at,
            _jsonable(data),
        )

    if record.topic == topics.dlq:
        reason = header(record, REASON) or "?"
        source = header(record, SOURCE_TOPIC) or "?"
        data = {
            "reason": reason,
            "message": header(record, MESSAGE),
            "source_topic": source,
            "service": header(record, SERVICE),
        }
        summary = f"refused by {data['service']}: {reason} ({source}): {data['message']}"
        return event(stored_at, "dead-letter", None, None, summary, data)
    try:
        name, data = codec.decode_dict(record.value or b"")
    except CodecError:  # refused by the consumer that reads it: its dead letter says so
        return None
    match name.rsplit(".", 1)[-1]:
        case "Submission":
            s = Submission.model_validate(data)
            return event(s.received_at, "submission", s.version, None, _submission(s), data)
        case "RoutingPlan":
            p = RoutingPlan.model_validate(data)
            return event(p.planned_at, "plan", p.version, None, _plan(p), data)
        case "AgencyRequest":
            r = AgencyRequest.model_validate(data)
            kind = "withdrawal" if r.kind is RequestKind.WITHDRAWAL else "request"
            return event(r.sent_at, kind, r.version, r.agency, _request(r), data)
        case "AgencyResponse":
            a = AgencyResponse.model_validate(data)
            agency = topics.agency_of_response_topic(record.topic) or a.agency
            return event(a.answered_at, "answer", a.version, agency, _answer(a), data)
        case "Decision":
            d = Decision.model_validate(data)
            return event(d.decided_at, "decision", d.version, None, _decision(d), data)
        case "ArrivalNotice":
            n = ArrivalNotice.model_validate(data)
            summary = (
                f"goods arrived {n.arrived_at.isoformat()} (notice from "
                f"{n.submitted_by or n.trader_id} via {n.channel})"
            )
            return event(n.received_at, "arrival", None, None, summary, data)
        case "PartnerExport":
            x = PartnerExport.model_validate(data)
            summary = (
                f"export data shared with {x.destination_country} single window, UCR {x.ucr}, "
                f"{len(x.items)} item(s)"
            )
            return event(stored_at, "partner-export", x.version, None, summary, data)
    return None


def _submission(s: Submission) -> str:
    who = s.submitted_by or f"{s.trader_id} (not authenticated by the single window)"
    text = (
        f"v{s.version} {s.kind.value} received from {who} via {s.channel}, "
        f"sha256 {s.payload_sha256[:16]}…"
    )
    return text + (f", reason: {s.reason}" if s.reason else "")


def _plan(p: RoutingPlan) -> str:
    agencies = ", ".join(route.agency for route in p.agencies) or "no agency"
    notes = [note for note, on in (("pre-arrival", p.pre_arrival),) if on]
    if p.shared_with:
        notes.append(f"shared with {p.shared_with} once released")
    return f"v{p.version} routed to {agencies}" + (f" ({'; '.join(notes)})" if notes else "")


def _request(r: AgencyRequest) -> str:
    if r.kind is RequestKind.WITHDRAWAL:
        return f"v{r.version} withdrawn from {r.agency}: {r.withdrawal_reason or ''}".rstrip(": ")
    items = ", ".join(str(i.sequence) for i in r.package.items) if r.package else ""
    text = f"v{r.version} package to {r.agency}: items {items or '-'}, due {r.deadline.isoformat()}"
    partner = r.package.partner if r.package else None
    if partner is not None:
        text += (
            f"; partner data {partner.status.value} ({partner.partner_country}, "
            f"{len(partner.mismatches)} mismatch(es))"
        )
    return text


def _answer(a: AgencyResponse) -> str:
    text = f"v{a.version} {a.agency} {a.status.value} (sequence {a.sequence})"
    if a.reasons:
        text += ": " + "; ".join(a.reasons)
    return text


def _decision(d: Decision) -> str:
    lines = ", ".join(f"{line.agency} {line.status.value}" for line in d.agencies)
    text = f"v{d.version} {d.outcome.value}{' final' if d.final else ''} ({lines or '-'})"
    if d.release_on_arrival:
        text += "; release on arrival"
    if d.arrived_at is not None:
        text += f"; arrived {d.arrived_at.isoformat()}"
    return text


def _checks(trail: AuditTrail) -> list[str]:
    """Each decision against the version it decides, as received."""
    received = {e.version: e.record for e in trail.of_kind("submission")}
    out = []
    for event in trail.of_kind("decision"):
        version = received.get(event.version)
        decision_id = event.record.get("decision_id")
        if version is None:
            out.append(f"decision {decision_id}: version {event.version} is not on the topic")
            continue
        decided = event.record
        # submitted_by and received_at are null in decisions written before they existed.
        same = (
            decided.get("payload_sha256") == version.get("payload_sha256")
            and decided.get("submitted_by") in (None, version.get("submitted_by"))
            and decided.get("received_at") in (None, version.get("received_at"))
        )
        verdict = "matches" if same else "DOES NOT MATCH"
        out.append(
            f"decision {decision_id}: sha256, submitter and time {verdict} version "
            f"{event.version} as received"
        )
    return out


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, bytes):
        return value.hex()
    return value


def render_table(trail: AuditTrail) -> str:
    """The trail as a table a clerk reads: versions as received, then every event in time."""
    lines = [f"Audit trail of {trail.submission_id}", "", "Versions as received:"]
    for v in trail.versions():
        lines.append(
            f"  v{v['version']:<3} {v['kind']:<13} {v['received_at']}  by "
            f"{v['submitted_by'] or '(unauthenticated) ' + str(v['trader_id'])} via "
            f"{v['channel']}  sha256 {v['payload_sha256']}"
        )
    lines += ["", f"  {'time':<32} {'event':<14} {'ver':<4} {'agency':<12} what"]
    for e in trail.events:
        version = "" if e.version is None else str(e.version)
        lines.append(
            f"  {e.at.isoformat():<32} {e.kind:<14} {version:<4} {e.agency or '':<12} {e.summary}"
        )
    if trail.checks:
        lines += ["", "Checks:"] + [f"  {check}" for check in trail.checks]
    return "\n".join(lines)


def dumps(trail: AuditTrail) -> str:
    return json.dumps(trail.as_json(), indent=2, ensure_ascii=False)

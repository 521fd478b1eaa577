"""Prometheus metrics, all prefixed `swb_`, registered on an injected registry.

Labels are bounded (agency codes, outcomes, reasons, topics): never a submission id."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Seconds: agencies answer in seconds to days; the broker's own hops in milliseconds.
_LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
    600,
    1800,
    3600,
    14400,
    86400,
)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.submissions = Counter(
            "swb_submissions",
            "Submissions routed, by channel and kind",
            ["channel", "kind"],
            registry=r,
        )
        self.agency_requests = Counter(
            "swb_agency_requests",
            "Agency requests sent, by agency and kind",
            ["agency", "kind"],
            registry=r,
        )
        self.agency_answers = Counter(
            "swb_agency_answers",
            "Agency answers counted, by agency and status",
            ["agency", "status"],
            registry=r,
        )
        self.answer_latency = Histogram(
            "swb_agency_answer_latency_seconds",
            "From routing to the agency's answer, per agency",
            ["agency"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.decision_latency = Histogram(
            "swb_decision_latency_seconds",
            "From submission received to its final decision",
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.decisions = Counter(
            "swb_decisions",
            "Decisions issued, by outcome and finality",
            ["outcome", "final"],
            registry=r,
        )
        self.in_flight = Gauge(
            "swb_in_flight_submissions", "Submissions without a final decision", registry=r
        )
        self.overdue = Counter(
            "swb_agency_overdue",
            "Agencies that passed their SLA without answering",
            ["agency"],
            registry=r,
        )
        self.overdue_now = Gauge(
            "swb_agency_overdue_now", "Agencies currently overdue", ["agency"], registry=r
        )
        self.answers_not_counted = Counter(
            "swb_answers_not_counted",
            "Answers kept for audit that did not change a decision, by reason",
            ["agency", "reason"],
            registry=r,
        )
        self.dlq = Counter(
            "swb_dlq_records",
            "Records sent to the DLQ, by reason and source service",
            ["reason", "service"],
            registry=r,
        )
        self.consumer_lag = Gauge(
            "swb_consumer_lag",
            "Records behind the end of each partition",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.embedded_broker_up = Gauge(
            "swb_embedded_broker_up", "1 while the embedded broker runs", registry=r
        )
        self.batch_seconds = Histogram(
            "swb_batch_seconds",
            "Time to process one fetched batch, by service",
            ["service"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )

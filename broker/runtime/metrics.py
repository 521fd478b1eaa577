"""Prometheus metrics, all prefixed `swb_`, registered on an injected registry.

Labels are bounded (agency codes, outcomes, reasons, topics, partitions): never a submission
id. The one label a trader can influence, the submission channel, is capped.

The gateway registers its own HTTP metrics on the same registry under the names the dashboard
and the alert rules use: `swb_http_requests_total{route,method,status}` (route = the path
template, never the raw path) and `swb_http_request_duration_seconds{route,method}`.
"""

from __future__ import annotations

from collections.abc import Iterable
from importlib import metadata

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from broker.core.messages import AGENCY_CODES, AgencyStatus, Outcome, RequestKind

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

#: Distinct submission channels kept as label values; later ones are counted as "other".
CHANNEL_LIMIT = 16
OTHER = "other"


class CappedLabelCounter:
    """A labelled counter whose first label keeps at most `limit` distinct values.

    The channel comes from the submission, so a B2B producer could invent one per message;
    without a cap each would be a new time series for ever."""

    def __init__(self, counter: Counter, limit: int) -> None:
        self.counter = counter
        self._limit = limit
        self._seen: set[str] = set()

    def labels(self, first: str, *rest: str) -> Counter:
        if first not in self._seen:
            if len(self._seen) >= self._limit:
                first = OTHER
            else:
                self._seen.add(first)
        return self.counter.labels(first, *rest)


def _version() -> str:
    try:
        return metadata.version("single-window-broker")
    except metadata.PackageNotFoundError:
        return "unknown"


class Metrics:
    """Every metric the broker exports. Counters with known label values (agencies, outcomes)
    start at 0, so `increase()` sees their first event and ratios have a denominator."""

    def __init__(
        self, registry: CollectorRegistry | None = None, agencies: Iterable[str] = AGENCY_CODES
    ) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.submissions = CappedLabelCounter(
            Counter(
                "swb_submissions",
                "Submissions routed, by channel and kind",
                ["channel", "kind"],
                registry=r,
            ),
            CHANNEL_LIMIT,
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
            "Records behind the end of each partition, per consumer group (measured "
            "periodically; every instance running the lag monitor reports it: use max)",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.embedded_broker_up = Gauge(
            "swb_embedded_broker_up", "1 while the embedded broker runs", registry=r
        )
        self.kafka_reachable = Gauge(
            "swb_kafka_reachable",
            "1 when the last lag measurement could talk to the Kafka cluster, else 0",
            registry=r,
        )
        self.lag_checks = Counter(
            "swb_lag_checks",
            "Consumer lag measurements, by result (ok, failed)",
            ["result"],
            registry=r,
        )
        # "service", not "role": deployments put a `role` label on every scrape target.
        self.role_up = Gauge(
            "swb_service_up", "1 for each role this process runs", ["service"], registry=r
        )
        self.build_info = Gauge(
            "swb_build_info",
            "Always 1; the version of the running broker",
            ["version"],
            registry=r,
        )
        self.batch_seconds = Histogram(
            "swb_batch_seconds",
            "Time to process one fetched batch, by service",
            ["service"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        # Partner-customs exchange (issue 8): exports shared, partner records read, and how
        # imports quoting a UCR were linked (LINKED, NOT_RECEIVED, NO_EXCHANGE).
        self.partner_exports = Counter(
            "swb_partner_exports",
            "Released exports shared with a partner single window, by destination country",
            ["country"],
            registry=r,
        )
        self.partner_links = Counter(
            "swb_partner_links",
            "Imports quoting a UCR linked to partner export data, by link status",
            ["status"],
            registry=r,
        )
        self.build_info.labels(_version()).set(1)
        self._start_at_zero(agencies)

    def _start_at_zero(self, agencies: Iterable[str]) -> None:
        for agency in agencies:
            self.overdue.labels(agency)
            self.overdue_now.labels(agency)
            for kind in RequestKind:
                self.agency_requests.labels(agency, kind.value)
            for status in AgencyStatus:
                self.agency_answers.labels(agency, status.value)
        for outcome in Outcome:
            for final in ("true", "false"):
                self.decisions.labels(outcome.value, final)
        for result in ("ok", "failed"):
            self.lag_checks.labels(result)

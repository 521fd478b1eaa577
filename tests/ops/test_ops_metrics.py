"""Metrics (issue 6.1): the names operators query, `swb_` everywhere, bounded labels."""

from __future__ import annotations

from ops_support import memory_pipeline, sample_submissions, send, wait_for
from prometheus_client import CollectorRegistry

from broker.core.messages import AGENCY_CODES
from broker.runtime.metrics import CHANNEL_LIMIT, OTHER, Metrics

#: Families the dashboard, the alert rules and `swb top` read (name without _total/_bucket).
EXPECTED_FAMILIES = {
    "swb_submissions": {"channel", "kind"},
    "swb_agency_requests": {"agency", "kind"},
    "swb_agency_answers": {"agency", "status"},
    "swb_agency_answer_latency_seconds": {"agency"},
    "swb_decision_latency_seconds": set(),
    "swb_decisions": {"outcome", "final"},
    "swb_in_flight_submissions": set(),
    "swb_agency_overdue": {"agency"},
    "swb_agency_overdue_now": {"agency"},
    "swb_answers_not_counted": {"agency", "reason"},
    "swb_dlq_records": {"reason", "service"},
    "swb_consumer_lag": {"group", "topic", "partition"},
    "swb_embedded_broker_up": set(),
    "swb_kafka_reachable": set(),
    "swb_service_up": {"service"},
    "swb_batch_seconds": {"service"},
}


def families(registry: CollectorRegistry) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for metric in registry.collect():
        found[metric.name] = set(metric._labelnames) if hasattr(metric, "_labelnames") else set()
        for sample in metric.samples:
            found[metric.name] |= set(sample.labels) - {"le"}
    return found


def test_every_metric_operators_rely_on_exists_with_its_labels() -> None:
    metrics = Metrics(CollectorRegistry())
    # Histograms and labelled metrics only show labels once observed: touch each one.
    metrics.answer_latency.labels("food").observe(1)
    metrics.decision_latency.observe(1)
    metrics.answers_not_counted.labels("food", "late").inc()
    metrics.dlq.labels("bad-magic", "router").inc()
    metrics.consumer_lag.labels("swb-router", "sw.submissions", "0").set(3)
    metrics.role_up.labels("router").set(1)
    metrics.batch_seconds.labels("router").observe(0.01)
    metrics.submissions.labels("api", "NEW").inc()
    metrics.agency_answers.labels("food", "CLEARED").inc()
    found = families(metrics.registry)
    for name, labels in EXPECTED_FAMILIES.items():
        assert name in found, f"{name} is missing"
        assert found[name] == labels, f"{name} has labels {found[name]}, expected {labels}"
    assert all(name.startswith("swb_") for name in found)


def test_counters_with_known_labels_start_at_zero() -> None:
    """So increase() counts the first event and the SLA ratio has a denominator."""
    registry = CollectorRegistry()
    Metrics(registry)
    for agency in AGENCY_CODES:
        assert registry.get_sample_value("swb_agency_overdue_total", {"agency": agency}) == 0
        assert registry.get_sample_value("swb_agency_overdue_now", {"agency": agency}) == 0
        requests = {"agency": agency, "kind": "REVIEW"}
        assert registry.get_sample_value("swb_agency_requests_total", requests) == 0
    final_released = {"outcome": "RELEASED", "final": "true"}
    assert registry.get_sample_value("swb_decisions_total", final_released) == 0
    assert registry.get_sample_value("swb_build_info", {"version": "0.1.0"}) == 1


def test_a_trader_inventing_channels_cannot_grow_the_series_without_bound() -> None:
    registry = CollectorRegistry()
    metrics = Metrics(registry)
    for n in range(CHANNEL_LIMIT + 10):
        metrics.submissions.labels(f"channel-{n}", "NEW").inc()
    channels = {
        sample.labels["channel"]
        for metric in registry.collect()
        if metric.name == "swb_submissions"
        for sample in metric.samples
    }
    assert len(channels) == CHANNEL_LIMIT + 1
    assert (
        registry.get_sample_value("swb_submissions_total", {"channel": OTHER, "kind": "NEW"}) == 10
    )
    # A channel seen before the cap keeps its own series.
    metrics.submissions.labels("channel-0", "NEW").inc()
    assert (
        registry.get_sample_value("swb_submissions_total", {"channel": "channel-0", "kind": "NEW"})
        == 2
    )


async def test_no_label_carries_a_submission_id_after_real_traffic() -> None:
    registry = CollectorRegistry()
    names = ["01-cut-flowers-kenya.json", "03-vaccines-india.json", "09-whisky-uk-singapore.json"]
    async with memory_pipeline(registry) as app:
        submissions = sample_submissions(app, names)
        await send(app, submissions)

        async def all_final() -> bool:
            finals = (
                registry.get_sample_value("swb_decisions_total", {"outcome": o, "final": "true"})
                or 0
                for o in ("RELEASED", "RELEASED_WITH_CONDITIONS")
            )
            return sum(finals) >= len(names)

        await wait_for(all_final, timeout_s=30, what="a final decision for every sample")
    ids = {s.submission_id for s in submissions}
    values = {
        value
        for metric in registry.collect()
        for sample in metric.samples
        for value in sample.labels.values()
    }
    assert not values & ids
    assert not any(value.startswith("sub-") for value in values)
    assert (
        registry.get_sample_value("swb_submissions_total", {"channel": "api", "kind": "NEW"}) == 3
    )
    assert registry.get_sample_value("swb_decision_latency_seconds_count") == 3
    assert registry.get_sample_value("swb_in_flight_submissions") == 0
    customs = {"agency": "customs"}
    assert registry.get_sample_value("swb_agency_answer_latency_seconds_count", customs) == 3

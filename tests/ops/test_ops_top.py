"""`swb top` (issue 6.6): numbers from the metrics text, and the command against an endpoint."""

from __future__ import annotations

import asyncio
import math

import pytest
from ops_support import child_env, free_port, swb_command
from prometheus_client import CollectorRegistry, generate_latest
from rich.console import Console

from broker.runtime.metrics import Metrics
from broker.runtime.metrics_server import MetricsServer
from broker.settings import Settings
from broker.top import default_url, frame_of, parse, quantile, render

INF = math.inf


def test_quantile_interpolates_like_promql_histogram_quantile() -> None:
    buckets = {0.1: 0.0, 0.5: 10.0, 1.0: 20.0, INF: 20.0}
    assert quantile(0.5, buckets) == pytest.approx(0.5)
    assert quantile(0.75, buckets) == pytest.approx(0.75)
    assert quantile(0.99, buckets) == pytest.approx(0.99)
    # The rank falls in +Inf: the highest finite bound, as Prometheus answers.
    assert quantile(0.9, {1.0: 5.0, INF: 10.0}) == 1.0
    # The first bucket interpolates from 0.
    assert quantile(0.5, {2.0: 4.0, INF: 4.0}) == pytest.approx(1.0)
    assert quantile(0.5, {1.0: 0.0, INF: 0.0}) is None
    assert quantile(0.5, {}) is None


def _reading(metrics: Metrics, at: float):  # type: ignore[no-untyped-def]
    return parse(generate_latest(metrics.registry).decode(), at)


def test_frame_rates_latency_overdue_and_dlq() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.submissions.labels("api", "NEW").inc(10)
    metrics.decisions.labels("RELEASED", "true").inc(4)
    metrics.decision_latency.observe(100)  # before the interval: only in "since start"
    before = _reading(metrics, at=100.0)

    metrics.submissions.labels("api", "NEW").inc(6)
    metrics.submissions.labels("b2b", "AMENDMENT").inc(2)
    metrics.decisions.labels("RELEASED", "true").inc(3)
    metrics.decisions.labels("REJECTED", "true").inc(1)
    metrics.decisions.labels("PENDING", "false").inc(9)
    for seconds in (0.2, 0.3, 0.4, 3.0):
        metrics.decision_latency.observe(seconds)
    metrics.in_flight.set(5)
    metrics.agency_requests.labels("food", "REVIEW").inc(4)
    metrics.agency_answers.labels("food", "CLEARED").inc(2)
    metrics.answer_latency.labels("food").observe(40)
    metrics.overdue.labels("food").inc(2)
    metrics.overdue_now.labels("food").set(2)
    metrics.agency_requests.labels("customs", "REVIEW").inc(4)
    metrics.dlq.labels("bad-magic", "router").inc(3)
    metrics.consumer_lag.labels("swb-router", "sw.submissions", "0").set(12)
    metrics.kafka_reachable.set(1)
    metrics.role_up.labels("router").set(1)
    after = _reading(metrics, at=104.0)

    frame = frame_of(before, after)
    assert frame.submissions_total == 18
    assert frame.submissions_per_s == pytest.approx(8 / 4)
    assert frame.final_decisions_total == 8
    assert frame.final_decisions_per_s == pytest.approx(4 / 4)
    assert frame.in_flight == 5
    assert frame.latency_window == "last 4 s"
    # Rank 2 of 4 falls in (0.25, 0.5] holding 2 of them, 1 below: 0.25 + 0.25 * 1/2.
    assert frame.latency_p50_s == pytest.approx(0.375)
    # Rank 3.8 falls in (2.5, 5] holding 1, 3 below: 2.5 + 2.5 * 0.8.
    assert frame.latency_p95_s == pytest.approx(4.5)
    assert frame.dlq_total == 3
    assert frame.dlq_per_s == pytest.approx(3 / 4)
    assert frame.overdue_agencies == ["food"]
    assert frame.outcomes == {"RELEASED": 7, "REJECTED": 1}
    assert frame.dlq_reasons == {"bad-magic": 3}
    assert frame.lag_total == 12
    assert frame.kafka_reachable == 1
    assert frame.roles == ["router"]
    assert [row.agency for row in frame.agencies] == ["customs", "food"]
    food = frame.agencies[1]
    assert (food.requests, food.answers, food.overdue_now, food.overdue_total) == (4, 2, 2, 2)
    assert food.answer_p95_s is not None and 30 < food.answer_p95_s <= 60

    console = Console(record=True, width=130)
    console.print(render(frame, "http://127.0.0.1:9464/metrics"))
    text = console.export_text()
    assert "OVERDUE: food" in text
    assert "2.00/s" in text
    assert "bad-magic" in text
    assert "last 4 s" in text


def test_first_frame_has_no_rates_and_a_restart_is_not_a_negative_rate() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.submissions.labels("api", "NEW").inc(50)
    first = _reading(metrics, at=0.0)
    assert frame_of(None, first).submissions_per_s is None
    restarted = Metrics(CollectorRegistry())
    restarted.submissions.labels("api", "NEW").inc(4)
    assert frame_of(first, _reading(restarted, at=2.0)).submissions_per_s == pytest.approx(2.0)


def test_default_url_follows_the_settings() -> None:
    assert default_url(Settings(metrics_port=9464)) == "http://127.0.0.1:9464/metrics"
    assert default_url(Settings(http_host="0.0.0.0", http_port=8081)) == (
        "http://127.0.0.1:8081/metrics"
    )


async def _swb_top(*args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *swb_command(),
        "top",
        *args,
        env=child_env(COLUMNS="140"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_swb_top_once_prints_one_frame_from_an_endpoint() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.submissions.labels("api", "NEW").inc(3)
    metrics.decisions.labels("RELEASED", "true").inc(2)
    metrics.overdue_now.labels("veterinary").set(1)
    metrics.in_flight.set(1)
    async with MetricsServer(metrics.registry, "127.0.0.1", 0) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        code, output = await _swb_top("--url", url, "--once", "--interval", "0.2")
    assert code == 0, output
    assert url in output
    assert "OVERDUE: veterinary" in output
    assert "final decisions" in output
    assert "RELEASED" in output


async def test_swb_top_says_what_is_wrong_when_the_endpoint_is_down() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    code, output = await _swb_top("--url", url, "--once", "--interval", "0.1")
    assert code == 1
    assert f"cannot read {url}" in output
    assert "Traceback" not in output

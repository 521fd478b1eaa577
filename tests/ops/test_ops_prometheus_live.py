"""A real Prometheus (Debian's binary) scraping a real `swb run` (issue 6.3).

`swb run` runs as a subprocess against the session's embedded broker with a metrics port;
simulated agencies answer in this process; the sample declarations flow through. Prometheus
scrapes every second with the shipped alert rules loaded, and the test queries it over its HTTP
API: a few series, every query of the Grafana dashboard, the rules' health, and `swb top`."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from ops_support import (
    PROMETHEUS_DIR,
    SAMPLES,
    Process,
    child_env,
    dashboard_exprs,
    free_port,
    running,
    sample_submissions,
    send,
    swb_command,
    tool,
    wait_for,
)

from broker.bootstrap import open_app
from broker.core.messages import AgencyStatus
from broker.runtime.transport import Outgoing
from broker.settings import KafkaSettings, Settings
from connectors.simulated import PROPORTIONS, SimulationProfile

pytestmark = pytest.mark.timeout(300)

#: Tansu holds a JoinGroup for half the session timeout: 6 s keeps group joins near 3 s.
FAST_GROUPS = {"SWB_KAFKA__SESSION_TIMEOUT_MS": "6000", "SWB_KAFKA__HEARTBEAT_INTERVAL_MS": "500"}
#: Agencies answer after 0.2 s (no "documents required" beyond what the rules demand), and an
#: inspection or a hold ends 0.3 s later: most samples reach a final decision in seconds.
#: (Not at once: an answer that reaches the aggregator before its routing plan is held, and
#: the aggregator does not count held answers in swb_agency_answers_total.)
PROFILE = SimulationProfile(
    seed=5,
    latency_s=0.2,
    followup_s=0.3,
    proportions=tuple((s, w) for s, w in PROPORTIONS if s is not AgencyStatus.DOCUMENTS_REQUIRED),
)
#: Grafana's variables, replaced as Grafana would for a 5-minute view.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__range": "5m", "$__interval": "15s"}
WAIT_S = 120.0


class PrometheusApi:
    def __init__(self, client: httpx.AsyncClient, base: str) -> None:
        self._client = client
        self._base = base

    async def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result; fails the test on an error status."""
        response = await self._client.get(f"{self._base}/api/v1/query", params={"query": promql})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", (promql, body)
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    async def value(self, promql: str) -> float | None:
        result = await self.query(promql)
        return float(result[0]["value"][1]) if result else None

    async def get(self, path: str) -> Any:
        response = await self._client.get(f"{self._base}{path}")
        response.raise_for_status()
        return response.json()["data"]


def prometheus_config(metrics_port: int) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(PROMETHEUS_DIR / "rules.yml")],
        "scrape_configs": [
            {
                "job_name": "swb",
                "static_configs": [
                    {"targets": [f"127.0.0.1:{metrics_port}"], "labels": {"role": "all"}}
                ],
            }
        ],
    }


def grafana_to_promql(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, expr
    return expr


async def test_prometheus_scrapes_swb_run_and_answers_the_dashboard(
    kafka_bootstrap: str, topic_prefix: str, tmp_path: Path
) -> None:
    prometheus = tool("prometheus", "prometheus")
    metrics_port, prometheus_port, http_port = free_port(), free_port(), free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(prometheus_config(metrics_port)))
    swb_env = child_env(
        SWB_KAFKA_BOOTSTRAP_SERVERS=kafka_bootstrap,
        SWB_TOPIC_PREFIX=topic_prefix,
        SWB_PARTITIONS="2",
        SWB_METRICS_HOST="127.0.0.1",
        SWB_METRICS_PORT=str(metrics_port),
        SWB_LAG_CHECK_INTERVAL_S="1",
        SWB_LOG_FORMAT="json",
        # `swb run` may include the gateway: keep it on loopback, on a free port.
        SWB_HTTP_HOST="127.0.0.1",
        SWB_HTTP_PORT=str(http_port),
        **FAST_GROUPS,
    )
    prometheus_args = [
        prometheus,
        f"--config.file={config}",
        f"--storage.tsdb.path={tmp_path / 'data'}",
        f"--web.listen-address=127.0.0.1:{prometheus_port}",
        "--log.level=warn",
    ]
    metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
    async with (
        running([*swb_command(), "run"], swb_env, tmp_path, "swb") as swb,
        running(prometheus_args, child_env(), tmp_path, "prometheus") as server,
        httpx.AsyncClient(timeout=10) as http,
    ):
        api = PrometheusApi(http, f"http://127.0.0.1:{prometheus_port}")

        async def swb_ready() -> bool:
            assert swb.returncode is None, swb.output()
            try:
                return (await http.get(f"http://127.0.0.1:{metrics_port}/readyz")).is_success
            except httpx.TransportError:
                return False

        async def scraped() -> bool:
            assert server.returncode is None, server.output()
            try:
                return await api.value('up{job="swb"}') == 1
            except httpx.TransportError:
                return False

        await wait_for(swb_ready, timeout_s=WAIT_S, what="swb run's /readyz")
        await wait_for(scraped, timeout_s=WAIT_S, what="Prometheus to scrape swb run")

        settings = Settings(
            kafka_bootstrap_servers=kafka_bootstrap,
            topic_prefix=topic_prefix,
            partitions=2,
            kafka=KafkaSettings(session_timeout_ms=6000, heartbeat_interval_ms=500),
        )
        async with open_app(settings) as app:
            stopping = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                for agency in app.simulated_agencies(PROFILE):
                    tasks.create_task(agency.run(stopping))
                try:
                    names = sorted(p.name for p in SAMPLES.glob("*.json"))
                    await send(app, sample_submissions(app, names))
                    poison = Outgoing(app.topics.submissions, b"not a submission", key=b"x")
                    await app.transport.producer().send_batch([poison])
                    gateway = await _exercise_gateway(http, http_port)
                    await _check_prometheus(api, len(names), gateway=gateway)
                    await _check_swb_top(metrics_url)
                finally:
                    stopping.set()
        code = await swb.stop()
    assert code == 0, swb.output()
    _check_json_logs(swb)


async def _exercise_gateway(http: httpx.AsyncClient, port: int) -> bool:
    """When `swb run` includes the gateway, send it a few requests so its HTTP metrics have
    data; True if it answered."""
    try:
        await http.get(f"http://127.0.0.1:{port}/healthz")
    except httpx.TransportError:
        return False
    for _ in range(3):
        await http.get(f"http://127.0.0.1:{port}/v1/submissions/sub-unknown")
    return True


async def _check_prometheus(api: PrometheusApi, submitted: int, *, gateway: bool) -> None:
    async def decisions_flowing() -> bool:
        rate = await api.value('sum(rate(swb_decisions_total{final="true"}[1m]))')
        return rate is not None and rate > 0

    async def lag_measured() -> bool:
        # The router's group follows the topic prefix (swb.<prefix>-router in tests).
        return bool(await api.query('swb_consumer_lag{group=~"swb.*-router"}'))

    await wait_for(decisions_flowing, timeout_s=WAIT_S, what="final decisions in Prometheus")
    await wait_for(lag_measured, timeout_s=WAIT_S, what="consumer lag in Prometheus")

    async def all_routed() -> bool:
        return await api.value("sum(swb_submissions_total)") == submitted

    await wait_for(all_routed, timeout_s=WAIT_S, what="every submission routed")

    # A few series, as an operator would ask for them.
    assert await api.value('swb_dlq_records_total{service="router"}') == 1
    assert await api.value("swb_kafka_reachable") == 1
    assert await api.value('swb_service_up{service="router", role="all"}') == 1
    assert await api.value('swb_service_up{service="aggregator", role="all"}') == 1
    requests = await api.query('sum by (agency) (swb_agency_requests_total{kind="REVIEW"}) > 0')
    assert "customs" in {r["metric"]["agency"] for r in requests}
    p50 = await api.value(
        "histogram_quantile(0.5, sum by (le) (rate(swb_decision_latency_seconds_bucket[5m])))"
    )
    assert p50 is not None and math.isfinite(p50) and p50 >= 0
    lag_topics = {r["metric"]["topic"] for r in await api.query("swb_consumer_lag")}
    assert any(topic.endswith(".submissions") for topic in lag_topics)

    # Every query of the dashboard runs and returns data; the gateway's HTTP panels only
    # when this `swb run` has a gateway that exports `swb_http_*` (a 5xx ratio needs a 5xx).
    http_exported = gateway and bool(await api.query("swb_http_requests_total"))
    assert http_exported == gateway, "the gateway answered but exports no swb_http_requests_total"
    exprs = dashboard_exprs()
    assert len(exprs) >= 20
    for expr in exprs:
        promql = grafana_to_promql(expr)
        may_be_empty = "swb_answers_not_counted" in expr or (  # a rare event
            "swb_http_" in expr and (not http_exported or "5.." in expr)
        )
        if may_be_empty:
            await api.query(promql)  # must still be valid PromQL
            continue

        async def has_data(promql: str = promql) -> bool:
            # A series that just appeared needs a second scrape before rate() sees it.
            return bool(await api.query(promql))

        await wait_for(has_data, timeout_s=20, what=f"data for the dashboard query {expr!r}")

    # The shipped rules load and evaluate against live data.
    async def rules_evaluated() -> list[dict[str, Any]] | None:
        groups = (await api.get("/api/v1/rules"))["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return rules if rules and all(r["health"] == "ok" for r in rules) else None

    rules = await wait_for(rules_evaluated, timeout_s=30, what="every rule evaluated")
    assert len(rules) >= 10
    # One process runs every role: the per-role target checks notice (pending for 5 minutes).
    alerts = (await api.get("/api/v1/alerts"))["alerts"]
    missing = {a["labels"]["role"] for a in alerts if a["labels"]["alertname"] == "SwbRoleMissing"}
    assert missing == {"router", "aggregator", "gateway"}


async def _check_swb_top(metrics_url: str) -> None:
    process = await asyncio.create_subprocess_exec(
        *swb_command(),
        "top",
        "--url",
        metrics_url,
        "--once",
        "--interval",
        "0.5",
        env=child_env(COLUMNS="140"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(60):
        output, _ = await process.communicate()
    text = output.decode()
    assert process.returncode == 0, text
    assert "kafka reachable" in text
    assert "roles aggregator," in text
    assert "bad-datum" in text or "bad-magic" in text or "DLQ by reason" in text


def _check_json_logs(swb: Process) -> None:
    """In production (not a terminal) every log line is a JSON object."""
    lines = [line for line in swb.stderr_path.read_text().splitlines() if line.startswith("{")]
    entries = [json.loads(line) for line in lines]
    decisions = [e for e in entries if e["event"] == "decision issued"]
    assert decisions
    assert all(e["submission_id"].startswith("sub-") and "version" in e for e in decisions)
    others = [
        line
        for line in swb.stderr_path.read_text().splitlines()
        if line and not line.startswith("{") and not line.startswith("swb: ")
    ]
    assert not others, others[:5]

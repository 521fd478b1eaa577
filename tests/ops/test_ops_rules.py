"""Alert rules and dashboard queries (issue 6.2): promtool checks and unit tests, and every
metric they name exists (a typo would otherwise be an alert that never fires)."""

from __future__ import annotations

import re
import subprocess

import yaml
from ops_support import PROMETHEUS_DIR, dashboard_exprs, tool
from prometheus_client import CollectorRegistry

from broker.runtime.metrics import Metrics

#: Registered by the gateway on the same registry (see broker/runtime/metrics.py).
GATEWAY_FAMILIES = {"swb_http_requests", "swb_http_request_duration_seconds"}
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("promtool", "prometheus"), *args],
        cwd=PROMETHEUS_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_promtool_check_rules() -> None:
    result = promtool("check", "rules", "rules.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_test_rules() -> None:
    result = promtool("test", "rules", "rules_test.yml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_check_prometheus_config() -> None:
    result = promtool("check", "config", "prometheus.yml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test_and_a_severity() -> None:
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())
    tests = yaml.safe_load((PROMETHEUS_DIR / "rules_test.yml").read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert rule["labels"]["severity"] in ("page", "ticket"), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
    tested_firing = {
        case["alertname"]
        for test in tests["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert alerts == tested_firing, f"alerts never shown firing: {alerts - tested_firing}"
    # The list: agency SLA, DLQ growth, lag, no decisions, broker or role down.
    assert {
        "SwbAgencyOverdue",
        "SwbAgencySlaComplianceLow",
        "SwbDlqGrowing",
        "SwbConsumerLagHigh",
        "SwbNoDecisions",
        "SwbKafkaUnreachable",
        "SwbRoleDown",
    } <= alerts


def metric_families(expr: str) -> set[str]:
    names = set()
    for name in re.findall(r"\bswb_[a-z0-9_]+", expr):
        for suffix in _SUFFIXES:
            if name.endswith(suffix):
                name = name.removesuffix(suffix)
                break
        names.add(name)
    return names


def test_rules_and_dashboard_name_only_metrics_that_exist() -> None:
    registry = CollectorRegistry()
    Metrics(registry)
    exported = {metric.name for metric in registry.collect()} | GATEWAY_FAMILIES
    rules = yaml.safe_load((PROMETHEUS_DIR / "rules.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    exprs += dashboard_exprs()
    named = set().union(*(metric_families(expr) for expr in exprs))
    assert named - exported == set()
    # The dashboard covers what the issue lists.
    dashboard_named = set().union(*(metric_families(expr) for expr in dashboard_exprs()))
    assert {
        "swb_submissions",
        "swb_decisions",
        "swb_decision_latency_seconds",
        "swb_agency_overdue",
        "swb_agency_overdue_now",
        "swb_dlq_records",
        "swb_consumer_lag",
        "swb_http_requests",
        "swb_http_request_duration_seconds",
    } <= dashboard_named
    quantiles = [e for e in dashboard_exprs() if "swb_decision_latency_seconds_bucket" in e]
    assert {q for e in quantiles for q in re.findall(r"histogram_quantile\((0\.\d+)", e)} >= {
        "0.5",
        "0.95",
        "0.99",
    }

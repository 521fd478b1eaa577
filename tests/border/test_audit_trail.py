"""Audit trail and non-repudiation end to end (issue 8, part 5): for each version the SHA-256
of the payload as received, the authenticated submitter and the time are in the decision, and
`swb audit ID` prints the whole history read back from the topics; it matches what was sent."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from border_stack import (
    TRADER,
    Country,
    StartCountry,
    body,
    countries_fixture,  # noqa: F401  (the `countries` fixture)
    eventually,
    sample,
    settings_for,
    sha256,
)

from broker.audit import AuditTrail, read_audit_trail, render_table
from broker.core.messages import AgencyRequest, AgencyResponse
from broker.runtime.transport import Outgoing


def swb_executable() -> str:
    beside = Path(sys.executable).with_name("swb")
    found = str(beside) if beside.exists() else shutil.which("swb")
    assert found, "the swb command is not installed: pip install -e '.[dev]'"
    return found


async def swb(country: Country, *args: str) -> tuple[int, str, str]:
    """`swb ARGS` as a subprocess against the country's topics; (exit code, stdout, stderr)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWB_")}
    env |= {
        "SWB_KAFKA_BOOTSTRAP_SERVERS": country.app.bootstrap_servers or "",
        "SWB_TOPIC_PREFIX": country.app.topics.prefix,
        "SWB_LOG_LEVEL": "WARNING",
    }
    process = await asyncio.create_subprocess_exec(
        swb_executable(),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(60):
        out, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def keyed(country: Country, topic: str, submission_id: str) -> list[Any]:
    return [r for r in await country.records(topic) if r.key == submission_id.encode()]


async def test_audit_history_matches_what_was_sent(
    kafka_bootstrap: str, topic_prefix: str, countries: StartCountry
) -> None:
    country = await countries(settings_for(kafka_bootstrap, topic_prefix))
    app = country.app
    arrival = (datetime.now(UTC) + timedelta(days=2)).isoformat()
    first = sample("02-frozen-beef-argentina", lrn="AUDIT-0001")
    first["transport"] = {**first["transport"], "arrival_at": arrival}
    without_certificate = dict(
        first, documents=[d for d in first["documents"] if d["type_code"] != "N853"]
    )
    sent = [body(without_certificate), body(first)]

    async with country.client() as client:
        answer = await client.post("/v1/submissions", content=sent[0])
        sid = answer.json()["submission_id"]
        await country.view(
            client,
            sid,
            lambda v: bool(v["decision"]) and v["decision"]["outcome"] == "DOCUMENTS_REQUIRED",
            "documents required",
        )
        assert (await client.put(f"/v1/submissions/{sid}", content=sent[1])).status_code == 202
        await country.view(
            client,
            sid,
            lambda v: (
                bool(v["decision"]) and v["decision"]["final"] and v["decision"]["version"] == 2
            ),
            "final decision on version 2",
        )
        assert (await client.post(f"/v1/submissions/{sid}/arrival")).status_code == 202
        view = await country.view(
            client, sid, lambda v: v["decision"]["arrived_at"] is not None, "arrived"
        )
    # A record the router refuses (not Avro), keyed by the submission: its dead letter shows.
    await app.transport.producer().send_batch(
        [Outgoing(app.topics.submissions, b"not avro", key=sid.encode())]
    )

    async def dead_letter_in_trail() -> AuditTrail | None:
        trail = await read_audit_trail(app.transport, app.codec, app.topics, sid)
        return trail if trail.of_kind("dead-letter") else None

    trail = await eventually(dead_letter_in_trail, "the refused record's dead letter")

    # Every version as received: the SHA-256 of the body sent, the API key's trader, the time.
    versions = trail.versions()
    assert [(v["version"], v["kind"]) for v in versions] == [(1, "NEW"), (2, "AMENDMENT")]
    assert [v["payload_sha256"] for v in versions] == [sha256(b) for b in sent]
    assert {v["submitted_by"] for v in versions} == {TRADER}
    assert [v["received_at"] for v in versions] == [
        datetime.fromisoformat(v["received_at"]).isoformat() for v in view["versions"]
    ]

    # Every package and withdrawal sent to each agency, and every answer, as on the topics.
    sent_requests = []
    answers = []
    for agency in app.topics.agencies:
        for record in await keyed(country, app.topics.requests(agency), sid):
            sent_requests.append(app.codec.decode(record.value or b"", AgencyRequest))
        for record in await keyed(country, app.topics.responses(agency), sid):
            answers.append(app.codec.decode(record.value or b"", AgencyResponse))
    in_trail = trail.of_kind("request", "withdrawal")
    assert sorted(e.record["request_id"] for e in in_trail) == sorted(
        r.request_id for r in sent_requests
    )
    assert {(e.agency, e.version) for e in trail.of_kind("request")} == {
        (r.agency, r.version) for r in sent_requests
    }
    assert {"customs", "veterinary", "food"} <= {e.agency for e in in_trail}
    assert sorted(
        (e.agency, e.record["status"], e.version) for e in trail.of_kind("answer")
    ) == sorted((a.agency, a.status.value, a.version) for a in answers)

    # Every decision, in the order issued, each naming its version's hash, submitter and time.
    issued = await country.decisions(sid)
    decided = sorted(trail.of_kind("decision"), key=lambda e: e.offset)
    assert [e.record["decision_id"] for e in decided] == [d.decision_id for d in issued]
    assert decided[-1].record["arrived_at"] is not None
    assert all(e.record["submitted_by"] == TRADER for e in decided)
    assert trail.checks and all(" matches version " in check for check in trail.checks)
    (notice,) = trail.of_kind("arrival")
    assert notice.record["submitted_by"] == TRADER
    (dead,) = trail.of_kind("dead-letter")
    assert dead.record["source_topic"] == app.topics.submissions
    assert dead.record["reason"] == "bad-magic"
    times = [e.at for e in trail.events]
    assert times == sorted(times)

    # `swb audit ID --json` prints the same trail; the table says the same in lines.
    code, out, err = await swb(country, "audit", sid, "--json")
    assert code == 0, err
    assert json.loads(out) == trail.as_json()
    code, out, err = await swb(country, "audit", sid)
    assert code == 0, err
    assert out.strip() == render_table(trail)
    assert sha256(sent[0]) in out and "package to veterinary" in out
    code, out, err = await swb(country, "audit", "sub-nothing-here")
    assert code == 1 and "nothing about sub-nothing-here" in err

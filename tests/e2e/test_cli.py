"""The `swb` command as a user runs it: a subprocess, its exit code and its output."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from broker.bootstrap import App, open_app
from broker.core.declaration import now_utc
from broker.core.intake import declare
from broker.core.messages import AgencyRequest, AgencyResponse, RequestKind
from broker.core.routing import information_package, route
from broker.runtime.transport import Outgoing, Record
from broker.settings import Settings

pytestmark = pytest.mark.e2e

RunSwb = Callable[..., subprocess.CompletedProcess[str]]
LiveSwb = Any  # tests/e2e/conftest.py: a long-running swb whose stderr is collected

#: `swb run` stops its services within SWB_SHUTDOWN_TIMEOUT_S, then its embedded broker
#: (SIGTERM, SIGKILL after 5 s): the bound a clean exit must meet.
SHUTDOWN_TIMEOUT_S = 5.0
EXIT_BOUND_S = SHUTDOWN_TIMEOUT_S + 5.0 + 2.0

SAMPLES = sorted(Path(str(resources.files("broker.samples"))).glob("*.json"))

#: The agency each sample exists to show (DOMAIN facts), beside customs, which sees everything.
SIGNATURE_AGENCY = {
    "01-cut-flowers-kenya": "plant",
    "02-frozen-beef-argentina": "veterinary",
    "03-vaccines-india": "medicines",
    "04-hunting-rifle-usa": "police",
    "05-lithium-batteries-china": "standards",
    "06-used-car-japan": "standards",
    "07-ivory-carving-cites": "wildlife",
    "08-refrigerant-hcfc22-china": "environment",
    "09-whisky-uk-singapore": "excise",
    "10-x-ray-tubes-germany": "radiation",
    "11-dual-use-machine-tools-export": "strategic",
    "12-transit-electronics": "strategic",
    "13-cakes-malaysia-singapore": "food",
    "14-sapele-logs-cameroon": "plant",
}


def test_every_sample_has_a_signature_agency() -> None:
    assert [p.stem for p in SAMPLES] == sorted(SIGNATURE_AGENCY)


@pytest.mark.timeout(180)
def test_demo_prints_a_final_decision_for_every_sample(run_swb: RunSwb) -> None:
    result = run_swb(["demo", "--timeout", "120"], timeout=170)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    out = result.stdout
    positions = []
    for sample in SAMPLES:
        found = out.find(sample.stem)
        assert found >= 0, f"{sample.stem} missing from the demo output"
        positions.append(found)
    assert positions == sorted(positions)
    # Between one sample's title and the next, exactly one coordinated decision, final.
    for start, end, sample in zip(positions, [*positions[1:], len(out)], SAMPLES, strict=True):
        section = out[start:end]
        decisions = re.findall(r"⇒ ([A-Z_]+) \(final=(True|False)\)", section)
        assert len(decisions) == 1, (sample.stem, section)
        assert decisions[0][1] == "True", (sample.stem, section)
        assert "no decision yet" not in section


@pytest.mark.parametrize("sample", SAMPLES, ids=lambda p: p.stem)
def test_route_prints_the_plan_as_json(run_swb: RunSwb, sample: Path) -> None:
    result = run_swb(["route", str(sample)])
    assert result.returncode == 0, result.stderr
    plan = json.loads(result.stdout)
    agencies = [a["agency"] for a in plan["agencies"]]
    assert agencies[0] == "customs"
    assert SIGNATURE_AGENCY[sample.stem] in agencies
    for agency in plan["agencies"]:
        assert agency["reasons"], agency  # routing can be explained
        assert agency["requirement"] in ("REQUIRED", "MAY_BE_REQUIRED")
        assert agency["item_sequences"], agency
        assert agency["deadline"]
    assert plan["submission_id"].startswith("sub-")
    assert plan["version"] == 1


INVALID = {
    "unknown-country-and-masses": (
        lambda d: {
            **d,
            "export_country": "ZZ",
            "items": [{**d["items"][0], "net_mass_kg": "99999.000"}, *d["items"][1:]],
        },
        ["export_country", "items.0"],
    ),
    "missing-field": (
        lambda d: {k: v for k, v in d.items() if k != "customs_office"},
        ["customs_office"],
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_route_refuses_an_invalid_declaration(run_swb: RunSwb, tmp_path: Path, case: str) -> None:
    corrupt, fields = INVALID[case]
    declaration = json.loads(SAMPLES[1].read_text())
    path = tmp_path / "invalid.json"
    path.write_text(json.dumps(corrupt(declaration)))
    result = run_swb(["route", str(path)])
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    for field in fields:
        assert re.search(rf"^\s*{re.escape(field)}: ", result.stderr, re.MULTILINE), (
            field,
            result.stderr,
        )
    assert "Traceback" not in result.stderr


def test_route_refuses_a_file_that_is_not_json(run_swb: RunSwb, tmp_path: Path) -> None:
    path = tmp_path / "notes.json"
    path.write_text("this is not a declaration")
    result = run_swb(["route", str(path)])
    assert result.returncode == 2
    assert "invalid" in result.stderr and "Traceback" not in result.stderr


def _accepts_connections(bootstrap: str) -> bool:
    host, port = bootstrap.rsplit(":", 1)
    try:
        with socket.create_connection((host, int(port)), timeout=1):
            return True
    except OSError:
        return False


@pytest.mark.parametrize(
    "how",
    ["SIGTERM to the process", "SIGINT to the process", "Ctrl-C (SIGINT to the session)"],
)
async def test_run_exits_cleanly_when_asked_to_stop(
    live_swb: Callable[..., LiveSwb], how: str
) -> None:
    swb = live_swb(
        ["run"],
        {
            "SWB_HTTP_PORT": "0",
            "SWB_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
            # Tansu holds a group join for half the session timeout: 3 s instead of 5 s.
            "SWB_KAFKA__SESSION_TIMEOUT_MS": "6000",
            "SWB_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        },
    )
    await swb.start()
    async with asyncio.timeout(60):
        await swb.wait_for(
            lambda: bool(
                swb.logged("router partitions assigned")
                and swb.logged("aggregator partitions assigned")
            ),
            "the router and the aggregator run",
        )
    (started,) = swb.logged("embedded broker started")
    bootstrap = started["bootstrap_servers"]
    assert _accepts_connections(bootstrap)

    began = time.monotonic()
    if how.startswith("Ctrl-C"):
        swb.signal_group(signal.SIGINT)
    else:
        swb.signal(signal.SIGTERM if "SIGTERM" in how else signal.SIGINT)
    async with asyncio.timeout(EXIT_BOUND_S):
        code = await swb.exit_code()
    elapsed = time.monotonic() - began

    assert code == 0, swb.tail()
    assert elapsed < EXIT_BOUND_S
    assert "Traceback" not in "\n".join(swb.lines)
    if not how.startswith("Ctrl-C"):  # the broker stays up: every service stops by itself
        assert not swb.logged("services did not stop in time; cancelled"), swb.tail()
    assert not _accepts_connections(bootstrap), "the embedded broker was left running"


def test_run_without_the_tansu_binary_says_what_to_do(run_swb: RunSwb, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-tansu"
    result = run_swb(["run"], env={"CALF_TANSU_BIN": str(missing)}, timeout=30)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    message = result.stderr.strip().splitlines()[-1]
    assert message.startswith("swb: ")
    assert "Tansu" in message and "pip install" in message


def test_agency_needs_the_broker_address(run_swb: RunSwb) -> None:
    result = run_swb(["agency", "food"])
    assert result.returncode == 2
    assert "SWB_KAFKA_BOOTSTRAP_SERVERS" in result.stderr


async def test_agency_answers_its_requests_until_stopped(
    live_swb: Callable[..., LiveSwb], kafka_bootstrap: str, topic_prefix: str
) -> None:
    settings = Settings(
        kafka_bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix, partitions=2
    )
    async with open_app(settings) as app:
        submission = declare(
            SAMPLES[1].read_bytes(), trader_id="NL000000000042", channel="test", now=now_utc()
        )
        assert submission.declaration is not None
        plan = route(
            submission.declaration,
            app.rules,
            submission_id=submission.submission_id,
            version=1,
            kind=submission.kind,
            trader_id=submission.trader_id,
            payload_sha256=submission.payload_sha256,
            now=submission.received_at,
        )
        (food,) = [r for r in plan.agencies if r.agency == "food"]
        request = AgencyRequest(
            request_id=f"{submission.submission_id}:1:food:review",
            submission_id=submission.submission_id,
            version=1,
            agency="food",
            kind=RequestKind.REVIEW,
            requirement=food.requirement,
            reasons=food.reasons,
            deadline=food.deadline,
            sent_at=plan.planned_at,
            package=information_package(submission.declaration, food, app.rules),
        )
        agency = live_swb(
            ["agency", "food", "--followup", "0"],
            {
                "SWB_KAFKA_BOOTSTRAP_SERVERS": kafka_bootstrap,
                "SWB_TOPIC_PREFIX": topic_prefix,
                "SWB_SHUTDOWN_TIMEOUT_S": str(SHUTDOWN_TIMEOUT_S),
            },
        )
        await agency.start()
        await app.transport.producer().send_batch(
            [
                Outgoing(
                    app.topics.requests("food"),
                    app.codec.encode(request),
                    key=submission.submission_id.encode(),
                )
            ]
        )
        async with asyncio.timeout(60):
            answers = await _records_of(app, app.topics.responses("food"))
        response = app.codec.decode(answers[0].value or b"", AgencyResponse)
        assert (response.submission_id, response.version, response.agency) == (
            submission.submission_id,
            1,
            "food",
        )
        agency.signal(signal.SIGTERM)
        async with asyncio.timeout(EXIT_BOUND_S):
            assert await agency.exit_code() == 0
        assert "Traceback" not in "\n".join(agency.lines)


async def _read_all(app: App, topic: str) -> list[Record]:
    records: list[Record] = []
    for partition in range(app.settings.partitions):
        records += await app.transport.read_partition(topic, partition)
    return records


async def _records_of(app: App, topic: str) -> list[Record]:
    """Once `topic` holds records (in the caller's timeout scope)."""
    records = await _read_all(app, topic)
    while not records:
        await asyncio.sleep(0.1)
        records = await _read_all(app, topic)
    return records

"""Helpers shared by the integration tests: sample declarations, services running in the test's
event loop, watchers that follow a topic and wait with a timeout until a condition holds, and
`swb` subprocesses whose JSON log lines can be waited on."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import json
import os
import shutil
import signal
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any, Protocol, TypeVar

from broker.bootstrap import App
from broker.core.codec import Codec
from broker.core.intake import declare
from broker.core.messages import (
    AgencyRequest,
    AgencyResponse,
    AgencyStatus,
    Decision,
    DocumentRequest,
    Submission,
    SubmissionKind,
)
from broker.core.routing import route
from broker.core.rules import RuleBook
from broker.core.topics import Topics
from broker.runtime.dlq import (
    MESSAGE,
    REASON,
    SOURCE_OFFSET,
    SOURCE_PARTITION,
    SOURCE_TOPIC,
    header,
)
from broker.runtime.transport import Outgoing, Record, TopicPartition, Transport
from broker.settings import KafkaSettings, Settings
from connectors.simulated import (
    EXPECTED_DOCUMENTS,
    PROPORTIONS,
    SimulatedAgency,
    SimulationProfile,
)

T = TypeVar("T")

TRADER = "NL000000000042"
CHANNEL = "test"
#: Tansu holds a JoinGroup for half the session timeout: 6 s keeps joins at 3 s.
FAST_GROUPS = KafkaSettings(session_timeout_ms=6000, heartbeat_interval_ms=500)
FAST_GROUPS_ENV = {
    "SWB_KAFKA__SESSION_TIMEOUT_MS": "6000",
    "SWB_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
}
#: Generous: a group join takes 3 s on Tansu and other test sessions share the two cores.
WAIT_S = 30.0
POLL_S = 0.02
STOP_S = 20.0

#: Simulated agencies that never ask for documents (with declarations that cite what the
#: rules-driven agencies expect, see `with_expected_documents`): every submission must reach
#: a final decision without an amendment.
NO_DOCUMENTS_PROFILE = SimulationProfile(
    seed=11,
    latency_s=0.0,
    followup_s=0.2,
    proportions=tuple((s, w) for s, w in PROPORTIONS if s is not AgencyStatus.DOCUMENTS_REQUIRED),
)


# --- settings and samples -------------------------------------------------------------------


def kafka_settings(bootstrap: str, prefix: str, partitions: int = 2, **extra: Any) -> Settings:
    return Settings(
        kafka_bootstrap_servers=bootstrap,
        topic_prefix=prefix,
        partitions=partitions,
        kafka=FAST_GROUPS,
        **extra,
    )


def samples_dir() -> Path:
    return Path(str(resources.files("broker.samples")))


def sample_names() -> list[str]:
    return sorted(p.stem for p in samples_dir().glob("*.json"))


def sample(name: str) -> dict[str, Any]:
    """A shipped sample declaration as a JSON dict, e.g. sample("02-frozen-beef-argentina")."""
    data: dict[str, Any] = json.loads((samples_dir() / f"{name}.json").read_text())
    return data


def beef_and_rifle(lrn: str) -> dict[str, Any]:
    """A mixed consignment: frozen beef (item 1) and a hunting rifle (item 2). Customs, the
    veterinary service, food safety and the police are concerned, each with different items."""
    beef = sample("02-frozen-beef-argentina")
    rifle = sample("04-hunting-rifle-usa")["items"][0]
    declaration = copy.deepcopy(beef)
    declaration["lrn"] = lrn
    declaration["items"] = [beef["items"][0], {**rifle, "sequence": 2}]
    return declaration


def with_expected_documents(declaration: dict[str, Any], rules: RuleBook) -> dict[str, Any]:
    """Cite on the header the certificate each routed agency's simulation expects, so none
    answers DOCUMENTS_REQUIRED. Repeated until routing is stable (a cited document can route)."""
    declaration = copy.deepcopy(declaration)
    while True:
        cited = {d["type_code"] for d in declaration.get("documents", ())}
        cited |= {d["type_code"] for i in declaration["items"] for d in i.get("documents", ())}
        missing = [
            EXPECTED_DOCUMENTS[agency][0]
            for agency in routed_agencies(declaration, rules)
            if agency in EXPECTED_DOCUMENTS and EXPECTED_DOCUMENTS[agency][0] not in cited
        ]
        if not missing:
            return declaration
        declaration["documents"] = [
            *declaration.get("documents", ()),
            *({"type_code": code, "id": f"{code}-TEST-1", "issuer": "test"} for code in missing),
        ]


def routed_agencies(declaration: dict[str, Any], rules: RuleBook) -> list[str]:
    """The agencies the rules route a declaration to (the core's routing, run locally)."""
    submission = new_submission(declaration, now=datetime(2026, 1, 1, tzinfo=UTC))
    plan = route(
        submission.declaration,
        rules,
        submission_id=submission.submission_id,
        version=1,
        kind=SubmissionKind.NEW,
        trader_id=TRADER,
        payload_sha256=submission.payload_sha256,
        now=submission.received_at,
    )
    return [r.agency for r in plan.agencies]


def sample_variations(count: int, rules: RuleBook, *, tag: str) -> list[dict[str, Any]]:
    """`count` declarations cycling through the samples, each with its own LRN and carrying
    the documents the simulated agencies expect."""
    bases = [with_expected_documents(sample(name), rules) for name in sample_names()]
    out = []
    for n in range(count):
        declaration = copy.deepcopy(bases[n % len(bases)])
        declaration["lrn"] = f"{tag}-{n:05d}"
        out.append(declaration)
    return out


def new_submission(
    declaration: Mapping[str, Any],
    *,
    now: datetime,
    version: int = 1,
    submission_id: str | None = None,
) -> Submission:
    return declare(
        json.dumps(declaration).encode(),
        trader_id=TRADER,
        channel=CHANNEL,
        now=now,
        version=version,
        submission_id=submission_id,
    )


def answer(
    submission: Submission | str,
    agency: str,
    status: AgencyStatus,
    *,
    at: datetime,
    version: int = 1,
    sequence: int = 1,
    reasons: tuple[str, ...] = ("test answer",),
    conditions: tuple[str, ...] = (),
    documents: tuple[DocumentRequest, ...] = (),
) -> AgencyResponse:
    sid = submission if isinstance(submission, str) else submission.submission_id
    return AgencyResponse(
        submission_id=sid,
        version=version,
        agency=agency,
        status=status,
        answered_at=at,
        sequence=sequence,
        reasons=reasons,
        conditions=conditions,
        documents_required=documents,
    )


def minutes_after(moment: datetime, minutes: float) -> datetime:
    return moment + timedelta(minutes=minutes)


# --- producing and reading ------------------------------------------------------------------


async def submit(app: App, *submissions: Submission) -> None:
    await app.transport.producer().send_batch(
        [
            Outgoing(app.topics.submissions, app.codec.encode(s), key=s.submission_id.encode())
            for s in submissions
        ]
    )


async def respond(app: App, *responses: AgencyResponse, topic_agency: str | None = None) -> None:
    """Write answers on the agencies' responses topics (on `topic_agency`'s, if given)."""
    await app.transport.producer().send_batch(
        [
            Outgoing(
                app.topics.responses(topic_agency or r.agency),
                app.codec.encode(r),
                key=r.submission_id.encode(),
            )
            for r in responses
        ]
    )


async def produce_raw(app: App, topic: str, value: bytes, key: bytes | None) -> None:
    await app.transport.producer().send_batch([Outgoing(topic, value, key=key)])


async def read_topic(transport: Transport, topic: str) -> list[Record]:
    """Every record of every partition of a topic, outside any consumer group."""
    partitions = await transport.partitions_for(topic)
    records: list[Record] = []
    for partition in range(partitions):
        records += await transport.read_partition(topic, partition)
    return records


async def read_requests(app: App, agency: str) -> list[AgencyRequest]:
    records = await read_topic(app.transport, app.topics.requests(agency))
    return [app.codec.decode(r.value or b"", AgencyRequest) for r in records]


async def requests_by_agency(app: App) -> dict[str, list[AgencyRequest]]:
    """What every agency's requests topic holds (all twelve, so a stray request shows up)."""
    return {agency: await read_requests(app, agency) for agency in app.topics.agencies}


async def locate(transport: Transport, topic: str, value: bytes) -> Record:
    """The record of `topic` holding exactly `value` (to check a dead letter's source)."""
    found = [r for r in await read_topic(transport, topic) if r.value == value]
    assert len(found) == 1, f"expected one record with that value on {topic}, found {len(found)}"
    return found[0]


async def assert_dead_letter(
    transport: Transport, dead: Record, *, source_topic: str, reason: str | Iterable[str]
) -> None:
    """A DLQ record carries the original bytes and names the reason and the exact source."""
    reasons = {reason} if isinstance(reason, str) else set(reason)
    assert header(dead, REASON) in reasons, (header(dead, REASON), header(dead, MESSAGE))
    assert header(dead, MESSAGE), "the DLQ record must say what was wrong"
    assert header(dead, SOURCE_TOPIC) == source_topic
    original = await locate(transport, source_topic, dead.value or b"")
    assert header(dead, SOURCE_PARTITION) == str(original.partition)
    assert header(dead, SOURCE_OFFSET) == str(original.offset)
    assert dead.key == original.key


# --- running services in the test's loop ----------------------------------------------------


class Runnable(Protocol):
    async def run(self, stopping: asyncio.Event) -> None: ...


class Service(Runnable, Protocol):
    ready: asyncio.Event


class ServiceFailed(AssertionError):
    pass


class Running:
    """Services started in the test's event loop, stopped (and their failures raised) on exit.
    Waits check that no service died meanwhile, so a crash fails fast with its traceback."""

    def __init__(self) -> None:
        self.stopping = asyncio.Event()
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._ready: list[asyncio.Event] = []

    def start(self, name: str, service: Service) -> None:
        self.start_runnable(name, service, service.ready)

    def start_runnable(self, name: str, runnable: Runnable, ready: asyncio.Event) -> None:
        """A runnable whose readiness another object reports (a simulated agency's connector)."""
        self._ready.append(ready)
        self._tasks[name] = asyncio.create_task(runnable.run(self.stopping), name=name)

    def start_agencies(self, agencies: Iterable[SimulatedAgency]) -> None:
        for agency in agencies:
            self.start_runnable(agency.agency, agency, agency.connector.ready)

    def check(self) -> None:
        for name, task in self._tasks.items():
            if task.done() and not self.stopping.is_set():
                exc = None if task.cancelled() else task.exception()
                raise ServiceFailed(f"service {name} stopped on its own: {exc!r}") from exc

    async def ready(self) -> None:
        await wait_until(
            lambda: all(ready.is_set() for ready in self._ready),
            "services joined their consumer groups",
            self,
        )

    async def stop(self) -> None:
        self.stopping.set()
        tasks = list(self._tasks.values())
        if not tasks:
            return
        done, pending = await asyncio.wait(tasks, timeout=STOP_S)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        failures = [t.exception() for t in done if not t.cancelled() and t.exception()]
        if failures:
            raise ServiceFailed(f"services failed: {failures!r}") from failures[0]
        assert not pending, f"services did not stop within {STOP_S} s: {pending}"


async def wait_until(condition: Callable[[], T], what: str, running: Running | None = None) -> T:
    """Wait until `condition()` is truthy and return it. No timeout of its own: call it in an
    `asyncio.timeout` scope; `what` is noted on the failure when the scope expires."""
    try:
        while True:
            result = condition()
            if result:
                return result
            if running is not None:
                running.check()
            await asyncio.sleep(POLL_S)
    except asyncio.CancelledError as exc:
        exc.add_note(f"while waiting until {what}")
        raise


async def wait_for_topic(
    transport: Transport, topic: str, condition: Callable[[list[Record]], bool], what: str
) -> list[Record]:
    """Re-read `topic` until its records satisfy `condition`; return them."""
    records: list[Record] = []

    async def reread() -> None:
        nonlocal records
        records = await read_topic(transport, topic)

    try:
        await reread()
        while not condition(records):
            await asyncio.sleep(POLL_S * 5)
            await reread()
    except asyncio.CancelledError as exc:
        exc.add_note(f"while waiting until {what} ({len(records)} records on {topic})")
        raise
    return records


async def wait_for_dlq(app: App, count: int) -> list[Record]:
    return await wait_for_topic(
        app.transport,
        app.topics.dlq,
        lambda records: len(records) >= count,
        f"{count} records reach {app.topics.dlq}",
    )


# --- watchers -------------------------------------------------------------------------------


class TopicWatcher:
    """Follows topics from the beginning in a consumer group of its own, keeping every record
    once (a rebalance that re-delivers is deduplicated by offset). Run it with `Running`."""

    def __init__(self, transport: Transport, topics: Sequence[str], name: str) -> None:
        self._transport = transport
        self._topics = list(topics)
        self._group = f"test-watch-{name}-{os.urandom(4).hex()}"
        self._by_partition: dict[TopicPartition, dict[int, Record]] = {}
        self.ready = asyncio.Event()

    async def run(self, stopping: asyncio.Event) -> None:
        consumer = await self._transport.consumer(self._group, self._topics)
        self.ready.set()
        try:
            while not stopping.is_set():
                for record in await consumer.getmany(timeout_ms=50):
                    tp = TopicPartition(record.topic, record.partition)
                    self._by_partition.setdefault(tp, {})[record.offset] = record
        finally:
            await consumer.stop()

    def records(self, topic: str | None = None) -> list[Record]:
        """In offset order within each partition."""
        out: list[Record] = []
        for tp in sorted(self._by_partition, key=lambda tp: (tp.topic, tp.partition)):
            if topic is None or tp.topic == topic:
                partition = self._by_partition[tp]
                out += [partition[offset] for offset in sorted(partition)]
        return out


class DecisionWatcher(TopicWatcher):
    """Follows `<prefix>.decisions`: every decision issued, in order per submission."""

    def __init__(self, transport: Transport, codec: Codec, topics: Topics) -> None:
        super().__init__(transport, [topics.decisions], "decisions")
        self._codec = codec
        self._decoded: dict[tuple[int, int], Decision] = {}

    def all(self) -> list[Decision]:
        out = []
        for record in self.records():
            key = (record.partition, record.offset)
            if key not in self._decoded:
                self._decoded[key] = self._codec.decode(record.value or b"", Decision)
            out.append(self._decoded[key])
        return out

    def of(self, sid: str, version: int | None = None) -> list[Decision]:
        return [
            d
            for d in self.all()
            if d.submission_id == sid and (version is None or d.version == version)
        ]

    def latest(self, sid: str) -> Decision | None:
        decisions = self.of(sid)
        return decisions[-1] if decisions else None

    def finals(self, sid: str, version: int | None = None) -> list[Decision]:
        return [d for d in self.of(sid, version) if d.final]

    async def wait_latest(
        self,
        sid: str,
        condition: Callable[[Decision], bool],
        what: str,
        running: Running | None = None,
    ) -> Decision:
        """Wait until the latest decision of `sid` satisfies `condition`; return it."""

        def met() -> Decision | None:
            latest = self.latest(sid)
            return latest if latest is not None and condition(latest) else None

        return await wait_until(met, f"{sid}: {what}", running)


def statuses(decision: Decision) -> dict[str, str]:
    return {line.agency: line.status.value for line in decision.agencies}


def content(decision: Decision) -> dict[str, Any]:
    return decision.model_dump(mode="json")


# --- swb subprocesses -----------------------------------------------------------------------


def swb_executable() -> str:
    """The `swb` console script of this environment."""
    beside = Path(sys.executable).with_name("swb")
    found = str(beside) if beside.exists() else shutil.which("swb")
    assert found, "the swb command is not installed: pip install -e '.[dev]'"
    return found


@dataclass
class SwbProcess:
    """`swb ARGS...` as a subprocess, its stderr JSON log lines collected as they come."""

    args: Sequence[str]
    env: Mapping[str, str]
    name: str = "swb"
    lines: list[str] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    process: asyncio.subprocess.Process | None = None
    _reader: asyncio.Task[None] | None = None

    async def start(self) -> SwbProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SWB_")}
        env.update({"SWB_LOG_FORMAT": "json", "SWB_LOG_LEVEL": "INFO", **self.env})
        self.process = await asyncio.create_subprocess_exec(
            swb_executable(),
            *self.args,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.create_task(self._read(self.process.stderr))
        return self

    async def _read(self, stream: asyncio.StreamReader | None) -> None:
        assert stream is not None
        while line := await stream.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.lines.append(text)
            with contextlib.suppress(ValueError):
                event = json.loads(text)
                if isinstance(event, dict):
                    self.events.append(event)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def logged(self, event: str, **fields: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("event") == event and all(e.get(k) == v for k, v in fields.items())
        ]

    def partitions_assigned(self, service: str) -> list[list[int]]:
        """Every assignment `service` (router or aggregator) logged, in order."""
        return [list(e["partitions"]) for e in self.logged(f"{service} partitions assigned")]

    async def wait_for_log(self, condition: Callable[[], T], what: str) -> T:
        """Wait (in the caller's timeout scope) until `condition()` holds over the logs."""

        def met() -> T:
            result = condition()
            if not result and self.returncode is not None:
                raise AssertionError(f"{self.name} exited ({self.returncode}):\n{self.tail()}")
            return result

        try:
            return await wait_until(met, f"{self.name}: {what}")
        except asyncio.CancelledError as exc:
            exc.add_note(f"--- {self.name} stderr ---\n{self.tail()}")
            raise

    async def wait_ready(self, roles: Iterable[str]) -> None:
        """Until each role logged its first partition assignment."""
        wanted = list(roles)
        await self.wait_for_log(
            lambda: all(self.partitions_assigned(role) for role in wanted),
            f"{', '.join(wanted)} got partitions",
        )

    def send(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    async def wait(self) -> int:
        """Until the process exits (in the caller's timeout scope); its exit code."""
        assert self.process is not None
        try:
            code = await self.process.wait()
            if self._reader is not None:
                await self._reader
        except asyncio.CancelledError as exc:
            exc.add_note(f"{self.name} still running; stderr:\n{self.tail()}")
            raise
        return code

    async def kill(self) -> None:
        """kill -9: no shutdown path runs."""
        if self.returncode is None:
            self.send(signal.SIGKILL)
        async with asyncio.timeout(STOP_S):
            await self.wait()

    async def stop(self) -> int:
        """SIGTERM and wait (SIGKILL if it does not exit in time): for teardown."""
        if self.process is None:
            return 0
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.send(signal.SIGTERM)
        try:
            async with asyncio.timeout(STOP_S):
                return await self.wait()
        except TimeoutError:
            await self.kill()
            raise

    def tail(self, lines: int = 40) -> str:
        return "\n".join(self.lines[-lines:])


def swb_env(bootstrap: str, prefix: str, partitions: int) -> dict[str, str]:
    return {
        "SWB_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SWB_TOPIC_PREFIX": prefix,
        "SWB_PARTITIONS": str(partitions),
        **FAST_GROUPS_ENV,
    }

"""`swb demo`: the whole single window on the embedded broker, with simulated agencies.

Submits the sample declarations once each, follows `sw.decisions`, answers a "documents
required" with an amendment carrying the documents (as a trader would), and prints for every
submission the agencies it went to, why, and the coordinated decision."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from rich.console import Console
from rich.table import Table

from broker.bootstrap import App, open_app
from broker.core.declaration import AdditionalDocument
from broker.core.intake import declare
from broker.core.messages import Decision, RoutingPlan, Submission
from broker.runtime.transport import Outgoing
from broker.settings import Settings
from connectors.customs_risk import CustomsRiskAgency, CustomsRiskConfig
from connectors.permits import PERMIT_TYPES, PermitAgency, sample_permits
from connectors.simulated import SimulationProfile

TRADER = "NL123456789000"  # the demo trader's EORI
CHANNEL = "demo"


@dataclass
class Tracked:
    name: str
    submission: Submission
    decisions: list[Decision] = field(default_factory=list)
    plans: dict[int, RoutingPlan] = field(default_factory=dict)
    amended: set[int] = field(default_factory=set)

    @property
    def latest(self) -> Decision | None:
        current = [d for d in self.decisions if d.version == self.submission.version]
        return current[-1] if current else None

    @property
    def done(self) -> bool:
        latest = self.latest
        return latest is not None and latest.final


def demo_api_keys() -> dict[str, str]:
    """Fresh keys each run (the demo may be reachable by others): the demo trader's, whose
    sample submissions the API shows, and a second trader's, to see isolation at work."""
    return {f"demo-{secrets.token_urlsafe(12)}": trader for trader in (TRADER, "DE987654321000")}


def sample_files(directory: Path | None = None) -> list[Path]:
    if directory is not None:
        return sorted(directory.glob("*.json"))
    shipped = resources.files("broker.samples")
    return sorted(Path(str(p)) for p in shipped.iterdir() if p.name.endswith(".json"))


async def run_demo(
    settings: Settings,
    stopping: asyncio.Event,
    *,
    seed: int,
    samples_dir: Path | None,
    serve: bool,
    timeout_s: float,
) -> int:
    console = Console(width=None if Console().is_terminal else 140)
    profile = SimulationProfile(seed=seed, latency_s=0.05, followup_s=0.5)
    if serve and not settings.api_keys:
        settings = settings.model_copy(update={"api_keys": demo_api_keys()})
    async with open_app(settings) as app:
        console.print(f"[bold]Single Window demo[/] — embedded broker at {app.bootstrap_servers}")
        # Customs by risk lane; wildlife, environment and strategic write their permits off;
        # the other agencies are simulated.
        customs = app.customs_risk_agency(
            CustomsRiskConfig(seed=seed, latency_s=0.05, inspection_s=0.5)
        )
        permit_agencies = [app.permit_agency(code) for code in PERMIT_TYPES]
        simulated = [c for c in app.topics.agencies if c != "customs" and c not in PERMIT_TYPES]
        services = [app.router().run, app.aggregator().run, customs.run]
        services += [agency.run for agency in permit_agencies]
        services += [agency.run for agency in app.simulated_agencies(profile, simulated)]
        gateway = app.gateway() if serve else None
        if gateway is not None:
            services.append(gateway.run)
        inner_stop = asyncio.Event()
        async with asyncio.TaskGroup() as tasks:
            for service in services:
                tasks.create_task(service(inner_stop))
            try:
                await _issue_sample_permits(app, permit_agencies)
                tracked = await _submit_and_follow(app, samples_dir, timeout_s, stopping)
                _print(console, tracked)
                _print_lanes_and_permits(console, customs, permit_agencies, tracked)
                if gateway is not None:
                    await gateway.listening.wait()
                    console.print(f"Trader HTTP API on {gateway.url} (see /docs); demo API keys:")
                    for key, trader in settings.api_keys.items():
                        console.print(f"  trader {trader}:  X-API-Key: {key}")
                    console.print("Serving; Ctrl-C to stop.")
                    await stopping.wait()
            finally:
                inner_stop.set()
    undecided = [t.name for t in tracked if not t.done]
    if undecided:
        console.print(f"[red]No final decision within {timeout_s:.0f} s for:[/] {undecided}")
        return 1
    return 0


async def _submit_and_follow(
    app: App, samples_dir: Path | None, timeout_s: float, stopping: asyncio.Event
) -> list[Tracked]:
    consumer = await app.transport.consumer(
        f"swb-demo-{uuid.uuid4().hex[:8]}", [app.topics.decisions, app.topics.routing]
    )
    try:
        tracked: dict[str, Tracked] = {}
        for path in sample_files(samples_dir):
            submission = declare(
                path.read_bytes(), trader_id=TRADER, channel=CHANNEL, now=app.clock()
            )
            tracked[submission.submission_id] = Tracked(path.stem, submission)
        await _send(app, [t.submission for t in tracked.values()])
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout_s):
                while not stopping.is_set() and not all(t.done for t in tracked.values()):
                    for record in await consumer.getmany(timeout_ms=200):
                        if record.topic == app.topics.routing:
                            plan = app.codec.decode(record.value or b"", RoutingPlan)
                            if plan.submission_id in tracked:
                                tracked[plan.submission_id].plans[plan.version] = plan
                            continue
                        decision = app.codec.decode(record.value or b"", Decision)
                        if decision.submission_id in tracked:
                            tracked[decision.submission_id].decisions.append(decision)
                    await _amend_for_documents(app, tracked.values())
        return list(tracked.values())
    finally:
        await consumer.stop()


async def _send(app: App, submissions: list[Submission]) -> None:
    await app.transport.producer().send_batch(
        [
            Outgoing(app.topics.submissions, app.codec.encode(s), key=s.submission_id.encode())
            for s in submissions
        ]
    )


async def _amend_for_documents(app: App, tracked: Iterable[Tracked]) -> None:
    """A trader answers "documents required" by amending the declaration with them."""
    amendments = []
    for t in tracked:
        latest = t.latest
        if latest is None or latest.final or not latest.documents_required:
            continue
        if t.submission.version in t.amended:
            continue
        if any(a.status.value in ("PENDING", "OVERDUE") for a in latest.agencies):
            continue  # wait until every agency has had its say
        t.amended.add(t.submission.version)
        declaration = t.submission.declaration
        assert declaration is not None  # amendments follow a declaration, never a cancellation
        added = tuple(
            AdditionalDocument(
                type_code=doc.type_code,
                id=f"{doc.type_code}-{n:04d}",
                issuer=f"{doc.agency} authority",
            )
            for n, doc in enumerate(latest.documents_required, start=1)
        )
        payload = (
            declaration.model_copy(update={"documents": declaration.documents + added})
            .model_dump_json()
            .encode()
        )
        t.submission = declare(
            payload,
            trader_id=TRADER,
            channel=CHANNEL,
            now=app.clock(),
            version=t.submission.version + 1,
            submission_id=t.submission.submission_id,
        )
        amendments.append(t.submission)
    if amendments:
        await _send(app, amendments)


def _print(console: Console, tracked: list[Tracked]) -> None:
    for t in tracked:
        decision = t.latest
        declaration = t.submission.declaration
        assert declaration is not None
        title = (
            f"[bold]{t.name}[/]  {declaration.type.value} {declaration.export_country}"
            f"→{declaration.destination_country}  LRN {declaration.lrn}  "
            f"id {t.submission.submission_id}  v{t.submission.version}"
        )
        table = Table(title=title, title_justify="left", expand=False)
        for column in ("agency", "flag", "routed because", "status", "reasons / conditions"):
            table.add_column(column)
        if decision is None:
            console.print(title, "\n  [red]no decision yet[/]")
            continue
        for line in decision.agencies:
            notes = "; ".join(line.reasons if line.answered_at else ())
            if line.conditions:
                notes += " | conditions: " + "; ".join(line.conditions)
            routed = ", ".join(r for r in _route_reasons(t, line.agency))
            flag = "R" if line.requirement.value == "REQUIRED" else "M"
            table.add_row(line.agency, flag, routed, line.status.value, notes)
        console.print(table)
        summary = f"  ⇒ [bold]{decision.outcome.value}[/] (final={decision.final})"
        if decision.release_on_arrival:  # lodged before arrival (Revised Kyoto Convention)
            summary += "  takes effect on arrival"
        if decision.joint_inspection:
            summary += f"  joint inspection: {', '.join(decision.joint_inspection.agencies)}"
        if decision.documents_required:
            summary += "  documents: " + ", ".join(
                f"{d.type_code} for {d.agency}" for d in decision.documents_required
            )
        path = [f"v{d.version} {d.outcome.value}" for d in t.decisions]
        summary += "\n     decisions issued: " + " → ".join(dict.fromkeys(path))
        if t.submission.version > 1:
            summary += f"  (amended to v{t.submission.version} with the documents asked for)"
        console.print(summary + "\n")


async def _issue_sample_permits(app: App, agencies: list[PermitAgency]) -> None:
    """The permits the samples cite, issued once each agency has restored its ledger."""
    by_agency = {agency.agency: agency for agency in agencies}
    for permit in sample_permits(app.clock()):
        agency = by_agency[permit.issuing_agency]
        async with asyncio.timeout(30):
            await agency.restored.wait()
        await agency.issue(permit)


def _print_lanes_and_permits(
    console: Console,
    customs: CustomsRiskAgency,
    permit_agencies: list[PermitAgency],
    tracked: list[Tracked],
) -> None:
    """Customs' lane mix over the samples (latest version of each) and what permits have left."""
    lanes: dict[str, list[str]] = {}
    for t in tracked:
        lane = customs.lane_of(t.submission.submission_id)
        lanes.setdefault(lane.value if lane else "not assessed", []).append(t.name[:2])
    mix = ", ".join(
        f"{lane} {len(names)} ({' '.join(names)})"
        for lane, names in sorted(lanes.items(), key=lambda item: _LANE_ORDER.get(item[0], 9))
    )
    console.print(f"[bold]Customs risk lanes[/] over {len(tracked)} declarations: {mix}")
    for agency in permit_agencies:
        for permit in agency.ledger.permits():
            console.print(
                f"[bold]Permit[/] {permit.permit_id} ({permit.type_code}, {agency.agency}): "
                f"{agency.remaining(permit.permit_id).normalize():f} of "
                f"{permit.total_quantity.normalize():f} {permit.unit} left"
            )


_LANE_ORDER = {"green": 0, "blue": 1, "yellow": 2, "red": 3}


def _route_reasons(t: Tracked, agency: str) -> tuple[str, ...]:
    plan = t.plans.get(t.submission.version)
    for route in plan.agencies if plan else ():
        if route.agency == agency:
            return route.reasons
    return ()

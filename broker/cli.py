"""The `swb` command. Each subcommand reads settings once and goes through `open_app`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from broker.core.declaration import Declaration, now_utc, validation_messages
from broker.core.ids import payload_sha256, submission_id_for
from broker.core.messages import AGENCY_CODES, SubmissionKind
from broker.core.routing import explain_plan, route
from broker.core.rules import load_rules
from broker.errors import SwbError
from broker.runtime.logging import configure_logging
from broker.settings import Settings

EXIT_INVALID = 2


def _settings(**overrides: Any) -> Settings:
    values = {k: v for k, v in overrides.items() if v is not None}
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise click.UsageError("; ".join(validation_messages(exc))) from exc


def _run_async(main: Callable[[asyncio.Event], Coroutine[Any, Any, int | None]]) -> None:
    """Run `main` with an event set on SIGTERM/SIGINT; translate our errors into a sentence."""

    async def runner() -> int | None:
        stopping = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stopping.set)
        return await main(stopping)

    try:
        code = asyncio.run(runner())
    except (SwbError, ExceptionGroup) as exc:
        errors = _swb_errors(exc)
        if not errors:
            raise
        for error in errors:
            click.echo(f"swb: {error}", err=True)
        sys.exit(1)
    sys.exit(code or 0)


def _swb_errors(exc: BaseException) -> list[SwbError]:
    """Our errors inside a (nested) exception group, or [] if something else went wrong."""
    if isinstance(exc, SwbError):
        return [exc]
    if isinstance(exc, BaseExceptionGroup):
        found = [e for inner in exc.exceptions for e in _swb_errors(inner)]
        return found if len(found) == len(exc.exceptions) else []
    return []


@click.group()
@click.version_option(package_name="single-window-broker")
def main() -> None:
    """Single Window broker: a trader submits once; border agencies answer on Kafka; the
    trader gets one coordinated decision."""


@main.command("route")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--rules",
    "rules_file",
    type=click.Path(exists=True, path_type=Path),
    help="Rules file (default: SWB_RULES_FILE or the shipped rules).",
)
@click.option("--trader", default="demo-trader", show_default=True)
def route_command(file: Path, rules_file: Path | None, trader: str) -> None:
    """Print the routing plan of a declaration as JSON; sends nothing."""
    settings = _settings(rules_file=rules_file)
    payload = file.read_bytes()
    try:
        declaration = Declaration.model_validate_json(payload)
    except ValidationError as exc:
        click.echo(f"{file}: the declaration is invalid:", err=True)
        for line in validation_messages(exc):
            click.echo(f"  {line}", err=True)
        sys.exit(EXIT_INVALID)
    try:
        rules = load_rules(settings.rules_file)
    except SwbError as exc:
        click.echo(f"swb: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    plan = route(
        declaration,
        rules,
        submission_id=submission_id_for(trader, declaration.lrn),
        version=1,
        kind=SubmissionKind.NEW,
        trader_id=trader,
        payload_sha256=payload_sha256(payload),
        now=now_utc(),
    )
    click.echo(json.dumps(explain_plan(plan), indent=2))


@main.command("run")
@click.option(
    "--role",
    type=click.Choice(["all", "router", "aggregator", "gateway", "partner"]),
    default="all",
    show_default=True,
    help="Run one role to scale it apart in its consumer group "
    "(partner: share released exports with partner single windows, SWB_PARTNER__*).",
)
@click.option("--partitions", type=int, help="Partitions per topic (SWB_PARTITIONS).")
def run_command(role: str, partitions: int | None) -> None:
    """Run the broker until SIGTERM/SIGINT (embedded Kafka unless
    SWB_KAFKA_BOOTSTRAP_SERVERS is set)."""
    settings = _settings(partitions=partitions)
    if role == "partner" and not settings.partner.enabled:
        raise click.UsageError(
            "the partner role needs SWB_PARTNER__COUNTRY and "
            "SWB_PARTNER__PARTNERS (partner country -> its topic prefix)"
        )
    configure_logging(settings.log_format, settings.log_level)

    async def serve(stopping: asyncio.Event) -> None:
        from broker.bootstrap import ROLES, open_app, run_until_stopped

        async with open_app(settings) as app:
            services = []
            if role in ("all", "router"):
                services.append(app.router().run)
                if settings.partner.enabled:  # the partners' export data the router links
                    services.append(app.partner_inbox().run)
            if role in ("all", "partner") and settings.partner.enabled:
                services.append(app.partner_exchange().run)
            if role in ("all", "aggregator"):
                services.append(app.aggregator().run)
            if role in ("all", "gateway"):
                gateway = app.gateway()
                gateway.on_listening = lambda url: click.echo(
                    f"swb: gateway listening on {url}", err=True
                )
                services.append(gateway.run)
            # The metrics endpoint and the lag monitor, when SWB_METRICS_PORT is set.
            services += app.operations(ROLES if role == "all" else (role,))
            click.echo(f"swb: {role} running on {app.bootstrap_servers}", err=True)
            await run_until_stopped(
                services, stopping, shutdown_timeout_s=settings.shutdown_timeout_s
            )

    _run_async(serve)


def _gateway_client(url: str | None, api_key: str) -> Any:
    """A client for the trader API; the default URL is where `swb run` serves it."""
    from broker.gateway.client import GatewayClient

    if not url:
        settings = _settings()
        host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "::", "") else settings.http_host
        url = f"http://{host}:{settings.http_port}"
    return GatewayClient(url, api_key)


def _problem_exit(answer: Any) -> None:
    """Print a problem+json answer as sentences; exit 2 when the request was refused."""
    body = answer.body
    click.echo(
        f"swb: {body.get('title', 'error')} ({answer.status}): {body.get('detail', '')}", err=True
    )
    for error in body.get("errors") or ():
        click.echo(f"  {error.get('field')}: {error.get('message')}", err=True)
    if body.get("rule"):
        click.echo(f"  rule: {body['rule']}", err=True)
    sys.exit(EXIT_INVALID if answer.status < 500 else 1)


_gateway_options = [
    click.option(
        "--url",
        envvar="SWB_GATEWAY_URL",
        help="Gateway URL (SWB_GATEWAY_URL; default http://SWB_HTTP_HOST:SWB_HTTP_PORT).",
    ),
    click.option(
        "--api-key", envvar="SWB_API_KEY", required=True, help="Your API key (SWB_API_KEY)."
    ),
]


def _with_gateway_options(command: Callable[..., None]) -> Callable[..., None]:
    for option in reversed(_gateway_options):
        command = option(command)
    return command


@main.command("submit")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@_with_gateway_options
def submit_command(file: Path, url: str | None, api_key: str) -> None:
    """Lodge a declaration through the HTTP gateway; prints the submission id and status URL.
    Retries after a 503 with the same Idempotency-Key, so it never lodges twice."""
    try:
        with _gateway_client(url, api_key) as client:
            answer = client.submit(file.read_bytes())
    except SwbError as exc:
        click.echo(f"swb: {exc}", err=True)
        sys.exit(1)
    if not answer.ok:
        _problem_exit(answer)
    click.echo(json.dumps(answer.body, indent=2))


@main.command("status")
@click.argument("submission_id")
@_with_gateway_options
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON as is.")
def status_command(submission_id: str, url: str | None, api_key: str, as_json: bool) -> None:
    """Show a submission's coordinated decision, each agency's status and the versions."""
    try:
        with _gateway_client(url, api_key) as client:
            answer = client.status(submission_id)
    except SwbError as exc:
        click.echo(f"swb: {exc}", err=True)
        sys.exit(1)
    if not answer.ok:
        _problem_exit(answer)
    if as_json:
        click.echo(json.dumps(answer.body, indent=2))
        return
    from broker.gateway.text import describe_submission

    click.echo(describe_submission(answer.body))


@main.command("audit")
@click.argument("submission_id")
@click.option("--json", "as_json", is_flag=True, help="Print the trail as JSON.")
def audit_command(submission_id: str, as_json: bool) -> None:
    """Print a submission's full history from the topics: every version as received (SHA-256,
    submitter, time), the packages sent to each agency, their answers, the decisions, arrival
    notices, dead letters and exports shared with partners. Exit 1 when nothing is found."""
    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        raise click.UsageError("set SWB_KAFKA_BOOTSTRAP_SERVERS to the broker `swb run` uses")

    async def show(stopping: asyncio.Event) -> int:
        from broker.audit import dumps, read_audit_trail, render_table
        from broker.bootstrap import open_app

        async with open_app(settings, create_topics=False) as app:
            trail = await read_audit_trail(
                app.transport,
                app.codec,
                app.topics,
                submission_id,
                partner_countries=list(settings.partner.partners),
            )
        if not trail.found:
            click.echo(
                f"swb: nothing about {submission_id} on the topics of prefix "
                f"{settings.topic_prefix!r}",
                err=True,
            )
            return 1
        click.echo(dumps(trail) if as_json else render_table(trail))
        return 0

    _run_async(show)


@main.command("agency")
@click.argument("code", type=click.Choice(AGENCY_CODES))
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--latency",
    type=float,
    default=0.0,
    show_default=True,
    help="Seconds before each first answer.",
)
@click.option(
    "--followup",
    type=float,
    default=1.0,
    show_default=True,
    help="Seconds an inspection or a hold takes.",
)
@click.option(
    "--risk",
    is_flag=True,
    help="customs only: answer by risk lane (broker/rules/risk_profiles.toml).",
)
@click.option(
    "--risk-profiles",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Risk profiles file for --risk (default: the shipped profiles).",
)
@click.option(
    "--permits",
    is_flag=True,
    help="wildlife, environment or strategic: answer "
    "from the permit ledger on <prefix>.permits, writing cited permits off.",
)
def agency_command(
    code: str,
    seed: int,
    latency: float,
    followup: float,
    risk: bool,
    risk_profiles: Path | None,
    permits: bool,
) -> None:
    """Run a simulated border agency answering its requests topic."""
    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        raise click.UsageError("set SWB_KAFKA_BOOTSTRAP_SERVERS to the broker `swb run` uses")
    if risk and code != "customs":
        raise click.UsageError("--risk is customs' risk engine: use it with `swb agency customs`")
    if permits and code not in ("wildlife", "environment", "strategic"):
        raise click.UsageError("--permits: only wildlife, environment and strategic issue permits")
    configure_logging(settings.log_format, settings.log_level)

    async def serve(stopping: asyncio.Event) -> None:
        from broker.bootstrap import open_app, run_until_stopped
        from broker.core.risk import load_risk_policy
        from connectors.customs_risk import CustomsRiskConfig
        from connectors.simulated import SimulationProfile

        profile = SimulationProfile(seed=seed, latency_s=latency, followup_s=followup)
        async with open_app(settings) as app:
            if risk:
                config = CustomsRiskConfig(
                    seed=seed,
                    policy=load_risk_policy(risk_profiles),
                    latency_s=latency,
                    inspection_s=followup,
                )
                service = app.customs_risk_agency(config).run
            elif permits:
                service = app.permit_agency(code).run
            else:
                (agency,) = app.simulated_agencies(profile, [code])
                service = agency.run
            await run_until_stopped(
                [service], stopping, shutdown_timeout_s=settings.shutdown_timeout_s
            )

    _run_async(serve)


@main.command("risk")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--profiles",
    "profiles_file",
    type=click.Path(exists=True, path_type=Path),
    help="Risk profiles (default: broker/rules/risk_profiles.toml).",
)
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--trader", default="demo-trader", show_default=True)
def risk_command(file: Path, profiles_file: Path | None, seed: int, trader: str) -> None:
    """Print customs' risk lane for a declaration, and why, without sending anything."""
    from broker.core.messages import InformationPackage
    from broker.core.risk import assess, load_risk_policy

    try:
        policy = load_risk_policy(profiles_file)
        declaration = Declaration.model_validate_json(file.read_bytes())
    except SwbError as exc:
        click.echo(f"swb: {exc}", err=True)
        sys.exit(EXIT_INVALID)
    except ValidationError as exc:
        for line in validation_messages(exc):
            click.echo(line, err=True)
        sys.exit(EXIT_INVALID)
    fields = set(InformationPackage.model_fields) & set(Declaration.model_fields)
    package = InformationPackage(**{name: getattr(declaration, name) for name in fields})
    submission_id = submission_id_for(trader, declaration.lrn)
    assessment = assess(package, policy, submission_id=submission_id, seed=seed)
    click.echo(
        json.dumps(
            {
                "submission_id": submission_id,
                "lane": assessment.lane.value,
                "score": assessment.score,
                "profiles": [hit.profile.id for hit in assessment.hits],
                "randomly_selected": assessment.randomly_selected,
                "reasons": list(assessment.explain()),
            },
            indent=2,
        )
    )


@main.command("permits")
@click.option(
    "--agency",
    type=click.Choice(["wildlife", "environment", "strategic"]),
    help="Only this agency's permits.",
)
def permits_command(agency: str | None) -> None:
    """Print every permit on <prefix>.permits with what is left of it."""
    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        raise click.UsageError("set SWB_KAFKA_BOOTSTRAP_SERVERS to the broker `swb run` uses")

    async def show(stopping: asyncio.Event) -> None:
        from broker.bootstrap import open_app
        from broker.core.permits import amount, remaining
        from connectors.permits import read_permits

        async with open_app(settings, create_topics=False) as app:
            found = await read_permits(app.transport, app.codec, app.topics.permits, agency)
        for permit in found:
            active = sum(1 for usage in permit.usages if usage.released_at is None)
            click.echo(
                f"{permit.permit_id}  {permit.type_code}  {permit.issuing_agency}  holder "
                f"{permit.holder_id}  {amount(remaining(permit))} of "
                f"{amount(permit.total_quantity)} {permit.unit} left  "
                f"({active} write-offs, valid {permit.valid_from:%Y-%m-%d} to "
                f"{permit.valid_to:%Y-%m-%d})"
            )
        if not found:
            click.echo("no permits")

    _run_async(show)


@main.command("demo")
@click.option("--serve", is_flag=True, help="Keep running after the samples are decided.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option(
    "--samples",
    "samples_dir",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="Folder of declaration JSON files (default: shipped).",
)
@click.option("--timeout", type=float, default=90.0, show_default=True)
def demo_command(serve: bool, seed: int, samples_dir: Path | None, timeout: float) -> None:
    """Run everything embedded with simulated agencies, submit the sample declarations and
    show each one's fan-out and coordinated decision."""
    settings = _settings(log_level="WARNING")
    configure_logging(settings.log_format, settings.log_level)
    from broker.demo import run_demo

    _run_async(
        lambda stopping: run_demo(
            settings, stopping, seed=seed, samples_dir=samples_dir, serve=serve, timeout_s=timeout
        )
    )


@main.command("bench")
@click.option(
    "-n",
    "count",
    type=int,
    default=5000,
    show_default=True,
    help="Declarations to submit in each phase.",
)
@click.option("--rate", type=float, help="Offered declarations per second (default: flat out).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, no progress bar.")
@click.option("--partitions", type=int, help="Partitions per topic (SWB_PARTITIONS).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes running the full pipeline in its consumer groups (scale-out).",
)
@click.option(
    "--split",
    default="",
    help="Roles (router,aggregator,agencies) to run in a process of their own instead of this one.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Declarations decided before measuring, per phase.",
)
@click.option("--no-baseline", is_flag=True, help="Measure the full pipeline only.")
@click.option(
    "--in-memory",
    is_flag=True,
    help="The full pipeline on the in-memory transport: "
    "the broker's own CPU per decision, without Kafka (no baseline).",
)
@click.option(
    "--memory-inflight",
    type=click.IntRange(min=1),
    help="Instead: bytes per in-flight submission in the aggregator, with this "
    "many open against agencies that never answer.",
)
def bench_command(
    count: int,
    rate: float | None,
    as_json: bool,
    partitions: int | None,
    workers: int,
    split: str,
    warmup: int,
    no_baseline: bool,
    in_memory: bool,
    memory_inflight: int | None,
) -> None:
    """Measure the full pipeline against a bare-Kafka baseline in the same run: decisions/s,
    submission-to-final-decision latency, CPU per 1,000 decisions, peak RSS (BENCHMARKS.md)."""
    from broker.bench import BenchOptions, run_bench

    settings = _settings(partitions=partitions, log_level="WARNING")
    configure_logging(settings.log_format, settings.log_level)
    roles = tuple(role for role in split.split(",") if role)
    if not set(roles) <= {"router", "aggregator", "agencies"}:
        raise click.UsageError(f"--split takes router, aggregator, agencies; not {split!r}")
    if in_memory and (workers > 1 or roles):
        raise click.UsageError("--in-memory runs in one process: no --workers or --split")
    options = BenchOptions(
        count=count,
        rate=rate,
        warmup=warmup,
        baseline=not no_baseline,
        workers=workers,
        split=roles,
        in_memory=in_memory,
    )
    _run_async(
        lambda stopping: run_bench(
            settings, options, as_json=as_json, memory_inflight=memory_inflight
        )
    )


@main.command("top")
@click.option(
    "--url",
    help="Metrics endpoint to read (default: SWB_METRICS_PORT on this host, "
    "else the gateway's /metrics on SWB_HTTP_PORT).",
)
@click.option(
    "--interval",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds between refreshes; rates cover one interval.",
)
@click.option(
    "--once",
    is_flag=True,
    help="Print one frame (two scrapes an interval apart) and exit: for scripts and tests.",
)
def top_command(url: str | None, interval: float, once: bool) -> None:
    """A live view for operators: throughput, decision latency, in-flight submissions,
    overdue agencies, DLQ and lag, read from a metrics endpoint."""
    from broker.top import default_url, run_top

    settings = _settings()
    sys.exit(run_top(url or default_url(settings), interval_s=interval, once=once))


@main.command("asyncapi")
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["json", "yaml"]),
    default="json",
    show_default=True,
)
@click.option(
    "--server",
    default="localhost:9092",
    show_default=True,
    help="Kafka bootstrap address to publish in the document.",
)
def asyncapi_command(output_format: str, server: str) -> None:
    """Print the AsyncAPI 3.0 document of the topics and schemas agencies code against."""
    from broker.asyncapi import asyncapi_document
    from broker.core.topics import Topics

    settings = _settings()
    document = asyncapi_document(
        Topics(settings.topic_prefix), server=server, partitions=settings.partitions
    )
    if output_format == "json":
        click.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    try:
        import yaml
    except ImportError as exc:
        raise click.UsageError(
            "YAML output needs PyYAML: pip install 'single-window-broker[yaml]'"
        ) from exc
    click.echo(yaml.safe_dump(document, sort_keys=False, allow_unicode=True), nl=False)


@main.command("bridge")
@click.argument("code", type=click.Choice(AGENCY_CODES))
@click.option("--url", help="The agency's HTTP endpoint (SWB_BRIDGE__URL).")
@click.option("--auth-header", help="Header carrying the credential (SWB_BRIDGE__AUTH_HEADER).")
@click.option("--auth-value", help="Its value, e.g. 'Bearer ...' (SWB_BRIDGE__AUTH_VALUE).")
@click.option("--timeout", "timeout_s", type=float, help="Seconds per attempt.")
@click.option("--retry-initial", "retry_initial_s", type=float, help="First retry delay, s.")
@click.option("--retry-max", "retry_max_s", type=float, help="Longest retry delay, s.")
@click.option("--breaker-failures", type=int, help="Consecutive failures that open the circuit.")
@click.option(
    "--breaker-reset",
    "breaker_reset_s",
    type=float,
    help="Seconds the circuit stays open before one trial request.",
)
@click.option("--callback-port", type=int, help="Serve the callback endpoint (0: free port).")
@click.option("--callback-host", help="Address the callback endpoint listens on.")
@click.option("--callback-token", help="Bearer token agencies call back with.")
@click.option("--callback-url", help="Callback URL advertised to the agency.")
@click.option(
    "--dead-letters/--no-dead-letters",
    default=None,
    help="Write refused requests to sw.dlq (off with an agency-only principal).",
)
def bridge_command(code: str, **overrides: Any) -> None:
    """Run the REST bridge of agency CODE: forward its requests to its HTTP endpoint and
    publish its answers (given at once, or later on the callback endpoint)."""
    from broker.settings import BridgeSettings

    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        raise click.UsageError("set SWB_KAFKA_BOOTSTRAP_SERVERS to the broker `swb run` uses")
    given = {name: value for name, value in overrides.items() if value is not None}
    values = {**settings.bridge.model_dump(), **given}
    try:
        bridge_settings = BridgeSettings.model_validate(values)
    except ValidationError as exc:
        raise click.UsageError("; ".join(validation_messages(exc))) from exc
    if not bridge_settings.url:
        raise click.UsageError("give the agency's endpoint: --url or SWB_BRIDGE__URL")
    if bridge_settings.callback_port is not None and bridge_settings.callback_token is None:
        raise click.UsageError(
            "the callback endpoint needs --callback-token: without it anyone "
            "reaching it could answer as the agency"
        )
    settings = settings.model_copy(update={"bridge": bridge_settings})
    configure_logging(settings.log_format, settings.log_level)

    async def serve(stopping: asyncio.Event) -> None:
        from broker.bootstrap import open_app, run_until_stopped

        # An agency's principal may not administer topics (deploy/acls): create none.
        async with open_app(settings, create_topics=False) as app:
            bridge = app.rest_bridge(code)
            # Wait for `swb run` to create the topic: subscribing first would make Tansu
            # auto-create it with its own partition count, breaking co-partitioning.
            topic = app.topics.requests(code)
            while not stopping.is_set():
                try:
                    await app.transport.partitions_for(topic)
                    break
                except SwbError:
                    click.echo(f"swb: waiting for topic {topic}", err=True)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stopping.wait(), 2.0)
            click.echo(f"swb: bridge {code} -> {bridge.endpoint.url}", err=True)
            await run_until_stopped(
                [bridge.run], stopping, shutdown_timeout_s=settings.shutdown_timeout_s
            )

    _run_async(serve)

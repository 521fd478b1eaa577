"""Commands for the agency side: simulated agencies, the REST bridge, the published
contract, customs' risk lane and permit balances."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

import click
from pydantic import ValidationError

from broker.commands._shared import EXIT_INVALID, _run_async, _settings
from broker.core.declaration import Declaration, validation_messages
from broker.core.ids import submission_id_for
from broker.core.messages import AGENCY_CODES
from broker.errors import SwbError
from broker.runtime.logging import configure_logging


@click.command("agency")
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


@click.command("risk")
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


@click.command("permits")
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


@click.command("asyncapi")
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


@click.command("bridge")
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

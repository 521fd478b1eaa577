"""The `swb` command. Each subcommand reads settings once and goes through `open_app`."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click
from pydantic import ValidationError

from broker.commands import agencies, operators, trader
from broker.commands._shared import EXIT_INVALID, _run_async, _settings
from broker.core.declaration import Declaration, now_utc, validation_messages
from broker.core.ids import payload_sha256, submission_id_for
from broker.core.messages import SubmissionKind
from broker.core.routing import explain_plan, route
from broker.core.rules import load_rules
from broker.errors import SwbError
from broker.runtime.logging import configure_logging


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


for _command in (
    trader.submit_command,
    trader.status_command,
    trader.audit_command,
    agencies.agency_command,
    agencies.risk_command,
    agencies.permits_command,
    agencies.asyncapi_command,
    agencies.bridge_command,
    operators.bench_command,
    operators.top_command,
):
    main.add_command(_command)

"""The `swb` command. Each subcommand reads settings once and goes through `open_app`."""

from __future__ import annotations

import asyncio
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
@click.option("--rules", "rules_file", type=click.Path(exists=True, path_type=Path),
              help="Rules file (default: SWB_RULES_FILE or the shipped rules).")
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
@click.option("--role", type=click.Choice(["all", "router", "aggregator"]), default="all",
              show_default=True, help="Run one role to scale it apart in its consumer group.")
@click.option("--partitions", type=int, help="Partitions per topic (SWB_PARTITIONS).")
def run_command(role: str, partitions: int | None) -> None:
    """Run the broker until SIGTERM/SIGINT (embedded Kafka unless
    SWB_KAFKA_BOOTSTRAP_SERVERS is set)."""
    settings = _settings(partitions=partitions)
    configure_logging(settings.log_format, settings.log_level)

    async def serve(stopping: asyncio.Event) -> None:
        from broker.bootstrap import open_app, run_until_stopped

        async with open_app(settings) as app:
            services = []
            if role in ("all", "router"):
                services.append(app.router().run)
            if role in ("all", "aggregator"):
                services.append(app.aggregator().run)
            click.echo(f"swb: {role} running on {app.bootstrap_servers}", err=True)
            await run_until_stopped(
                services, stopping, shutdown_timeout_s=settings.shutdown_timeout_s
            )

    _run_async(serve)


@main.command("agency")
@click.argument("code", type=click.Choice(AGENCY_CODES))
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--latency", type=float, default=0.0, show_default=True,
              help="Seconds before each first answer.")
@click.option("--followup", type=float, default=1.0, show_default=True,
              help="Seconds an inspection or a hold takes.")
def agency_command(code: str, seed: int, latency: float, followup: float) -> None:
    """Run a simulated border agency answering its requests topic."""
    settings = _settings()
    if not settings.kafka_bootstrap_servers:
        raise click.UsageError("set SWB_KAFKA_BOOTSTRAP_SERVERS to the broker `swb run` uses")
    configure_logging(settings.log_format, settings.log_level)

    async def serve(stopping: asyncio.Event) -> None:
        from broker.bootstrap import open_app, run_until_stopped
        from connectors.simulated import SimulationProfile

        profile = SimulationProfile(seed=seed, latency_s=latency, followup_s=followup)
        async with open_app(settings) as app:
            (agency,) = app.simulated_agencies(profile, [code])
            await run_until_stopped(
                [agency.run], stopping, shutdown_timeout_s=settings.shutdown_timeout_s
            )

    _run_async(serve)


@main.command("demo")
@click.option("--serve", is_flag=True, help="Keep running after the samples are decided.")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--samples", "samples_dir", type=click.Path(exists=True, file_okay=False,
              path_type=Path), help="Folder of declaration JSON files (default: shipped).")
@click.option("--timeout", type=float, default=90.0, show_default=True)
def demo_command(serve: bool, seed: int, samples_dir: Path | None, timeout: float) -> None:
    """Run everything embedded with simulated agencies, submit the sample declarations and
    show each one's fan-out and coordinated decision."""
    settings = _settings(log_level="WARNING")
    configure_logging(settings.log_format, settings.log_level)
    from broker.demo import run_demo

    _run_async(lambda stopping: run_demo(settings, stopping, seed=seed,
                                         samples_dir=samples_dir, serve=serve, timeout_s=timeout))

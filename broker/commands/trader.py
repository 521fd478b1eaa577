"""Commands for a clerk at a terminal: lodge through the HTTP gateway, follow, audit."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from broker.commands._shared import EXIT_INVALID, _run_async, _settings
from broker.errors import SwbError


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


@click.command("submit")
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


@click.command("status")
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


@click.command("audit")
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

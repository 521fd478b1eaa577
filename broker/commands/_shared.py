"""What every subcommand shares: settings read once, and an event loop that stops on
SIGTERM/SIGINT and turns our errors into a sentence."""

from __future__ import annotations

import asyncio
import gc
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

import click
from pydantic import ValidationError

from broker.core.declaration import validation_messages
from broker.errors import SwbError
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

    # What the imports built lives as long as the process: out of the collector's way, so
    # full collections only walk what the service holds (their pauses are latency spikes).
    gc.collect()
    gc.freeze()
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

"""Fixtures for the end-to-end tests: the `swb` command run as a user would, as a subprocess,
with a clean SWB_* environment (so the developer's settings do not leak in)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio


def swb_executable() -> str:
    beside = Path(sys.executable).with_name("swb")
    found = str(beside) if beside.exists() else shutil.which("swb")
    assert found, "the swb command is not installed: pip install -e '.[dev]'"
    return found


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWB_", "CALF_"))}
    return {**env, "SWB_LOG_FORMAT": "json", **(extra or {})}


RunSwb = Callable[..., "subprocess.CompletedProcess[str]"]


def _run_swb(
    args: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run `swb ARGS` to completion and capture its output."""
    return subprocess.run(
        [swb_executable(), *args],
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        check=False,
    )


class LiveSwb:
    """A long-running `swb` (in its own session, like a command started in a terminal) whose
    stderr is collected line by line; JSON log lines are parsed."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str] | None) -> None:
        self.args = list(args)
        self.env = clean_env(env)
        self.lines: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.process: asyncio.subprocess.Process | None = None
        self._reader: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self.process = await asyncio.create_subprocess_exec(
            swb_executable(),
            *self.args,
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.process is not None and self.process.stderr is not None
        while line := await self.process.stderr.readline():
            text = line.decode(errors="replace").rstrip("\n")
            self.lines.append(text)
            with contextlib.suppress(ValueError):
                event = json.loads(text)
                if isinstance(event, dict):
                    self.events.append(event)

    def logged(self, event: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == event]

    async def wait_for(self, condition: Callable[[], bool], what: str) -> None:
        """Until `condition()` holds (in the caller's timeout scope)."""
        assert self.process is not None
        try:
            while not condition():
                if self.process.returncode is not None:
                    raise AssertionError(f"swb exited ({self.process.returncode}) before {what}")
                await asyncio.sleep(0.05)
        except (asyncio.CancelledError, AssertionError) as exc:
            exc.add_note(f"while waiting until {what}; stderr:\n{self.tail()}")
            raise

    async def exit_code(self) -> int:
        """Until it exits (in the caller's timeout scope)."""
        assert self.process is not None and self._reader is not None
        try:
            code = await self.process.wait()
            await self._reader
        except asyncio.CancelledError as exc:
            exc.add_note(f"swb still running; stderr:\n{self.tail()}")
            raise
        return code

    def signal_group(self, sig: signal.Signals) -> None:
        """As a terminal does for Ctrl-C: to every process of the session."""
        assert self.process is not None
        os.killpg(self.process.pid, sig)

    def signal(self, sig: signal.Signals) -> None:
        """As a process manager does (systemd, Kubernetes): to the main process only."""
        assert self.process is not None
        self.process.send_signal(sig)

    def tail(self, count: int = 40) -> str:
        return "\n".join(self.lines[-count:])

    async def kill(self) -> None:
        if self.process is not None and self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            await self.process.wait()


@pytest_asyncio.fixture
async def live_swb() -> AsyncIterator[Callable[..., LiveSwb]]:
    """Builds long-running `swb` processes; whatever is left is killed after the test."""
    started: list[LiveSwb] = []

    def build(args: Sequence[str], env: Mapping[str, str] | None = None) -> LiveSwb:
        process = LiveSwb(args, env)
        started.append(process)
        return process

    yield build
    for process in started:
        await process.kill()


@pytest.fixture
def run_swb() -> RunSwb:
    """`run_swb(args, env=..., timeout=...)`: `swb ARGS` run to completion, output captured."""
    return _run_swb

"""Helpers for the operator tests: paths of deploy/, free ports, external tools that may be
missing (skipped with the reason), waiting with a timeout, and processes that are always
stopped at the end of a test."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import TypeVar

import pytest
from prometheus_client import CollectorRegistry

from broker.bootstrap import App, open_app
from broker.core.intake import declare
from broker.core.messages import AgencyStatus, Submission
from broker.runtime.transport import Outgoing
from broker.settings import Settings
from connectors.simulated import SimulationProfile

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
PROMETHEUS_DIR = DEPLOY / "prometheus"
DASHBOARD = DEPLOY / "grafana" / "swb-dashboard.json"
SAMPLES = REPO / "broker" / "samples"

T = TypeVar("T")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def tool(name: str, package: str) -> str:
    """The path of an external tool, or skip the test saying how to get it."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (Debian package {package!r}; .ci/run installs it)")
    return path


def swb_command() -> list[str]:
    """The `swb` console script of this interpreter's environment, as a user would run it."""
    beside = Path(sys.executable).with_name("swb")
    if beside.exists():
        return [str(beside)]
    found = shutil.which("swb")
    if found:
        return [found]
    return [sys.executable, "-c", "from broker.cli import main; main()"]


async def wait_for(
    check: Callable[[], Awaitable[T | None]], *, timeout_s: float, what: str, poll_s: float = 0.2
) -> T:
    """Poll `check` until it returns something other than None (or False)."""
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                result = await check()
                if result is not None and result is not False:
                    return result
                await asyncio.sleep(poll_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None


class Process:
    """A child process whose output goes to files (never a pipe that could fill up)."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log_dir: Path, name: str):
        self.args = list(args)
        self.env = dict(env)
        self.name = name
        self.stdout_path = log_dir / f"{name}.out"
        self.stderr_path = log_dir / f"{name}.err"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.process = await asyncio.create_subprocess_exec(
                *self.args, env=self.env, stdout=out, stderr=err, stdin=asyncio.subprocess.DEVNULL
            )

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    def output(self) -> str:
        text = ""
        for path in (self.stdout_path, self.stderr_path):
            if path.exists():
                text += path.read_text(errors="replace")
        return text

    async def stop(self, timeout_s: float = 20.0) -> int:
        """SIGTERM, then SIGKILL if it will not stop; returns the exit code."""
        assert self.process is not None
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGTERM)
            try:
                async with asyncio.timeout(timeout_s):
                    await self.process.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.process.kill()
                await self.process.wait()
        return self.process.returncode if self.process.returncode is not None else -1


@contextlib.asynccontextmanager
async def running(
    args: Sequence[str], env: Mapping[str, str], log_dir: Path, name: str
) -> AsyncIterator[Process]:
    process = Process(args, env, log_dir, name)
    await process.start()
    try:
        yield process
    finally:
        await process.stop()


def dashboard_exprs() -> list[str]:
    """Every PromQL expression of the Grafana dashboard, rows included."""
    dashboard = json.loads(DASHBOARD.read_text())
    exprs: list[str] = []

    def walk(panels: list[dict[str, object]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):  # type: ignore[attr-defined]
                exprs.append(target["expr"])
            walk(panel.get("panels", []))  # type: ignore[arg-type]

    walk(dashboard["panels"])
    return exprs


def child_env(**overrides: str) -> dict[str, str]:
    """This environment without the SWB_* settings of the caller, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SWB_")}
    env.update(overrides)
    return env


# --- an in-memory single window, for metrics and log tests ----------------------------------

#: Simulated agencies that clear everything at once: every sample reaches a final decision.
CLEAR_ALL = SimulationProfile(seed=1, proportions=((AgencyStatus.CLEARED, 1.0),), disclaim_rate=0.0)
TRADER = "NL000000000042"


@contextlib.asynccontextmanager
async def memory_pipeline(registry: CollectorRegistry | None = None) -> AsyncIterator[App]:
    """Router, aggregator and twelve simulated agencies on the in-memory transport."""
    async with open_app(Settings(), memory=True, registry=registry) as app:
        stopping = asyncio.Event()
        services = [app.router().run, app.aggregator().run]
        services += [agency.run for agency in app.simulated_agencies(CLEAR_ALL)]
        async with asyncio.TaskGroup() as tasks:
            for service in services:
                tasks.create_task(service(stopping))
            try:
                yield app
            finally:
                stopping.set()


def sample_submissions(app: App, names: Sequence[str], channel: str = "api") -> list[Submission]:
    return [
        declare((SAMPLES / name).read_bytes(), trader_id=TRADER, channel=channel, now=app.clock())
        for name in names
    ]


async def send(app: App, submissions: Sequence[Submission]) -> None:
    await app.transport.producer().send_batch(
        [
            Outgoing(app.topics.submissions, app.codec.encode(s), key=s.submission_id.encode())
            for s in submissions
        ]
    )

"""`swb run` as a subprocess on the session's broker, for the tests that talk to it as a
clerk's terminal or an outside client would (the CLI, schemathesis)."""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
from gateway_stack import KEY_A, KEY_B, TRADER_A, TRADER_B

_LISTENING = re.compile(r"swb: gateway listening on (http://\S+)")


def swb_executable() -> str:
    beside = Path(sys.executable).with_name("swb")
    found = str(beside) if beside.exists() else shutil.which("swb")
    assert found, "the swb command is not installed: pip install -e '.[dev]'"
    return found


@dataclass
class SwbServer:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def swb(self, *args: str, key: str = KEY_A) -> subprocess.CompletedProcess[str]:
        """`swb ARGS --url URL` as the trader holding `key` would type it."""
        env = {**os.environ, "SWB_API_KEY": key}
        return subprocess.run(
            [swb_executable(), *args, "--url", self.url],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )


@contextmanager
def swb_run(bootstrap: str, workdir: Path) -> Iterator[SwbServer]:
    """Start `swb run` (router, aggregator, gateway on a free port) and stop it with SIGTERM,
    checking that it shuts down cleanly."""
    log = workdir / "swb-run.log"
    env = {
        **os.environ,
        "SWB_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "SWB_TOPIC_PREFIX": f"t{secrets.token_hex(4)}",
        "SWB_PARTITIONS": "2",
        "SWB_HTTP_PORT": "0",
        "SWB_API_KEYS": json.dumps({KEY_A: TRADER_A, KEY_B: TRADER_B}),
        "SWB_KAFKA__SESSION_TIMEOUT_MS": "6000",
        "SWB_KAFKA__HEARTBEAT_INTERVAL_MS": "500",
        "SWB_LOG_FORMAT": "json",
    }
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [swb_executable(), "run"], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    try:
        url = _wait_for_url(process, log)
        _wait_ready(url)
        yield SwbServer(url, process, log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert process.returncode == 0, f"swb run exited {process.returncode}:\n{log.read_text()}"


def _wait_for_url(process: subprocess.Popen[bytes], log: Path) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = _LISTENING.search(log.read_text(errors="replace"))
        if found:
            return found.group(1)
        assert process.poll() is None, f"swb run exited:\n{log.read_text()}"
        time.sleep(0.05)
    raise AssertionError(f"swb run did not listen within 60 s:\n{log.read_text()}")


def _wait_ready(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if httpx.get(f"{url}/readyz", timeout=5).status_code == 200:
            return
        time.sleep(0.1)
    raise AssertionError("swb run's gateway did not become ready within 60 s")

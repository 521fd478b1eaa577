"""`swb bench` as a user runs it: a subprocess on the embedded broker, whose `--json` output
carries every field BENCHMARKS.md and scripts read. Timings are never asserted (DESIGN §9):
only that every submission was decided and the numbers are there and sane in kind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.kafka]

N = 20


def _swb(*args: str, timeout_s: float = 200) -> subprocess.CompletedProcess[str]:
    beside = Path(sys.executable).with_name("swb")
    swb = str(beside) if beside.exists() else shutil.which("swb")
    assert swb, "the swb command is not installed: pip install -e '.[dev]'"
    # A clean SWB_* environment: the embedded broker, default settings.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SWB_", "CALF_"))}
    return subprocess.run(
        [swb, "bench", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
        check=False,
    )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value >= 0


def _assert_phase(phase: dict[str, Any]) -> None:
    assert phase["decisions"] == N and phase["missing"] == 0
    assert _number(phase["decisions_per_s"]) and phase["decisions_per_s"] > 0
    latency = phase["latency_ms"]
    assert set(latency) >= {"p50", "p95", "p99"}
    assert all(_number(latency[q]) for q in ("p50", "p95", "p99"))
    assert latency["p50"] <= latency["p95"] <= latency["p99"]
    for key in ("cpu_s_per_1000", "broker_cpu_s_per_1000", "peak_rss_mib"):
        assert _number(phase[key]), key


@pytest.mark.timeout(300)
@pytest.mark.parametrize("offered", [[], ["--rate", "200"]], ids=["flat-out", "at-a-rate"])
def test_bench_json_has_the_full_pipeline_the_baseline_and_their_ratio(
    offered: list[str],
) -> None:
    done = _swb("-n", str(N), "--warmup", "5", "--json", *offered)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # one JSON object, nothing else on stdout
    _assert_phase(result)
    _assert_phase(result["baseline"])
    assert result["ratio"] == pytest.approx(
        result["decisions_per_s"] / result["baseline"]["decisions_per_s"], rel=0.01
    )
    assert result["config"]["n"] == N and result["config"]["agencies_per_declaration"] == 3
    assert result["machine"]["nproc"] >= 1
    assert "━" not in done.stderr  # no progress bar with --json


@pytest.mark.timeout(300)
def test_bench_memory_mode_reports_bytes_per_submission_in_flight() -> None:
    done = _swb("--memory-inflight", "300", "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    memory = json.loads(done.stdout)["memory"]
    assert memory["inflight"] == 300
    assert _number(memory["bytes_per_inflight"]) and memory["bytes_per_inflight"] > 0
    assert _number(memory["cpu_us_per_plan"])

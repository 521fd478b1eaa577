"""One `swb bench` run: the baseline and the full pipeline, each on a fresh broker (embedded)
or fresh topics (a configured Kafka), warmed up, then measured on the same workload."""

from __future__ import annotations

import contextlib
import gc
import os
import platform
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from broker.bench._baseline import bare_pipeline
from broker.bench._driver import SendBatch, Tracker, offer, percentile
from broker.bench._full import ROLES, full_pipeline
from broker.bench._probe import CpuClock, peak_rss_bytes, reset_peak_rss
from broker.bench._workers import workers
from broker.bench._workload import Workload, bases, build_workload
from broker.core.codec import Codec
from broker.core.declaration import now_utc
from broker.core.rules import load_rules
from broker.errors import SwbError
from broker.runtime.embedded import EmbeddedBroker
from broker.settings import Settings

__all__ = ["BenchOptions", "PhaseResult", "broker_for", "run_phases"]

_WARMUP_TIMEOUT_S = 90.0
_MIB = 1024 * 1024


class BenchError(SwbError):
    """The bench could not complete a phase (a message says which and why)."""


@dataclass(frozen=True, slots=True)
class BenchOptions:
    count: int = 5000
    rate: float | None = None  # offered submissions per second; None: flat out
    warmup: int = 100
    baseline: bool = True
    full: bool = True
    workers: int = 1  # processes running the whole pipeline, this one included
    split: tuple[str, ...] = ()  # roles moved out of this process into one more worker
    timeout_s: float | None = None  # per measured phase; None: from count and rate
    # The full pipeline on the in-memory transport (no broker, no baseline): the broker's
    # own CPU per decision, steadier than any Kafka number on a shared machine.
    in_memory: bool = False

    def phase_timeout_s(self) -> float:
        if self.timeout_s is not None:
            return self.timeout_s
        offered = self.count / self.rate if self.rate else 0.0
        return 60.0 + offered + self.count / 100


@dataclass
class PhaseResult:
    """What one phase measured. CPU per 1,000 decisions is split between the bench process
    (plus workers) and the broker, which is another process."""

    name: str
    decisions: int
    missing: int
    elapsed_s: float
    latencies_ms: list[float] = field(repr=False)
    cpu_s: dict[str, float | None]
    peak_rss_bytes: int | None
    broker_peak_rss_bytes: int | None
    worker_peak_rss_bytes: list[int | None] = field(default_factory=list)
    repeated_finals: int = 0
    decision_records: int = 0  # read by the trader, interim decisions included

    @property
    def decisions_per_s(self) -> float:
        return self.decisions / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def _per_1000(self, seconds: float | None) -> float | None:
        if seconds is None or not self.decisions:
            return None
        return seconds / self.decisions * 1000

    def as_dict(self) -> dict[str, Any]:
        ordered = self.latencies_ms
        python = [v for k, v in self.cpu_s.items() if k != "broker"]
        python_s = None if any(v is None for v in python) else sum(v or 0.0 for v in python)
        broker_s = self.cpu_s.get("broker")
        total_s = None if python_s is None or broker_s is None else python_s + broker_s

        def mib(value: int | None) -> float | None:
            return None if value is None else round(value / _MIB, 1)

        def r(value: float | None, digits: int = 2) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "decisions": self.decisions,
            "missing": self.missing,
            "repeated_finals": self.repeated_finals,
            "decision_records_per_submission": round(self.decision_records / self.decisions, 2)
            if self.decisions
            else None,
            "elapsed_s": r(self.elapsed_s, 3),
            "decisions_per_s": r(self.decisions_per_s, 1),
            "latency_ms": {
                name: r(percentile(ordered, q))
                for name, q in (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))
            },
            "cpu_s": {name: r(value, 3) for name, value in self.cpu_s.items()},
            "cpu_s_per_1000": r(self._per_1000(python_s), 3),
            "broker_cpu_s_per_1000": r(self._per_1000(broker_s), 3),
            "total_cpu_s_per_1000": r(self._per_1000(total_s), 3),
            "peak_rss_mib": mib(self.peak_rss_bytes),
            "broker_peak_rss_mib": mib(self.broker_peak_rss_bytes),
            "worker_peak_rss_mib": [mib(v) for v in self.worker_peak_rss_bytes],
        }


@contextlib.asynccontextmanager
async def broker_for(settings: Settings) -> AsyncIterator[tuple[Settings, int | None]]:
    """The settings to run a phase with, and the broker's pid when it is embedded: a fresh
    embedded broker per phase (so neither phase pays for the other's stored batches), or the
    configured Kafka with the fresh topic prefix the settings already carry."""
    if settings.kafka_bootstrap_servers:
        yield settings, None
        return
    async with EmbeddedBroker() as broker:
        yield (
            settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers}),
            broker.pid,
        )


@contextlib.asynccontextmanager
async def _broker_unless(
    in_memory: bool, settings: Settings
) -> AsyncIterator[tuple[Settings, int | None]]:
    if in_memory:
        yield settings, None
        return
    async with broker_for(settings) as found:
        yield found


def _prefix(kind: str) -> str:
    return f"bench-{uuid.uuid4().hex[:8]}-{kind}"


async def run_phases(
    settings: Settings,
    options: BenchOptions,
    progress: Callable[[str, int], Callable[[int], None]],
) -> dict[str, PhaseResult]:
    """Build the workload once, then run the baseline and the full pipeline on it.

    `progress(phase, total)` returns the callback a phase calls as decisions arrive."""
    codec = Codec()
    rules = load_rules(settings.rules_file)
    now = now_utc()
    base_list = bases(rules, codec, now)
    results: dict[str, PhaseResult] = {}
    phases: list[str] = (["baseline"] if options.baseline and not options.in_memory else []) + (
        ["full"] if options.full else []
    )
    for phase in phases:
        run = uuid.uuid4().hex[:6]
        workload = build_workload(options.count, base_list, codec, now, tag=f"B{run}")
        warm = build_workload(options.warmup, base_list, codec, now, tag=f"W{run}")
        phase_settings = settings.model_copy(update={"topic_prefix": _prefix(phase)})
        async with _broker_unless(options.in_memory, phase_settings) as (
            phase_settings,
            broker_pid,
        ):
            tracker = Tracker()
            pipeline: AbstractAsyncContextManager[SendBatch]
            extra: list[Sequence[str]] = []
            if phase == "baseline":
                # The bare agencies can run apart like the pipeline's (they need no
                # workload); the bare router and aggregator stay here (they do).
                apart = [role for role in options.split if role == "agencies"]
                own = [role for role in ROLES if role not in apart]
                lookup = {**warm.base_of, **workload.base_of}
                pipeline = bare_pipeline(phase_settings, tracker, lookup, base_list, own)
                extra = [apart] if apart else []
            else:
                own = [role for role in ROLES if role not in options.split]
                pipeline = full_pipeline(phase_settings, tracker, own, memory=options.in_memory)
                extra = [ROLES] * (options.workers - 1)
                extra += [options.split] if options.split else []
            async with (
                pipeline as send,
                workers(extra, phase_settings, bare=phase == "baseline") as started,
            ):
                results[phase] = await _measure(
                    phase,
                    send,
                    tracker,
                    progress(phase, options.count),
                    warm,
                    workload,
                    options,
                    broker_pid,
                    [w.pid for w in started],
                )
    return results


async def _measure(
    phase: str,
    send: SendBatch,
    tracker: Tracker,
    progress: Callable[[int], None],
    warm: Workload,
    workload: Workload,
    options: BenchOptions,
    broker_pid: int | None,
    worker_pids: Sequence[int],
) -> PhaseResult:
    tracker.expect(warm.keys)
    await offer(warm.keys, warm.values, send, tracker, None)
    if not await tracker.wait(_WARMUP_TIMEOUT_S):
        raise BenchError(
            f"{phase}: {tracker.missing} of {len(warm)} warm-up submissions got no final "
            f"decision within {_WARMUP_TIMEOUT_S:.0f} s"
        )
    gc.collect()
    tracker.on_decided = progress
    pids: dict[str, int | None] = {"bench": None}  # None: this process
    if broker_pid is not None:  # embedded: its CPU is ours to count
        pids["broker"] = broker_pid
    pids.update({f"worker{n}": pid for n, pid in enumerate(worker_pids, start=1)})
    for pid in pids.values():
        reset_peak_rss(pid)
    cpu = CpuClock(pids)
    tracker.expect(workload.keys)
    repeated_before, records_before = tracker.repeated, tracker.records
    cpu.start()
    began = time.perf_counter()
    await offer(workload.keys, workload.values, send, tracker, options.rate)
    complete = await tracker.wait(options.phase_timeout_s())
    spent = cpu.stop()
    decided = [tracker.decided_at[k] for k in workload.keys if k in tracker.decided_at]
    if not decided:
        raise BenchError(f"{phase}: no final decision within {options.phase_timeout_s():.0f} s")
    return PhaseResult(
        name=phase,
        decisions=len(decided),
        missing=0 if complete else tracker.missing,
        elapsed_s=max(decided) - began,
        latencies_ms=tracker.latencies_ms(workload.keys),
        cpu_s=spent,
        peak_rss_bytes=peak_rss_bytes(None),
        broker_peak_rss_bytes=peak_rss_bytes(broker_pid) if broker_pid else None,
        worker_peak_rss_bytes=[peak_rss_bytes(pid) for pid in worker_pids],
        repeated_finals=tracker.repeated - repeated_before,
        decision_records=tracker.records - records_before,
    )


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": os.cpu_count(),
        "cpu_model": model,
        "python": platform.python_version(),
        "load_avg": [round(v, 2) for v in os.getloadavg()],
    }

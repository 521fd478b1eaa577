"""`swb bench`: the broker's throughput, latency, CPU and memory, measured against a bare-Kafka
floor in the same run (issue 7; results and how to read them in BENCHMARKS.md).

The full pipeline (router, aggregator, simulated agencies on the connector SDK that answer at
once) and a baseline (bare aiokafka moving the same records through the same hops, pre-encoded)
run one after the other on the same workload of realistic declarations, each on a fresh
embedded broker (or fresh topics on SWB_KAFKA_BOOTSTRAP_SERVERS). The ratio of their
throughputs is the broker's efficiency: what its validation, routing, Avro and aggregation cost
beside the Kafka round trips no implementation can avoid.
"""

from __future__ import annotations

import json
from typing import Any

from rich.console import Console

from broker.bench._memory import measure_memory
from broker.bench._report import progress_bar, render
from broker.bench._run import BenchOptions, machine, run_phases
from broker.bench._workload import FANOUT
from broker.settings import Settings

__all__ = ["BenchOptions", "run_bench"]


async def run_bench(
    settings: Settings,
    options: BenchOptions,
    *,
    as_json: bool = False,
    memory_inflight: int | None = None,
) -> int:
    """Run the bench and print its result; 0 when every submission was decided."""
    before = machine()
    with progress_bar(enabled=not as_json) as progress:
        if memory_inflight is not None:
            result: dict[str, Any] = {
                "mode": "memory",
                "memory": await measure_memory(settings, memory_inflight, progress),
            }
            missing = 0
        else:
            phases = await run_phases(settings, options, progress)
            result = _throughput_result(
                settings, options, {k: v.as_dict() for k, v in phases.items()}
            )
            missing = sum(p.missing for p in phases.values())
    result["machine"] = {**before, "load_avg_after": machine()["load_avg"]}
    if as_json:
        print(json.dumps(result))
    else:
        render(result, Console())
    return 0 if not missing else 1


def _throughput_result(
    settings: Settings, options: BenchOptions, phases: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The full pipeline's numbers at the top level, the baseline's under `baseline`."""
    full = phases.get("full", {})
    baseline = phases.get("baseline")
    ratio = None
    if full and baseline and baseline["decisions_per_s"]:
        ratio = round(full["decisions_per_s"] / baseline["decisions_per_s"], 3)
    return {
        "mode": "throughput",
        **full,
        "baseline": baseline,
        "ratio": ratio,
        "config": {
            "n": options.count,
            "rate": options.rate,
            "warmup": options.warmup,
            "partitions": settings.partitions,
            "workers": options.workers,
            "split": list(options.split),
            "agencies_per_declaration": float(FANOUT),
            "fetch_max_wait_ms": settings.kafka.fetch_max_wait_ms,
            "max_batch_size": settings.kafka.max_batch_size,
            "max_poll_records": settings.kafka.max_poll_records,
            "broker": "in-memory"
            if options.in_memory
            else settings.kafka_bootstrap_servers or "embedded",
        },
    }

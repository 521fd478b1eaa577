"""`swb bench --memory-inflight N`: what one submission in flight costs the aggregator.

N routing plans (three agencies each) are written to `sw.routing` and no agency ever answers,
so the aggregator holds N open submissions. Reported per submission: the aggregator's own
data (a walk of the containers it keeps: states, partition map, deadline heap; objects
shared between submissions count once) and the process's RSS growth (which adds allocator
slack and whatever else grew meanwhile).
"""

from __future__ import annotations

import asyncio
import gc
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from types import FunctionType, ModuleType
from typing import Any

from broker.bench._probe import rss_bytes
from broker.bench._run import BenchError, broker_for
from broker.bench._workload import bases, plan_records
from broker.bootstrap import open_app
from broker.core.codec import Codec
from broker.core.declaration import now_utc
from broker.core.rules import load_rules
from broker.runtime.aggregator import AggregatorService
from broker.runtime.transport import Outgoing
from broker.settings import Settings

__all__ = ["deep_size", "measure_memory"]

_WARM = 100
_CHUNK = 2000
_POLL_S = 0.05


def deep_size(roots: Iterable[object]) -> int:
    """Bytes of every object reachable from `roots`, each counted once; classes, modules and
    functions (shared code, not data) are not followed."""
    seen: set[int] = set()
    stack = list(roots)
    total = 0
    while stack:
        obj = stack.pop()
        if id(obj) in seen or isinstance(obj, type | ModuleType | FunctionType):
            continue
        seen.add(id(obj))
        total += sys.getsizeof(obj)
        stack.extend(gc.get_referents(obj))
    return total


def _held(aggregator: AggregatorService) -> list[object]:
    """The containers the aggregator keeps per submission (whatever they are named)."""
    return [v for v in vars(aggregator).values() if isinstance(v, dict | list | set)]


async def measure_memory(
    settings: Settings, inflight: int, progress: Callable[[str, int], Callable[[int], None]]
) -> dict[str, Any]:
    codec = Codec()
    base_list = bases(load_rules(settings.rules_file), codec, now_utc())
    run = uuid.uuid4().hex[:6]
    warm = list(plan_records(_WARM, base_list, codec, tag=f"MW{run}"))
    plans = list(plan_records(inflight, base_list, codec, tag=f"M{run}"))
    prefix = f"bench-{run}-memory"
    advance = progress("memory", inflight)
    phase_settings = settings.model_copy(update={"topic_prefix": prefix})
    async with broker_for(phase_settings) as (s, _), open_app(s) as app:
        aggregator = AggregatorService(
            app.transport,
            app.codec,
            app.topics,
            app.metrics,
            app.clock,
            group_id=f"{prefix}-aggregator",
            deadline_check_interval_s=s.deadline_check_interval_s,
        )
        stopping = asyncio.Event()
        producer = app.transport.producer()

        async def fill(records: list[tuple[bytes, bytes]], until: int) -> None:
            for start in range(0, len(records), _CHUNK):
                chunk = records[start : start + _CHUNK]
                await producer.send_batch(
                    [Outgoing(app.topics.routing, value, key=key) for key, value in chunk]
                )
            deadline = time.monotonic() + 60 + len(records) / 500
            seen = aggregator.held
            while aggregator.held < until:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"memory: the aggregator holds {aggregator.held} of "
                        f"{until} submissions after {time.monotonic() - deadline:.0f} s"
                    )
                await asyncio.sleep(_POLL_S)
                now = aggregator.held
                if until > _WARM:
                    advance(now - seen)
                seen = now

        async with asyncio.TaskGroup() as tasks:
            tasks.create_task(aggregator.run(stopping))
            try:
                await aggregator.ready.wait()
                await fill(warm, _WARM)
                gc.collect()
                rss_before, held_before = rss_bytes(), deep_size(_held(aggregator))
                cpu_before = time.process_time()
                await fill(plans, _WARM + inflight)
                cpu_s = time.process_time() - cpu_before
                gc.collect()
                rss_after, held_after = rss_bytes(), deep_size(_held(aggregator))
            finally:
                stopping.set()
    rss_growth = None if rss_before is None or rss_after is None else rss_after - rss_before
    return {
        "inflight": inflight,
        "bytes_per_inflight": round((held_after - held_before) / inflight),
        "rss_bytes_per_inflight": None if rss_growth is None else round(rss_growth / inflight),
        "aggregator_mib": round(held_after / 1024 / 1024, 1),
        "rss_growth_mib": None if rss_growth is None else round(rss_growth / 1024 / 1024, 1),
        # Writing the plans and the aggregator taking them in (decision, changelog): the
        # cost per plan should not grow with the number already held.
        "cpu_us_per_plan": round(cpu_s / inflight * 1e6, 1),
    }

"""Commands for operators: the live view and the benchmark."""

from __future__ import annotations

import sys

import click

from broker.commands._shared import _run_async, _settings
from broker.runtime.logging import configure_logging


@click.command("bench")
@click.option(
    "-n",
    "count",
    type=int,
    default=5000,
    show_default=True,
    help="Declarations to submit in each phase.",
)
@click.option("--rate", type=float, help="Offered declarations per second (default: flat out).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object, no progress bar.")
@click.option("--partitions", type=int, help="Partitions per topic (SWB_PARTITIONS).")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes running the full pipeline in its consumer groups (scale-out).",
)
@click.option(
    "--split",
    default="",
    help="Roles (router,aggregator,agencies) to run in a process of their own instead of this one.",
)
@click.option(
    "--warmup",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Declarations decided before measuring, per phase.",
)
@click.option("--no-baseline", is_flag=True, help="Measure the full pipeline only.")
@click.option(
    "--in-memory",
    is_flag=True,
    help="The full pipeline on the in-memory transport: "
    "the broker's own CPU per decision, without Kafka (no baseline).",
)
@click.option(
    "--memory-inflight",
    type=click.IntRange(min=1),
    help="Instead: bytes per in-flight submission in the aggregator, with this "
    "many open against agencies that never answer.",
)
def bench_command(
    count: int,
    rate: float | None,
    as_json: bool,
    partitions: int | None,
    workers: int,
    split: str,
    warmup: int,
    no_baseline: bool,
    in_memory: bool,
    memory_inflight: int | None,
) -> None:
    """Measure the full pipeline against a bare-Kafka baseline in the same run: decisions/s,
    submission-to-final-decision latency, CPU per 1,000 decisions, peak RSS (BENCHMARKS.md)."""
    from broker.bench import BenchOptions, run_bench

    settings = _settings(partitions=partitions, log_level="WARNING")
    configure_logging(settings.log_format, settings.log_level)
    roles = tuple(role for role in split.split(",") if role)
    if not set(roles) <= {"router", "aggregator", "agencies"}:
        raise click.UsageError(f"--split takes router, aggregator, agencies; not {split!r}")
    if in_memory and (workers > 1 or roles):
        raise click.UsageError("--in-memory runs in one process: no --workers or --split")
    options = BenchOptions(
        count=count,
        rate=rate,
        warmup=warmup,
        baseline=not no_baseline,
        workers=workers,
        split=roles,
        in_memory=in_memory,
    )
    _run_async(
        lambda stopping: run_bench(
            settings, options, as_json=as_json, memory_inflight=memory_inflight
        )
    )


@click.command("top")
@click.option(
    "--url",
    help="Metrics endpoint to read (default: SWB_METRICS_PORT on this host, "
    "else the gateway's /metrics on SWB_HTTP_PORT).",
)
@click.option(
    "--interval",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds between refreshes; rates cover one interval.",
)
@click.option(
    "--once",
    is_flag=True,
    help="Print one frame (two scrapes an interval apart) and exit: for scripts and tests.",
)
def top_command(url: str | None, interval: float, once: bool) -> None:
    """A live view for operators: throughput, decision latency, in-flight submissions,
    overdue agencies, DLQ and lag, read from a metrics endpoint."""
    from broker.top import default_url, run_top

    settings = _settings()
    sys.exit(run_top(url or default_url(settings), interval_s=interval, once=once))

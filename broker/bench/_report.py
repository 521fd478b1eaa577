"""How a bench run is shown: a progress bar on stderr while it runs, then a table (or one JSON
object for machines, with no progress bar)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

__all__ = ["Reporter", "progress_bar", "render"]

Reporter = Callable[[str, int], Callable[[int], None]]


def _silent(phase: str, total: int) -> Callable[[int], None]:
    return lambda advance: None


@contextlib.contextmanager
def progress_bar(enabled: bool) -> Iterator[Reporter]:
    """A reporter that draws one bar per phase on stderr, or does nothing."""
    if not enabled:
        yield _silent
        return
    bar = Progress(
        TextColumn("[bold]{task.description:>9}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("decisions"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
    )

    def reporter(phase: str, total: int) -> Callable[[int], None]:
        task = bar.add_task(phase, total=total)
        return lambda advance: bar.advance(task, advance)

    with bar:
        yield reporter


def _fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.2f}{unit}" if value < 100 else f"{value:,.0f}{unit}"
    return f"{value}{unit}"


def render(result: dict[str, Any], console: Console) -> None:
    """The human view of `result` (the same dict `--json` prints)."""
    if result.get("mode") == "memory":
        memory = result["memory"]
        console.print(
            f"[bold]{memory['inflight']:,}[/] submissions in flight: "
            f"aggregator [bold]{memory['bytes_per_inflight']:,} B[/] per submission "
            f"({memory['aggregator_mib']} MiB held), process RSS grew "
            f"{_fmt(memory['rss_bytes_per_inflight'], ' B')} per submission"
        )
        return
    phases: dict[str, dict[str, Any]] = {}
    if result.get("decisions_per_s") is not None:
        phases["full"] = result
    if result.get("baseline"):
        phases["baseline"] = result["baseline"]
    console.print(_title(result))
    table = Table()
    table.add_column("")
    for phase in phases:
        table.add_column(phase, justify="right")
    rows: list[tuple[str, str, Callable[[dict[str, Any]], Any]]] = [
        ("decisions/s", "", lambda p: p["decisions_per_s"]),
        ("latency p50", " ms", lambda p: p["latency_ms"]["p50"]),
        ("latency p95", " ms", lambda p: p["latency_ms"]["p95"]),
        ("latency p99", " ms", lambda p: p["latency_ms"]["p99"]),
        ("CPU s / 1,000 (python)", "", lambda p: p["cpu_s_per_1000"]),
        ("CPU s / 1,000 (broker)", "", lambda p: p["broker_cpu_s_per_1000"]),
        ("peak RSS (python)", " MiB", lambda p: p["peak_rss_mib"]),
        ("peak RSS (broker)", " MiB", lambda p: p["broker_peak_rss_mib"]),
        ("decided / missing", "", lambda p: f"{p['decisions']} / {p['missing']}"),
    ]
    for label, unit, get in rows:
        table.add_row(label, *(_fmt(get(p), unit) for p in phases.values()))
    console.print(table)
    if result.get("ratio") is not None:
        console.print(f"full / baseline throughput: [bold]{result['ratio']:.2f}[/]")


def _title(result: dict[str, Any]) -> str:
    config = result["config"]
    rate = f"{config['rate']:g}/s offered" if config["rate"] else "flat out"
    return (
        f"swb bench: {config['n']:,} declarations, {rate}, {config['partitions']} partitions, "
        f"{config['agencies_per_declaration']:.1f} agencies each, "
        f"{config['workers'] + bool(config['split'])} pipeline process(es)"
        + (f" ({', '.join(config['split'])} apart)" if config["split"] else "")
        + f"; load {result['machine']['load_avg']}"
    )

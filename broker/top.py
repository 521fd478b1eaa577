"""`swb top`: a live terminal view for an operator, read from a Prometheus metrics endpoint.

It reads the same `swb_*` series as the dashboard, so what the operator sees on a console
matches Grafana: throughput over the last refresh interval, decision latency quantiles from the
histogram buckets (as PromQL's histogram_quantile computes them), in-flight submissions,
overdue agencies, the DLQ and consumer lag. Parsing and arithmetic are pure functions on text;
only `run_top` does I/O.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from broker.settings import Settings

__all__ = ["Frame", "Scrape", "default_url", "frame_of", "parse", "quantile", "render", "run_top"]

Labels = Mapping[str, str]


@dataclass(frozen=True)
class Scrape:
    """One reading of the endpoint: every sample by name, and when it was taken."""

    at: float
    samples: Mapping[str, list[tuple[dict[str, str], float]]]

    def series(self, name: str, **match: str) -> list[tuple[dict[str, str], float]]:
        return [
            (labels, value)
            for labels, value in self.samples.get(name, [])
            if all(labels.get(k) == v for k, v in match.items())
        ]

    def total(self, name: str, **match: str) -> float:
        return sum(value for _, value in self.series(name, **match))

    def by(self, name: str, label: str, **match: str) -> dict[str, float]:
        sums: dict[str, float] = defaultdict(float)
        for labels, value in self.series(name, **match):
            sums[labels.get(label, "")] += value
        return dict(sums)

    def buckets(self, histogram: str, **match: str) -> dict[float, float]:
        """Cumulative counts per upper bound, summed over the matching series."""
        counts: dict[float, float] = defaultdict(float)
        for labels, value in self.series(f"{histogram}_bucket", **match):
            counts[float(labels["le"])] += value
        return dict(counts)


def parse(text: str, at: float) -> Scrape:
    """Parse the Prometheus text exposition format."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((dict(sample.labels), float(sample.value)))
    return Scrape(at, dict(samples))


def quantile(q: float, buckets: Mapping[float, float]) -> float | None:
    """PromQL's histogram_quantile over cumulative buckets: linear inside the bucket that
    holds the rank; the highest finite bound if the rank falls in +Inf; None if empty."""
    bounds = sorted(buckets)
    if not bounds or not math.isinf(bounds[-1]):
        return None
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = buckets[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower
            if count == below:
                return bound
            return lower + (bound - lower) * (rank - below) / (count - below)
        lower, below = bound, count
    return lower


def _increase(now: float, before: float) -> float:
    """A counter's increase; a smaller value means the process restarted from zero."""
    return now - before if now >= before else now


@dataclass
class AgencyRow:
    agency: str
    requests: float
    answers: float
    answer_p95_s: float | None
    overdue_now: float
    overdue_total: float


@dataclass
class Frame:
    """What one refresh shows. Rates are None until there are two readings."""

    interval_s: float | None
    submissions_total: float
    submissions_per_s: float | None
    final_decisions_total: float
    final_decisions_per_s: float | None
    in_flight: float
    latency_p50_s: float | None
    latency_p95_s: float | None
    latency_window: str
    dlq_total: float
    dlq_per_s: float | None
    lag_total: float
    kafka_reachable: float | None
    roles: list[str]
    version: str | None
    outcomes: dict[str, float] = field(default_factory=dict)
    dlq_reasons: dict[str, float] = field(default_factory=dict)
    agencies: list[AgencyRow] = field(default_factory=list)
    lag_by_group: dict[str, float] = field(default_factory=dict)

    @property
    def overdue_agencies(self) -> list[str]:
        return [row.agency for row in self.agencies if row.overdue_now > 0]


def frame_of(previous: Scrape | None, current: Scrape) -> Frame:
    """The numbers to show, from the current reading and the one before it."""
    interval = current.at - previous.at if previous is not None else None

    def per_second(name: str, **match: str) -> float | None:
        if previous is None or not interval:
            return None
        return _increase(current.total(name, **match), previous.total(name, **match)) / interval

    latency_buckets = current.buckets("swb_decision_latency_seconds")
    window = "since start"
    if previous is not None:
        before = previous.buckets("swb_decision_latency_seconds")
        recent = {le: _increase(n, before.get(le, 0.0)) for le, n in latency_buckets.items()}
        if recent.get(math.inf, 0.0) > 0:
            latency_buckets, window = recent, f"last {interval:.0f} s"

    agencies: list[AgencyRow] = []
    requests = current.by("swb_agency_requests_total", "agency", kind="REVIEW")
    answers = current.by("swb_agency_answers_total", "agency")
    overdue_now = current.by("swb_agency_overdue_now", "agency")
    overdue_total = current.by("swb_agency_overdue_total", "agency")
    for agency in sorted(set(requests) | set(answers) | set(overdue_now)):
        row = AgencyRow(
            agency=agency,
            requests=requests.get(agency, 0.0),
            answers=answers.get(agency, 0.0),
            answer_p95_s=quantile(
                0.95, current.buckets("swb_agency_answer_latency_seconds", agency=agency)
            ),
            overdue_now=overdue_now.get(agency, 0.0),
            overdue_total=overdue_total.get(agency, 0.0),
        )
        if row.requests or row.answers or row.overdue_now or row.overdue_total:
            agencies.append(row)

    reachable = current.series("swb_kafka_reachable")
    versions = [labels.get("version", "") for labels, _ in current.series("swb_build_info")]
    return Frame(
        interval_s=interval,
        submissions_total=current.total("swb_submissions_total"),
        submissions_per_s=per_second("swb_submissions_total"),
        final_decisions_total=current.total("swb_decisions_total", final="true"),
        final_decisions_per_s=per_second("swb_decisions_total", final="true"),
        in_flight=current.total("swb_in_flight_submissions"),
        latency_p50_s=quantile(0.5, latency_buckets),
        latency_p95_s=quantile(0.95, latency_buckets),
        latency_window=window,
        dlq_total=current.total("swb_dlq_records_total"),
        dlq_per_s=per_second("swb_dlq_records_total"),
        lag_total=current.total("swb_consumer_lag"),
        kafka_reachable=min(value for _, value in reachable) if reachable else None,
        roles=sorted(labels["service"] for labels, v in current.series("swb_service_up") if v > 0),
        version=versions[0] if versions else None,
        outcomes=_nonzero(current.by("swb_decisions_total", "outcome", final="true")),
        dlq_reasons=_nonzero(current.by("swb_dlq_records_total", "reason")),
        agencies=agencies,
        lag_by_group=_nonzero(current.by("swb_consumer_lag", "group")),
    )


def _nonzero(values: Mapping[str, float]) -> dict[str, float]:
    return {k: v for k, v in sorted(values.items(), key=lambda kv: -kv[1]) if v}


def _seconds(value: float | None) -> str:
    if value is None:
        return "—"
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:.1f} s"
    if value < 7200:
        return f"{value / 60:.1f} min"
    return f"{value / 3600:.1f} h"


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}/s"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def render(frame: Frame, url: str, error: str | None = None) -> RenderableType:
    """The frame as rich tables."""
    header = Text.assemble(
        ("swb top", "bold"),
        f"  {url}",
        f"  version {frame.version}" if frame.version else "",
        f"  roles {','.join(frame.roles)}" if frame.roles else "",
    )
    if frame.kafka_reachable is not None:
        up = frame.kafka_reachable >= 1
        header.append("  kafka ", style="")
        header.append("reachable" if up else "UNREACHABLE", style="green" if up else "bold red")
    parts: list[RenderableType] = [header]
    if error:
        parts.append(Text(f"last refresh failed: {error}", style="bold red"))

    flow = Table(title="Flow", show_header=True, header_style="bold", expand=False)
    for column in ("", "total", "rate"):
        flow.add_column(column, justify="right" if column else "left")
    flow.add_row("submissions", _count(frame.submissions_total), _rate(frame.submissions_per_s))
    flow.add_row(
        "final decisions", _count(frame.final_decisions_total), _rate(frame.final_decisions_per_s)
    )
    flow.add_row(
        "DLQ records",
        Text(_count(frame.dlq_total), style="red" if frame.dlq_total else ""),
        _rate(frame.dlq_per_s),
    )
    flow.add_row("in flight", _count(frame.in_flight), "")
    flow.add_row("consumer lag", _count(frame.lag_total), "")
    flow.add_row(
        f"decision latency p50 ({frame.latency_window})", _seconds(frame.latency_p50_s), ""
    )
    flow.add_row(
        f"decision latency p95 ({frame.latency_window})", _seconds(frame.latency_p95_s), ""
    )
    parts.append(flow)

    agencies = Table(title="Agencies", header_style="bold")
    for column in ("agency", "requests", "answers", "answer p95", "overdue now", "overdue total"):
        agencies.add_column(column, justify="left" if column == "agency" else "right")
    for row in frame.agencies:
        overdue_style = "bold red" if row.overdue_now else ""
        agencies.add_row(
            Text(row.agency, style=overdue_style),
            _count(row.requests),
            _count(row.answers),
            _seconds(row.answer_p95_s),
            Text(_count(row.overdue_now), style=overdue_style),
            _count(row.overdue_total),
        )
    parts.append(agencies if frame.agencies else Text("no agency requests yet", style="dim"))
    overdue = frame.overdue_agencies
    parts.append(
        Text(f"OVERDUE: {', '.join(overdue)}", style="bold red")
        if overdue
        else Text("no agency overdue", style="green")
    )
    if frame.outcomes:
        parts.append(_breakdown("Final decisions by outcome", "outcome", frame.outcomes))
    if frame.dlq_reasons:
        parts.append(_breakdown("DLQ by reason", "reason", frame.dlq_reasons))
    if frame.lag_by_group:
        parts.append(_breakdown("Lag by consumer group", "group", frame.lag_by_group))
    return Group(*parts)


def _breakdown(title: str, label: str, values: Mapping[str, float]) -> Table:
    table = Table(title=title, header_style="bold")
    table.add_column(label)
    table.add_column("count", justify="right")
    for key, value in values.items():
        table.add_row(key, _count(value))
    return table


def default_url(settings: Settings) -> str:
    """The endpoint of this host's `swb run`: its metrics port, else the gateway's."""
    if settings.metrics_port:
        host, port = settings.metrics_host, settings.metrics_port
    else:
        host, port = settings.http_host, settings.http_port
    if host in ("", "0.0.0.0", "::"):
        host = "127.0.0.1"
    return f"http://{host}:{port}/metrics"


def _scrape(client: httpx.Client, url: str) -> Scrape:
    response = client.get(url)
    response.raise_for_status()
    return parse(response.text, time.monotonic())


def run_top(
    url: str, *, interval_s: float = 2.0, once: bool = False, console: Console | None = None
) -> int:
    """Refresh until Ctrl-C (exit 0); with `once`, print one frame from two readings
    `interval_s` apart. Exit 1 when the endpoint cannot be read at all."""
    console = console or Console()
    with httpx.Client(timeout=5.0) as client:
        try:
            previous = _scrape(client, url)
        except (httpx.HTTPError, ValueError) as exc:
            console.print(f"swb top: cannot read {url}: {exc}", style="red")
            return 1
        if once:
            time.sleep(interval_s)
            try:
                current = _scrape(client, url)
            except (httpx.HTTPError, ValueError) as exc:
                console.print(f"swb top: cannot read {url}: {exc}", style="red")
                return 1
            console.print(render(frame_of(previous, current), url))
            return 0
        return _live(client, url, previous, interval_s, console)


def _live(
    client: httpx.Client, url: str, previous: Scrape, interval_s: float, console: Console
) -> int:
    from rich.live import Live

    shown = frame_of(None, previous)
    try:
        with Live(render(shown, url), console=console, auto_refresh=False) as live:
            while True:
                time.sleep(interval_s)
                try:
                    current = _scrape(client, url)
                except (httpx.HTTPError, ValueError) as exc:
                    live.update(render(shown, url, error=str(exc)), refresh=True)
                    continue
                shown = frame_of(previous, current)
                previous = current
                live.update(render(shown, url), refresh=True)
    except KeyboardInterrupt:
        return 0

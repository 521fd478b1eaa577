"""What the bench sends: realistic declarations, each routed to about three agencies, and the
same traffic as pre-encoded bytes for the bare-Kafka baseline.

Declarations are the shipped samples and mixed consignments of two samples (the items and
documents of a second sample added), kept when they route to `FANOUT` agencies; each gets
its own LRN, so its own submission id (and partition). They cite the certificates the
simulated agencies expect, so every agency answers at once and every submission reaches a
final decision without an amendment.
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from pathlib import Path
from typing import Any

from broker.core.aggregation import (
    DecisionIssued,
    PlanReceived,
    ResponseReceived,
    new_state,
    step,
)
from broker.core.codec import Codec
from broker.core.declaration import Declaration
from broker.core.ids import submission_id_for
from broker.core.intake import declare
from broker.core.messages import (
    AgencyStatus,
    Decision,
    RoutingPlan,
    Submission,
)
from broker.core.routing import review_request, route
from broker.core.rules import RuleBook
from connectors.simulated import EXPECTED_DOCUMENTS, SimulationProfile, decide

__all__ = [
    "BENCH_PROFILE",
    "CHANNEL",
    "FANOUT",
    "TRADER",
    "Base",
    "Workload",
    "bases",
    "build_workload",
    "plan_records",
]

TRADER = "NL000000000777"
CHANNEL = "bench"
#: Agencies per declaration (customs and two more), as in the issue's definition of the load.
FANOUT = 3
#: Instant agencies that always clear (and never disclaim): one answer each, all terminal.
BENCH_PROFILE = SimulationProfile(
    seed=7,
    latency_s=0.0,
    followup_s=0.0,
    disclaim_rate=0.0,
    proportions=((AgencyStatus.CLEARED, 1.0),),
)


def _samples() -> list[dict[str, Any]]:
    shipped = resources.files("broker.samples")
    paths = sorted(Path(str(p)) for p in shipped.iterdir() if p.name.endswith(".json"))
    return [json.loads(path.read_text()) for path in paths]


def _submission(declaration: dict[str, Any], now: datetime) -> Submission:
    return declare(json.dumps(declaration).encode(), trader_id=TRADER, channel=CHANNEL, now=now)


def _routed(submission: Submission, rules: RuleBook) -> RoutingPlan:
    return route(
        submission.declaration,
        rules,
        submission_id=submission.submission_id,
        version=submission.version,
        kind=submission.kind,
        trader_id=submission.trader_id,
        payload_sha256=submission.payload_sha256,
        now=submission.received_at,
    )


def _citing_expected(declaration: dict[str, Any], rules: RuleBook, now: datetime) -> dict[str, Any]:
    """Cite the certificate each routed agency's simulation expects (a cited document can
    route further, so until routing is stable)."""
    declaration = copy.deepcopy(declaration)
    while True:
        plan = _routed(_submission(declaration, now), rules)
        cited = Declaration.model_validate(declaration).document_codes()
        missing = [
            EXPECTED_DOCUMENTS[r.agency][0]
            for r in plan.agencies
            if r.agency in EXPECTED_DOCUMENTS and EXPECTED_DOCUMENTS[r.agency][0] not in cited
        ]
        if not missing:
            return declaration
        declaration["documents"] = [
            *declaration.get("documents", ()),
            *({"type_code": code, "id": f"{code}-BENCH-1", "issuer": "bench"} for code in missing),
        ]


def _consignment(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """`first` with the goods items and documents of `second` added (renumbered)."""
    merged = copy.deepcopy(first)
    start = max(item["sequence"] for item in merged["items"])
    for offset, item in enumerate(second["items"], start=1):
        merged["items"].append({**copy.deepcopy(item), "sequence": start + offset})
    merged["documents"] = [
        *merged.get("documents", ()),
        *copy.deepcopy(second.get("documents", [])),
    ]
    return merged


@dataclass(frozen=True, slots=True)
class Base:
    """One declaration the workload varies, with its traffic pre-encoded for the baseline."""

    name: str
    declaration: dict[str, Any]
    agencies: tuple[str, ...]
    plan: bytes
    requests: tuple[bytes, ...]  # one per agency, in `agencies` order
    responses: tuple[bytes, ...]
    decision: bytes  # the final one


def bases(rules: RuleBook, codec: Codec, now: datetime, fanout: int = FANOUT) -> list[Base]:
    """The declarations that route to `fanout` agencies: samples, then mixed consignments."""
    samples = _samples()
    candidates = [(str(s["lrn"]), s) for s in samples]
    candidates += [
        (f"{a['lrn']}+{b['lrn']}", _consignment(a, b))
        for a, b in itertools.permutations(samples, 2)
    ]
    found: list[Base] = []
    for name, candidate in candidates:
        try:
            declaration = _citing_expected(candidate, rules, now)
            submission = _submission(declaration, now)
        except ValueError:  # a mix the model refuses (e.g. more items than allowed)
            continue
        plan = _routed(submission, rules)
        if len(plan.agencies) != fanout:
            continue
        found.append(_encoded(name, declaration, submission, plan, rules, codec))
    if not found:
        raise ValueError(f"no sample declaration routes to {fanout} agencies")
    return found


def _encoded(
    name: str,
    declaration: dict[str, Any],
    submission: Submission,
    plan: RoutingPlan,
    rules: RuleBook,
    codec: Codec,
) -> Base:
    assert submission.declaration is not None
    requests = [review_request(plan, r, submission.declaration, rules) for r in plan.agencies]
    responses = [decide(request, BENCH_PROFILE) for request in requests]
    state, outputs = step(new_state(plan.submission_id), PlanReceived(plan), plan.planned_at)
    for response in responses:
        state, more = step(state, ResponseReceived(response, response.agency), plan.planned_at)
        outputs += more
    decisions: list[Decision] = [o.decision for o in outputs if isinstance(o, DecisionIssued)]
    assert decisions and decisions[-1].final, f"{name}: the instant agencies must decide it"
    return Base(
        name=name,
        declaration=declaration,
        agencies=tuple(r.agency for r in plan.agencies),
        plan=codec.encode(plan),
        requests=tuple(codec.encode(r) for r in requests),
        responses=tuple(codec.encode(r) for r in responses),
        decision=codec.encode(decisions[-1]),
    )


@dataclass(frozen=True, slots=True)
class Workload:
    """N submissions, pre-encoded: key (submission id), value, and which base each varies."""

    keys: tuple[bytes, ...]
    values: tuple[bytes, ...]
    base_of: dict[bytes, int]
    bases: tuple[Base, ...]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def agencies_per_declaration(self) -> float:
        return sum(len(self.bases[i].agencies) for i in self.base_of.values()) / max(1, len(self))

    def messages_per_decision(self) -> int:
        """Records the bare pipeline moves per submission: submission, plan, requests,
        responses, final decision."""
        return round(3 + 2 * self.agencies_per_declaration)


def build_workload(
    count: int, base_list: Sequence[Base], codec: Codec, now: datetime, *, tag: str
) -> Workload:
    """`count` submissions cycling through the bases, each with its own LRN `tag-n`."""
    keys: list[bytes] = []
    values: list[bytes] = []
    base_of: dict[bytes, int] = {}
    for n, index in zip(range(count), itertools.cycle(range(len(base_list))), strict=False):
        declaration = {**base_list[index].declaration, "lrn": f"{tag}-{n:06d}"}
        submission = declare(
            json.dumps(declaration).encode(), trader_id=TRADER, channel=CHANNEL, now=now
        )
        key = submission.submission_id.encode()
        keys.append(key)
        values.append(codec.encode(submission))
        base_of[key] = index
    return Workload(tuple(keys), tuple(values), base_of, tuple(base_list))


def plan_records(
    count: int, base_list: Sequence[Base], codec: Codec, *, tag: str
) -> Iterator[tuple[bytes, bytes]]:
    """(key, RoutingPlan bytes) for `count` distinct submissions: the aggregator's input when
    the memory bench keeps that many submissions in flight."""
    plans = [codec.decode(base.plan, RoutingPlan) for base in base_list]
    records = [plan.model_dump(mode="python") for plan in plans]
    for n, index in zip(range(count), itertools.cycle(range(len(plans))), strict=False):
        sid = submission_id_for(TRADER, f"{tag}-{n:07d}")
        record = {**records[index], "submission_id": sid}
        yield sid.encode(), codec.encode_dict("RoutingPlan", record)

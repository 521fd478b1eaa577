"""Pre-arrival processing in the pure core (issue 8, part 2): which versions await their goods,
and how an arrival notice completes the coordinated decision, deterministically."""

from __future__ import annotations

import itertools
import json
import shutil
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from broker.core.aggregation import (
    ArrivalNoticed,
    ArrivalRefused,
    DecisionIssued,
    Event,
    Output,
    PlanReceived,
    ResponseReceived,
    build_decision,
    last_effects,
    new_state,
    step,
)
from broker.core.arrival import is_pre_arrival, notice_of_arrival
from broker.core.codec import Codec, SchemaRepository, default_schema_dir
from broker.core.declaration import Declaration
from broker.core.messages import (
    AgencyResponse,
    AgencyRoute,
    AgencyStatus,
    ArrivalNotice,
    Decision,
    Outcome,
    Requirement,
    RoutingPlan,
    Submission,
    SubmissionKind,
)

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
SID = "sub-prearrival-0001"
TRADER = "NL812345670"


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def sample(name: str, **changes: Any) -> Declaration:
    text = resources.files("broker.samples").joinpath(f"{name}.json").read_text()
    data = json.loads(text)
    for path, value in changes.items():
        target = data
        *head, last = path.split("__")
        for part in head:
            target = target[part]
        target[last] = value
    return Declaration.model_validate(data)


def plan(
    *agencies: str, version: int = 1, pre_arrival: bool = True, cancel: bool = False
) -> RoutingPlan:
    kind = (
        SubmissionKind.CANCELLATION
        if cancel
        else (SubmissionKind.NEW if version == 1 else SubmissionKind.AMENDMENT)
    )
    return RoutingPlan(
        submission_id=SID,
        version=version,
        kind=kind,
        trader_id=TRADER,
        planned_at=at(0),
        payload_sha256="ab" * 32,
        agencies=tuple(
            AgencyRoute(
                agency=code,
                requirement=Requirement.REQUIRED,
                reasons=(f"rule:{code}",),
                deadline=at(60),
                item_sequences=(1,),
            )
            for code in agencies
        ),
        submitted_by=TRADER,
        received_at=at(0),
        pre_arrival=pre_arrival,
    )


def answer(agency: str, status: AgencyStatus, minute: float, version: int = 1) -> AgencyResponse:
    return AgencyResponse(
        submission_id=SID,
        version=version,
        agency=agency,
        status=status,
        answered_at=at(minute),
        sequence=1,
    )


def notice(minute: float, *, trader: str = TRADER, received: float | None = None) -> ArrivalNotice:
    return notice_of_arrival(
        SID,
        trader_id=trader,
        channel="http",
        received_at=at(received if received is not None else minute),
        arrived_at=at(minute),
        submitted_by=trader,
    )


def run(events: list[Event]) -> list[Output]:
    state = new_state(SID)
    outputs: list[Output] = []
    for event in events:
        state, out = step(state, event, at(0))
        outputs += out
    return outputs


def decisions(outputs: list[Output]) -> list[Decision]:
    return [o.decision for o in outputs if isinstance(o, DecisionIssued)]


# --- which versions are pre-arrival -------------------------------------------------------


def test_future_arrival_is_pre_arrival_and_past_arrival_is_not() -> None:
    beef = sample("02-frozen-beef-argentina")  # arrives 2026-12-02T06:00Z
    arrival = beef.transport.arrival_at
    assert arrival is not None
    assert is_pre_arrival(beef, arrival - timedelta(seconds=1))
    assert not is_pre_arrival(beef, arrival)
    assert not is_pre_arrival(beef, arrival + timedelta(days=1))


def test_import_without_arrival_time_is_pre_arrival_but_export_and_transit_are_not() -> None:
    now = datetime(2026, 11, 30, tzinfo=UTC)
    beef = sample("02-frozen-beef-argentina", transport__arrival_at=None)
    assert is_pre_arrival(beef, now)
    assert not is_pre_arrival(sample("11-dual-use-machine-tools-export"), now)
    assert not is_pre_arrival(sample("12-transit-electronics"), now)
    assert not is_pre_arrival(None, now)  # a cancellation carries no declaration


def test_notice_in_the_future_is_refused_with_a_sentence() -> None:
    with pytest.raises(ValueError, match="in the future"):
        notice_of_arrival(
            SID, trader_id=TRADER, channel="http", received_at=at(0), arrived_at=at(60)
        )
    assert notice_of_arrival(
        SID, trader_id=TRADER, channel="http", received_at=at(3)
    ).arrived_at == at(3)  # no arrival time: the goods arrived when the notice was received


# --- the decision -------------------------------------------------------------------------


def test_pre_arrival_release_takes_effect_on_arrival() -> None:
    state = new_state(SID)
    outputs: list[Output] = []
    for event in [
        PlanReceived(plan("customs", "food")),
        ResponseReceived(answer("customs", AgencyStatus.CLEARED, 2), "customs"),
        ResponseReceived(answer("food", AgencyStatus.CLEARED, 3), "food"),
    ]:
        state, out = step(state, event, at(0))
        outputs += out
    released = decisions(outputs)[-1]
    assert released.outcome is Outcome.RELEASED and released.final
    assert released.release_on_arrival and released.arrived_at is None
    assert released.submitted_by == TRADER and released.received_at == at(0)

    state, out = step(state, ArrivalNoticed(notice(50, received=51)), at(0))
    (issued,) = [o for o in out if isinstance(o, DecisionIssued)]
    assert issued.on_arrival  # the version was final already: a re-issue, not a new decision
    arrived = issued.decision
    assert arrived.final and arrived.outcome is Outcome.RELEASED
    assert not arrived.release_on_arrival and arrived.arrived_at == at(50)
    assert arrived.decided_at == at(51)  # when the notice was received
    assert arrived.decision_id != released.decision_id

    # A re-delivered or second notice changes nothing; the last effects rebuild the same id.
    state, again = step(state, ArrivalNoticed(notice(55)), at(0))
    assert again == []
    (rebuilt,) = decisions(last_effects(state))
    assert rebuilt == arrived


def test_arrival_before_the_answers_is_carried_by_every_later_decision() -> None:
    outputs = run(
        [
            ArrivalNoticed(notice(1)),  # before the plan: kept
            PlanReceived(plan("customs")),
            ResponseReceived(answer("customs", AgencyStatus.CLEARED, 5), "customs"),
        ]
    )
    issued = decisions(outputs)
    assert [d.arrived_at for d in issued] == [at(1), at(1)]
    assert not any(d.release_on_arrival for d in issued)
    assert issued[-1].final and issued[-1].decided_at == at(5)


def test_decision_after_arrival_does_not_depend_on_event_order() -> None:
    events: list[Event] = [
        PlanReceived(plan("customs", "food")),
        ResponseReceived(answer("customs", AgencyStatus.CLEARED, 2), "customs"),
        ResponseReceived(answer("food", AgencyStatus.CLEARED_WITH_CONDITIONS, 4), "food"),
        ArrivalNoticed(notice(3)),
    ]
    finals = set()
    for order in itertools.permutations(events):
        last = decisions(run(list(order)))[-1]
        assert last.final and not last.release_on_arrival
        finals.add((last.decision_id, last.model_dump_json()))
    assert len(finals) == 1


def test_lodged_after_arrival_never_awaits_and_ignores_notices() -> None:
    outputs = run(
        [
            PlanReceived(plan("customs", pre_arrival=False)),
            ResponseReceived(answer("customs", AgencyStatus.CLEARED, 2), "customs"),
            ArrivalNoticed(notice(3)),
        ]
    )
    issued = decisions(outputs)
    assert len(issued) == 2  # pending, released: the notice re-issues nothing
    assert not issued[-1].release_on_arrival and issued[-1].arrived_at is None


def test_rejected_or_cancelled_releases_nothing_on_arrival() -> None:
    rejected = run(
        [
            PlanReceived(plan("customs")),
            ResponseReceived(answer("customs", AgencyStatus.REJECTED, 2), "customs"),
            ArrivalNoticed(notice(3)),
        ]
    )
    last = decisions(rejected)[-1]
    assert last.outcome is Outcome.REJECTED and not last.release_on_arrival
    assert last.arrived_at is None and len(decisions(rejected)) == 2

    cancelled = run(
        [
            PlanReceived(plan("customs")),
            PlanReceived(plan(version=2, cancel=True)),
            ArrivalNoticed(notice(3)),
        ]
    )
    last = decisions(cancelled)[-1]
    assert last.outcome is Outcome.CANCELLED and not last.release_on_arrival


def test_notice_for_another_traders_submission_is_refused() -> None:
    outputs = run([PlanReceived(plan("customs")), ArrivalNoticed(notice(3, trader="XX999"))])
    refused = [o for o in outputs if isinstance(o, ArrivalRefused)]
    assert [r.reason for r in refused] == ["trader-mismatch"]
    assert decisions(outputs)[-1].release_on_arrival  # still awaiting its goods


def test_pending_decision_says_release_on_arrival_and_amendment_keeps_the_arrival() -> None:
    outputs = run(
        [
            PlanReceived(plan("customs")),
            ArrivalNoticed(notice(2)),
            PlanReceived(plan("customs", version=2)),
        ]
    )
    first, arrived, amended = decisions(outputs)
    assert first.outcome is Outcome.PENDING and first.release_on_arrival
    assert arrived.arrived_at == at(2) and not arrived.release_on_arrival
    assert amended.version == 2 and amended.arrived_at == at(2)


def test_new_fields_round_trip_and_old_readers_data_defaults() -> None:
    codec = Codec()
    state = new_state(SID)
    state, _ = step(state, PlanReceived(plan("customs")), at(0))
    decision = build_decision(state)
    assert codec.decode(codec.encode(decision), Decision) == decision
    arrival = notice(4)
    assert codec.decode(codec.encode(arrival), ArrivalNotice) == arrival
    # A plan without the new fields (as older routers wrote it) means: not pre-arrival.
    record = plan("customs").model_dump(
        exclude={"submitted_by", "received_at", "pre_arrival", "shared_with"}
    )
    old = RoutingPlan.model_validate(record)
    assert not old.pre_arrival and old.received_at is None and old.submitted_by is None


# --- schema evolution: the new fields have defaults ----------------------------------------

#: Every field issue 8 added to an existing record (the new records are new schemas).
ADDED = {
    "Declaration": ("ucr",),
    "Submission": ("submitted_by",),
    "InformationPackage": ("ucr", "partner"),
    "RoutingPlan": ("submitted_by", "received_at", "pre_arrival", "shared_with"),
    "Decision": ("submitted_by", "received_at", "release_on_arrival", "arrived_at", "shared_with"),
}


def test_data_written_before_the_new_fields_reads_with_their_defaults(tmp_path: Path) -> None:
    older = tmp_path / "before-issue-8"
    shutil.copytree(default_schema_dir(), older)
    for name, fields in ADDED.items():
        path = older / f"swb.v1.{name}.avsc"
        schema = json.loads(path.read_text())
        schema["fields"] = [f for f in schema["fields"] if f["name"] not in fields]
        path.write_text(json.dumps(schema))
    old_codec, codec = Codec(SchemaRepository(older)), Codec()
    state = new_state(SID)
    state, _ = step(state, PlanReceived(plan("customs")), at(0))
    decision = build_decision(state)
    record = decision.model_dump(mode="python", exclude=set(ADDED["Decision"]))
    data = old_codec.encode_dict("Decision", record)
    codec.register_writer_schema(old_codec.repository.expanded("Decision"))
    old = codec.decode(data, Decision)
    assert old.submitted_by is None and old.received_at is None and old.shared_with is None
    assert not old.release_on_arrival and old.arrived_at is None
    assert old.model_dump(exclude=set(ADDED["Decision"])) == record

    beef = sample("02-frozen-beef-argentina")
    submission = {
        "submission_id": SID,
        "version": 1,
        "kind": "NEW",
        "trader_id": TRADER,
        "channel": "kafka",
        "received_at": at(0),
        "payload_sha256": "ab" * 32,
        "declaration": beef.model_dump(mode="python", exclude={"ucr"}),
        "reason": None,
    }
    data = old_codec.encode_dict("Submission", submission)
    codec.register_writer_schema(old_codec.repository.expanded("Submission"))
    old_submission = codec.decode(data, Submission)
    assert old_submission.submitted_by is None and old_submission.declaration == beef

"""The coordinated-decision state machine against DESIGN §5, one rule at a time."""

from __future__ import annotations

import itertools

import pytest
from builders import (
    SUBMISSION_ID,
    Harness,
    answer,
    at,
    cancellation,
    decisions,
    document,
    final_decisions,
    not_counted,
    plan,
    refusals,
    route,
    withdrawn_agencies,
)

from broker.core.aggregation import (
    AgencyOverdue,
    AnswerNotCounted,
    AnswerRefused,
    DeadlineTick,
    Output,
    PlanReceived,
    ResponseReceived,
    SubmissionState,
    WithdrawalRequested,
    build_decision,
    new_state,
    step,
)
from broker.core.messages import (
    AgencyState,
    AgencyStatus,
    JointInspection,
    Outcome,
    RequestKind,
    RequiredDocument,
    Requirement,
)

S = AgencyStatus
MAY = Requirement.MAY_BE_REQUIRED

# The contract's precedence, written out independently of the implementation: worst first.
PRECEDENCE: list[Outcome] = [
    Outcome.REJECTED,
    Outcome.HOLD,
    Outcome.INSPECTION,
    Outcome.DOCUMENTS_REQUIRED,
    Outcome.PENDING,
    Outcome.RELEASED_WITH_CONDITIONS,
    Outcome.RELEASED,
]
OUTCOME_OF: dict[AgencyState, Outcome] = {
    AgencyState.REJECTED: Outcome.REJECTED,
    AgencyState.HOLD: Outcome.HOLD,
    AgencyState.INSPECTION: Outcome.INSPECTION,
    AgencyState.DOCUMENTS_REQUIRED: Outcome.DOCUMENTS_REQUIRED,
    AgencyState.PENDING: Outcome.PENDING,
    AgencyState.OVERDUE: Outcome.PENDING,
    AgencyState.CLEARED_WITH_CONDITIONS: Outcome.RELEASED_WITH_CONDITIONS,
    AgencyState.CLEARED: Outcome.RELEASED,
}
TERMINAL = {
    AgencyState.CLEARED,
    AgencyState.CLEARED_WITH_CONDITIONS,
    AgencyState.REJECTED,
    AgencyState.NOT_CONCERNED,
}
INTERIM = [S.DOCUMENTS_REQUIRED, S.INSPECTION, S.HOLD]


def worst(states: list[AgencyState]) -> Outcome:
    concerned = [OUTCOME_OF[s] for s in states if s is not AgencyState.NOT_CONCERNED]
    return min(concerned, key=PRECEDENCE.index, default=Outcome.RELEASED)


# --- one agency alone ---------------------------------------------------------------------


def test_plan_alone_is_pending_and_open() -> None:
    run = Harness()
    outputs = run.plan(plan("customs", "food"))
    assert len(decisions(outputs)) == 1
    decision = run.last_decision
    assert decision.outcome is Outcome.PENDING
    assert not decision.final
    assert run.statuses() == {"customs": AgencyState.PENDING, "food": AgencyState.PENDING}
    assert decision.submission_id == SUBMISSION_ID
    assert decision.version == 1
    assert decision.decided_at == at(0)


@pytest.mark.parametrize(
    ("status", "outcome", "final"),
    [
        (S.CLEARED, Outcome.RELEASED, True),
        (S.CLEARED_WITH_CONDITIONS, Outcome.RELEASED_WITH_CONDITIONS, True),
        (S.DOCUMENTS_REQUIRED, Outcome.DOCUMENTS_REQUIRED, False),
        (S.INSPECTION, Outcome.INSPECTION, False),
        (S.HOLD, Outcome.HOLD, False),
        (S.REJECTED, Outcome.REJECTED, True),
        # The only agency drops out: nothing holds the goods.
        (S.NOT_CONCERNED, Outcome.RELEASED, True),
    ],
)
def test_each_status_alone(status: AgencyStatus, outcome: Outcome, final: bool) -> None:
    run = Harness()
    run.plan(plan(route("food", MAY)))
    reply = answer(
        "food", status, minute=7, reasons=("checked",), conditions=("keep cold",), sequence=4
    )
    outputs = run.answer(reply)
    assert len(decisions(outputs)) == 1
    decision = run.last_decision
    assert decision.outcome is outcome
    assert decision.final is final
    (line,) = decision.agencies
    assert line.status is AgencyState(status.value)
    assert line.answered_at == at(7)
    assert line.reasons == ("checked",)
    assert line.conditions == ("keep cold",)
    assert decision.decided_at == at(7)
    assert run.state.final is final
    assert withdrawn_agencies(outputs) == []


# --- precedence over every pair -----------------------------------------------------------

PAIR_STATES = [
    AgencyState.CLEARED,
    AgencyState.CLEARED_WITH_CONDITIONS,
    AgencyState.DOCUMENTS_REQUIRED,
    AgencyState.INSPECTION,
    AgencyState.HOLD,
    AgencyState.REJECTED,
    AgencyState.NOT_CONCERNED,
    AgencyState.PENDING,
    AgencyState.OVERDUE,
]


@pytest.mark.parametrize(
    ("first", "second"),
    list(itertools.product(PAIR_STATES, PAIR_STATES)),
    ids=lambda s: s.value,
)
def test_precedence_of_every_pair(first: AgencyState, second: AgencyState) -> None:
    """Two agencies in the given states: the outcome is the worse; NOT_CONCERNED drops out."""
    agencies = {"food": first, "plant": second}
    run = Harness()
    run.plan(
        plan(
            *(
                # A PENDING agency keeps a distant deadline so the tick leaves it pending.
                route(code, MAY, deadline=at(1000) if state is AgencyState.PENDING else at(60))
                for code, state in agencies.items()
            )
        )
    )
    if AgencyState.OVERDUE in agencies.values():
        overdue = [out for out in run.tick(at(60)) if isinstance(out, AgencyOverdue)]
        assert {o.agency for o in overdue} == {
            code for code, state in agencies.items() if state is not AgencyState.PENDING
        }
    # A rejection closes the version at once, so it is answered last to show the whole pair.
    answering = sorted(agencies.items(), key=lambda item: item[1] is AgencyState.REJECTED)
    for minute, (code, state) in enumerate(answering, start=1):
        if state not in (AgencyState.PENDING, AgencyState.OVERDUE):
            run.answer(answer(code, AgencyStatus(state.value), minute=minute))

    decision = run.last_decision
    if first is second is AgencyState.REJECTED:
        # The first rejection is final at once; the second agency's answer is late.
        assert run.statuses() == {"food": AgencyState.REJECTED, "plant": AgencyState.PENDING}
        assert not_counted(run.outputs) == ["late-after-final"]
        assert withdrawn_agencies(run.outputs) == ["plant"]
    else:
        assert run.statuses() == agencies
        assert not_counted(run.outputs) == []
    assert decision.outcome is worst([first, second])
    expected_final = AgencyState.REJECTED in agencies.values() or all(
        state in TERMINAL for state in agencies.values()
    )
    assert decision.final is expected_final
    assert len(final_decisions(run.outputs)) == int(expected_final)


def test_precedence_table_is_total_order_over_three() -> None:
    """A three-agency mix picks the single worst, whatever the plan order."""
    for order in itertools.permutations(["customs", "food", "plant"]):
        run = Harness()
        run.plan(plan(*order))
        run.answer(answer("customs", S.CLEARED_WITH_CONDITIONS))
        run.answer(answer("food", S.DOCUMENTS_REQUIRED))
        run.answer(answer("plant", S.INSPECTION))
        assert run.last_decision.outcome is Outcome.INSPECTION
        assert [line.agency for line in run.last_decision.agencies] == list(order)


# --- interim and terminal -----------------------------------------------------------------


@pytest.mark.parametrize("interim", INTERIM)
def test_interim_answer_keeps_decision_open_until_terminal(interim: AgencyStatus) -> None:
    run = Harness()
    run.plan(plan("customs", "food"))
    run.answer(answer("customs", S.CLEARED, minute=1))
    run.answer(answer("food", interim, minute=2))
    assert run.last_decision.outcome is Outcome(interim.value)
    assert not run.last_decision.final
    assert not run.state.final

    outputs = run.answer(answer("food", S.CLEARED_WITH_CONDITIONS, minute=30, sequence=1))
    (decision,) = decisions(outputs)
    assert decision.outcome is Outcome.RELEASED_WITH_CONDITIONS
    assert decision.final
    assert run.state.final


def test_not_final_while_any_agency_is_pending() -> None:
    run = Harness()
    run.plan(plan("customs", "food", "plant"))
    run.answer(answer("customs", S.CLEARED))
    run.answer(answer("food", S.CLEARED))
    assert not run.last_decision.final
    assert run.last_decision.outcome is Outcome.PENDING
    run.answer(answer("plant", S.CLEARED))
    assert run.last_decision.final
    assert run.last_decision.outcome is Outcome.RELEASED


# --- re-issue on change, not on duplicate -------------------------------------------------


def test_decision_reissued_on_each_change_and_not_for_duplicates() -> None:
    run = Harness()
    assert len(decisions(run.plan(plan("customs", "food")))) == 1
    hold = answer("food", S.HOLD, minute=1)
    assert len(decisions(run.answer(hold))) == 1
    assert run.answer(hold) == []  # re-delivered: nothing at all
    # The same status at a later time is a change (the trader sees the answer time).
    assert len(decisions(run.answer(answer("food", S.HOLD, minute=2, sequence=1)))) == 1
    inspection = answer("food", S.INSPECTION, minute=3, sequence=2)
    assert len(decisions(run.answer(inspection))) == 1
    assert run.answer(inspection) == []
    ids = [d.decision_id for d in decisions(run.outputs)]
    assert len(ids) == len(set(ids)) == 4
    assert run.state.last_decision_id == ids[-1]


def test_duplicate_of_terminal_answer_after_final_emits_nothing() -> None:
    run = Harness()
    run.plan(plan("customs"))
    cleared = answer("customs", S.CLEARED)
    run.answer(cleared)
    before = run.state.model_copy(deep=True)
    assert run.answer(cleared) == []
    assert run.state == before
    assert len(final_decisions(run.outputs)) == 1


# --- latest answer wins, not the last to arrive -------------------------------------------

FOOD_ANSWERS = [
    answer("food", S.DOCUMENTS_REQUIRED, minute=5, sequence=1),
    answer("food", S.HOLD, minute=10, sequence=2),
    answer("food", S.INSPECTION, minute=20, sequence=3),
]


@pytest.mark.parametrize("order", list(itertools.permutations(range(3))))
def test_latest_answer_by_answered_at_wins_whatever_the_arrival(order: tuple[int, ...]) -> None:
    run = Harness()
    run.plan(plan("customs", "food"))
    for index in order:
        run.answer(FOOD_ANSWERS[index])
    assert run.statuses()["food"] is AgencyState.INSPECTION
    assert run.last_decision.outcome is Outcome.INSPECTION
    assert run.state.answers["food"] == FOOD_ANSWERS[2]
    # Every answer that arrived after a later one is kept for audit as older.
    expected_older = sum(
        1 for i, index in enumerate(order) if any(later > index for later in order[:i])
    )
    assert not_counted(run.outputs) == ["older-answer"] * expected_older


def test_sequence_breaks_a_tie_on_answer_time() -> None:
    first = answer("food", S.HOLD, minute=5, sequence=1)
    second = answer("food", S.INSPECTION, minute=5, sequence=2)
    for arrival in ([first, second], [second, first]):
        run = Harness()
        run.plan(plan("customs", "food"))
        for reply in arrival:
            run.answer(reply)
        assert run.statuses()["food"] is AgencyState.INSPECTION


def test_answer_time_outranks_sequence() -> None:
    later_time = answer("food", S.HOLD, minute=9, sequence=1)
    higher_sequence = answer("food", S.INSPECTION, minute=5, sequence=7)
    for arrival in ([later_time, higher_sequence], [higher_sequence, later_time]):
        run = Harness()
        run.plan(plan("customs", "food"))
        for reply in arrival:
            run.answer(reply)
        assert run.statuses()["food"] is AgencyState.HOLD


def test_conflicting_answers_with_same_time_and_sequence_do_not_depend_on_arrival() -> None:
    """The worse status breaks the tie, whatever arrives first."""
    hold = answer("food", S.HOLD, minute=5, sequence=3)
    inspection = answer("food", S.INSPECTION, minute=5, sequence=3)
    outcomes = set()
    for arrival in ([hold, inspection], [inspection, hold]):
        run = Harness()
        run.plan(plan("customs", "food"))
        for reply in arrival:
            run.answer(reply)
        outcomes.add(run.last_decision.outcome)
    assert outcomes == {Outcome.HOLD}


# --- answers before their plan ------------------------------------------------------------


def test_answer_before_plan_is_held_then_applied() -> None:
    run = Harness()
    early = answer("food", S.HOLD, minute=2)
    assert run.answer(early) == []
    assert run.state.held == [early]
    assert run.answer(early) == []  # a re-delivered early answer is held once
    assert run.state.held == [early]

    outputs = run.plan(plan("customs", "food"))
    (decision,) = decisions(outputs)  # one decision with the held answer already in it
    assert decision.outcome is Outcome.HOLD
    assert run.statuses() == {"customs": AgencyState.PENDING, "food": AgencyState.HOLD}
    assert run.state.held == []


def test_held_answers_are_applied_in_answer_order() -> None:
    run = Harness()
    oldest = answer("food", S.HOLD, minute=3, sequence=1)
    middle = answer("food", S.DOCUMENTS_REQUIRED, minute=5, sequence=2)
    newest = answer("food", S.INSPECTION, minute=9, sequence=3)
    for early in (oldest, newest, middle):
        run.answer(early)
    outputs = run.plan(plan("customs", "food"))
    assert run.statuses()["food"] is AgencyState.INSPECTION
    # All arrived in time, so all were counted in answer order: the older ones were simply
    # replaced (kept for audit), not reported as answers that did not count.
    assert not_counted(outputs) == []
    assert run.state.audit == [oldest, middle]


def test_held_answers_that_complete_the_decision_give_one_final() -> None:
    run = Harness()
    run.answer(answer("customs", S.CLEARED, minute=1))
    run.answer(answer("food", S.CLEARED_WITH_CONDITIONS, minute=2, conditions=("cold",)))
    outputs = run.plan(plan("customs", "food"))
    assert [d.final for d in decisions(outputs)] == [True]
    assert run.last_decision.outcome is Outcome.RELEASED_WITH_CONDITIONS


def test_answer_to_next_version_is_held_until_the_amendment() -> None:
    run = Harness()
    run.plan(plan("customs", "food"))
    early = answer("plant", S.INSPECTION, version=2)
    assert run.answer(early) == []
    assert run.last_decision.version == 1
    run.plan(plan("customs", "plant", version=2))
    assert run.last_decision.version == 2
    assert run.statuses()["plant"] is AgencyState.INSPECTION


# --- refused answers ----------------------------------------------------------------------


def test_answer_from_agency_not_routed_is_refused() -> None:
    run = Harness()
    run.plan(plan("customs", "food"))
    before = run.state.model_copy(deep=True)
    stray = answer("police", S.REJECTED)
    outputs = run.answer(stray)
    assert len(outputs) == 1
    refused = outputs[0]
    assert isinstance(refused, AnswerRefused)
    assert refused.reason == "agency-not-routed"
    assert refused.response == stray
    assert "police" in refused.detail
    # a rejection from nobody rejects nothing; only its digest is remembered
    assert run.state.model_copy(update={"refused": []}) == before
    assert len(run.state.refused) == 1


def test_held_answer_from_agency_not_routed_is_refused_when_the_plan_arrives() -> None:
    run = Harness()
    run.answer(answer("police", S.REJECTED))
    outputs = run.plan(plan("customs"))
    assert refusals(outputs) == ["agency-not-routed"]
    assert run.last_decision.outcome is Outcome.PENDING
    assert "police" not in run.state.answers


@pytest.mark.parametrize("with_plan", [True, False])
def test_agency_field_disagreeing_with_topic_is_refused(with_plan: bool) -> None:
    run = Harness()
    if with_plan:
        run.plan(plan("customs", "food"))
    before = run.state.model_copy(deep=True)
    forged = answer("food", S.CLEARED)
    outputs = run.answer(forged, topic_agency="plant")
    assert len(outputs) == 1
    assert isinstance(outputs[0], AnswerRefused)
    assert outputs[0].reason == "agency-mismatch"
    assert "plant" in outputs[0].detail
    assert run.state == before
    assert run.state.held == []


def test_not_concerned_from_required_agency_is_refused() -> None:
    run = Harness()
    run.plan(plan(route("customs"), route("food", Requirement.REQUIRED)))
    before = run.state.model_copy(deep=True)
    outputs = run.answer(answer("food", S.NOT_CONCERNED))
    assert refusals(outputs) == ["not-concerned-refused"]
    assert decisions(outputs) == []
    assert run.state.model_copy(update={"refused": []}) == before


def test_not_concerned_from_may_be_required_agency_drops_out() -> None:
    run = Harness()
    run.plan(plan(route("customs"), route("food", MAY)))
    run.answer(answer("food", S.NOT_CONCERNED))
    assert run.statuses()["food"] is AgencyState.NOT_CONCERNED
    assert run.last_decision.outcome is Outcome.PENDING  # customs still to answer
    assert not run.last_decision.final
    run.answer(answer("customs", S.CLEARED_WITH_CONDITIONS))
    assert run.last_decision.outcome is Outcome.RELEASED_WITH_CONDITIONS
    assert run.last_decision.final


# --- rejection short-circuit --------------------------------------------------------------


def test_rejection_is_final_at_once_and_withdraws_agencies_still_working() -> None:
    run = Harness()
    run.plan(
        plan(
            route("customs"),  # pending
            route("food"),  # interim HOLD
            route("plant"),  # cleared: terminal
            route("veterinary", MAY),  # not concerned: terminal
            route("police", deadline=at(10)),  # overdue
            route("wildlife"),  # interim INSPECTION
            route("strategic"),  # the rejection
        )
    )
    run.answer(answer("food", S.HOLD, minute=1))
    run.answer(answer("plant", S.CLEARED, minute=2))
    run.answer(answer("veterinary", S.NOT_CONCERNED, minute=3))
    run.answer(answer("wildlife", S.INSPECTION, minute=4))
    run.tick(at(11))
    assert run.statuses()["police"] is AgencyState.OVERDUE
    assert withdrawn_agencies(run.outputs) == []

    outputs = run.answer(answer("strategic", S.REJECTED, minute=12, reasons=("embargo",)))
    (decision,) = decisions(outputs)
    assert decision.outcome is Outcome.REJECTED
    assert decision.final
    assert sorted(withdrawn_agencies(outputs)) == ["customs", "food", "police", "wildlife"]
    withdrawals = [out.request for out in outputs if isinstance(out, WithdrawalRequested)]
    for request in withdrawals:
        assert request.kind is RequestKind.WITHDRAWAL
        assert request.submission_id == SUBMISSION_ID
        assert request.version == 1
        assert request.package is None
        assert request.withdrawal_reason is not None
        assert "strategic" in request.withdrawal_reason
        assert request.sent_at == decision.decided_at
    assert len({request.request_id for request in withdrawals}) == len(withdrawals)
    # The decision goes out before the withdrawals it justifies.
    assert decisions(outputs[:1]) == [decision]


def test_rejection_with_every_other_agency_terminal_withdraws_nobody() -> None:
    run = Harness()
    run.plan(plan("customs", "food"))
    run.answer(answer("customs", S.CLEARED))
    outputs = run.answer(answer("food", S.REJECTED))
    assert run.last_decision.final
    assert withdrawn_agencies(outputs) == []


def test_answers_after_rejection_are_late_and_do_not_change_it() -> None:
    run = Harness()
    run.plan(plan("customs", "food"))
    run.answer(answer("food", S.REJECTED, minute=1))
    final = run.last_decision
    outputs = run.answer(answer("customs", S.CLEARED, minute=2))
    assert not_counted(outputs) == ["late-after-final"]
    assert decisions(outputs) == []
    # Even a newer answer from the rejecting agency does not reopen the version.
    outputs = run.answer(answer("food", S.CLEARED, minute=3, sequence=1))
    assert not_counted(outputs) == ["late-after-final"]
    assert withdrawn_agencies(outputs) == []
    assert build_decision(run.state) == final
    assert len(final_decisions(run.outputs)) == 1


# --- overdue ------------------------------------------------------------------------------


def test_silence_past_the_sla_is_overdue_never_a_release() -> None:
    run = Harness()
    run.plan(plan(route("customs", deadline=at(60))))
    assert run.state.next_deadline() == at(60)
    assert run.tick(at(59)) == []

    outputs = run.tick(at(60))
    overdue = [out for out in outputs if isinstance(out, AgencyOverdue)]
    assert overdue == [AgencyOverdue(SUBMISSION_ID, 1, "customs")]
    (decision,) = decisions(outputs)
    assert decision.outcome is Outcome.PENDING
    assert not decision.final
    assert run.statuses() == {"customs": AgencyState.OVERDUE}
    assert decision.decided_at == at(60)  # the deadline, not the tick's clock
    assert run.state.next_deadline() is None

    # Later ticks: reported once, still no release.
    assert run.tick(at(61)) == []
    assert run.tick(at(10_000)) == []
    assert run.last_decision.outcome is Outcome.PENDING


def test_overdue_only_for_agencies_past_their_own_deadline() -> None:
    run = Harness()
    run.plan(plan(route("customs", deadline=at(10)), route("food", deadline=at(30))))
    run.tick(at(20))
    assert run.statuses() == {"customs": AgencyState.OVERDUE, "food": AgencyState.PENDING}
    assert run.state.next_deadline() == at(30)
    run.tick(at(30))
    assert run.statuses() == {"customs": AgencyState.OVERDUE, "food": AgencyState.OVERDUE}
    overdue = [out.agency for out in run.outputs if isinstance(out, AgencyOverdue)]
    assert overdue == ["customs", "food"]


def test_agency_that_answered_interim_is_not_overdue() -> None:
    run = Harness()
    run.plan(plan(route("customs", deadline=at(10))))
    run.answer(answer("customs", S.HOLD, minute=5))
    assert run.state.next_deadline() is None
    assert run.tick(at(20)) == []
    assert run.statuses() == {"customs": AgencyState.HOLD}


def test_late_answer_after_overdue_still_counts() -> None:
    run = Harness()
    run.plan(plan(route("customs", deadline=at(10)), route("food", deadline=at(10))))
    run.tick(at(11))
    outputs = run.answer(answer("customs", S.CLEARED, minute=15))
    assert not_counted(outputs) == []
    assert run.statuses() == {"customs": AgencyState.CLEARED, "food": AgencyState.OVERDUE}
    assert run.last_decision.outcome is Outcome.PENDING
    run.answer(answer("food", S.CLEARED, minute=16))
    assert run.last_decision.outcome is Outcome.RELEASED
    assert run.last_decision.final
    assert run.state.overdue == []


def test_tick_before_plan_or_after_final_does_nothing() -> None:
    run = Harness()
    assert run.tick(at(1000)) == []
    run.plan(plan(route("customs", deadline=at(10)), route("food", deadline=at(10))))
    run.answer(answer("customs", S.REJECTED))
    assert run.last_decision.final
    assert run.state.next_deadline() is None
    # food never answered and its deadline passed, but the version is closed.
    assert run.tick(at(1000)) == []
    assert run.statuses()["food"] is AgencyState.PENDING


# --- after the final decision -------------------------------------------------------------


def test_answer_after_final_is_not_counted_and_changes_nothing() -> None:
    run = Harness()
    run.plan(plan("customs", "food"))
    run.answer(answer("customs", S.CLEARED, minute=1))
    run.answer(answer("food", S.CLEARED, minute=2))
    final = run.last_decision
    assert final.final

    late = answer("food", S.HOLD, minute=5, sequence=1)
    outputs = run.answer(late)
    assert len(outputs) == 1
    assert isinstance(outputs[0], AnswerNotCounted)
    assert outputs[0].reason == "late-after-final"
    assert outputs[0].response == late
    assert late in run.state.audit
    assert build_decision(run.state) == final
    # Re-delivered late answer: already kept, not counted twice.
    assert run.answer(late) == []
    assert run.state.audit.count(late) == 1
    assert len(final_decisions(run.outputs)) == 1


# --- amendment ----------------------------------------------------------------------------


def test_amendment_replaces_the_version_and_old_answers_do_not_count() -> None:
    run = Harness()
    run.plan(plan("customs", "food"))
    old_hold = answer("food", S.HOLD, minute=1)
    run.answer(old_hold)
    run.answer(answer("customs", S.CLEARED, minute=2))

    outputs = run.plan(plan("customs", "plant", version=2, planned_at=at(10)))
    (decision,) = decisions(outputs)
    assert decision.version == 2
    assert decision.outcome is Outcome.PENDING
    assert run.statuses() == {"customs": AgencyState.PENDING, "plant": AgencyState.PENDING}
    assert old_hold in run.state.audit
    assert run.state.answers == {}

    late_v1 = answer("customs", S.REJECTED, minute=3, sequence=1)
    outputs = run.answer(late_v1)
    assert not_counted(outputs) == ["superseded-version"]
    assert decisions(outputs) == []
    assert late_v1 in run.state.audit

    run.answer(answer("customs", S.CLEARED, minute=11, version=2, sequence=2))
    run.answer(answer("plant", S.CLEARED_WITH_CONDITIONS, minute=12, version=2))
    assert run.last_decision.final
    assert run.last_decision.version == 2
    assert run.last_decision.outcome is Outcome.RELEASED_WITH_CONDITIONS
    # v1 answer from an agency that v2 no longer routes is not counted either.
    assert not_counted(run.answer(answer("food", S.REJECTED, minute=4, sequence=1))) == [
        "superseded-version"
    ]


def test_redelivered_answer_that_did_not_count_is_reported_once() -> None:
    run = Harness()
    run.plan(plan("customs", "food"))
    run.plan(plan("customs", "food", version=2))
    superseded = answer("food", S.CLEARED, version=1)
    assert not_counted(run.answer(superseded)) == ["superseded-version"]
    assert run.answer(superseded) == []
    assert run.state.audit.count(superseded) == 1

    run.plan(cancellation(3))
    cancelled = answer("food", S.CLEARED, version=2)
    assert not_counted(run.answer(cancelled)) == ["after-cancellation"]
    assert run.answer(cancelled) == []
    assert run.state.audit.count(cancelled) == 1


def test_refused_answer_redelivered_after_an_amendment_changes_nothing() -> None:
    run = Harness()
    run.plan(plan("customs"))
    stray = answer("police", S.REJECTED)
    assert refusals(run.answer(stray)) == ["agency-not-routed"]
    run.plan(plan("customs", version=2))
    before = run.state.model_copy(deep=True)
    outputs = run.answer(stray)
    assert not_counted(outputs) == []
    assert run.state == before


def test_each_version_gets_its_own_final_decision() -> None:
    run = Harness()
    run.plan(plan("customs"))
    run.answer(answer("customs", S.CLEARED))
    run.plan(plan("customs", version=2, planned_at=at(10)))
    assert not run.last_decision.final
    run.answer(answer("customs", S.HOLD, minute=11, version=2))
    run.answer(answer("customs", S.CLEARED, minute=12, version=2, sequence=1))
    finals = final_decisions(run.outputs)
    assert [d.version for d in finals] == [1, 2]
    assert [d.outcome for d in finals] == [Outcome.RELEASED, Outcome.RELEASED]


def test_stale_or_redelivered_plan_is_ignored() -> None:
    run = Harness()
    run.plan(plan("customs", "food", version=2))
    before = run.state.model_copy(deep=True)
    assert run.plan(plan("customs", "food", version=2)) == []
    assert run.plan(plan("customs", version=1)) == []
    assert run.state == before


def test_amendment_arriving_before_the_first_plan_wins() -> None:
    run = Harness()
    v1_answer = answer("food", S.HOLD, minute=1)
    run.answer(v1_answer)
    outputs = run.plan(plan("customs", "plant", version=2))
    assert not_counted(outputs) == ["superseded-version"]
    assert run.plan(plan("customs", "food", version=1)) == []
    assert run.last_decision.version == 2


# --- cancellation -------------------------------------------------------------------------


def test_cancellation_is_final_and_later_answers_do_not_count() -> None:
    run = Harness()
    run.plan(plan("customs", "food"))
    run.answer(answer("food", S.HOLD, minute=1))
    outputs = run.plan(cancellation(2, planned_at=at(20)))
    (decision,) = decisions(outputs)
    assert decision.outcome is Outcome.CANCELLED
    assert decision.final
    assert decision.version == 2
    assert decision.decided_at == at(20)
    assert run.state.cancelled

    for late in (
        answer("customs", S.CLEARED, minute=2),
        answer("customs", S.CLEARED, minute=21, version=2),
        answer("food", S.REJECTED, minute=22, version=3),
    ):
        outputs = run.answer(late)
        assert not_counted(outputs) == ["after-cancellation"]
        assert decisions(outputs) == []
    assert run.tick(at(10_000)) == []
    assert len(final_decisions(run.outputs)) == 1
    assert run.last_decision.outcome is Outcome.CANCELLED


def test_answers_held_when_the_cancellation_arrives_are_after_cancellation() -> None:
    """Held or not, an answer meeting a cancellation gets the same verdict, so its
    re-delivery is a no-op (it used to be refused as not routed, then audited on re-delivery)."""
    run = Harness()
    to_v1 = answer("food", S.HOLD, version=1)
    to_cancelled = answer("customs", S.CLEARED, version=2)
    run.answer(to_v1)
    run.answer(to_cancelled)
    outputs = run.plan(cancellation(2))
    assert refusals(outputs) == []
    assert not_counted(outputs) == ["after-cancellation", "after-cancellation"]
    assert run.last_decision.outcome is Outcome.CANCELLED
    assert run.state.held == []
    before = run.state.model_copy(deep=True)
    assert run.answer(to_v1) == []
    assert run.answer(to_cancelled) == []
    assert run.state == before


# --- joint inspection and documents -------------------------------------------------------


def test_inspections_are_one_joint_inspection() -> None:
    run = Harness()
    run.plan(plan("customs", "food", "plant", "veterinary"))
    run.answer(answer("plant", S.INSPECTION, minute=1))
    assert run.last_decision.joint_inspection == JointInspection(agencies=("plant",))
    run.answer(answer("customs", S.INSPECTION, minute=2))
    run.answer(answer("food", S.HOLD, minute=3))
    run.answer(answer("veterinary", S.INSPECTION, minute=4))
    decision = run.last_decision
    assert decision.outcome is Outcome.HOLD
    assert decision.joint_inspection == JointInspection(agencies=("customs", "plant", "veterinary"))
    # An agency done inspecting leaves the joint inspection; none left means none listed.
    for minute, code in enumerate(("customs", "plant", "veterinary"), start=10):
        run.answer(answer(code, S.CLEARED, minute=minute, sequence=1))
    assert run.last_decision.joint_inspection is None


def test_documents_required_is_the_union_with_agency_and_deadline() -> None:
    run = Harness()
    run.plan(plan("customs", "food", "plant"))
    run.answer(
        answer(
            "food",
            S.DOCUMENTS_REQUIRED,
            minute=1,
            documents=(document("C640", "health certificate", 120), document("N325")),
        )
    )
    run.answer(
        answer("plant", S.DOCUMENTS_REQUIRED, minute=2, documents=(document("N851", minute=90),))
    )
    run.answer(answer("customs", S.HOLD, minute=3))
    decision = run.last_decision
    assert decision.outcome is Outcome.HOLD
    assert set(decision.documents_required) == {
        RequiredDocument(
            agency="food", type_code="C640", description="health certificate", deadline=at(120)
        ),
        RequiredDocument(
            agency="food", type_code="N325", description="document N325", deadline=None
        ),
        RequiredDocument(
            agency="plant", type_code="N851", description="document N851", deadline=at(90)
        ),
    }
    assert len(decision.documents_required) == 3
    # Once the agency is satisfied its documents are no longer asked for.
    run.answer(answer("food", S.CLEARED, minute=5, sequence=1))
    assert [doc.agency for doc in run.last_decision.documents_required] == ["plant"]


# --- determinism --------------------------------------------------------------------------


def _two_agency_run(status: AgencyStatus, now_offset: float) -> Harness:
    run = Harness()
    run.feed(PlanReceived(plan("customs", "food")), at(now_offset))
    run.feed(ResponseReceived(answer("food", status, minute=4), "food"), at(now_offset + 1))
    return run


def test_decision_id_and_decided_at_depend_on_content_only() -> None:
    first = _two_agency_run(S.HOLD, now_offset=0).last_decision
    again = _two_agency_run(S.HOLD, now_offset=500).last_decision  # another wall clock
    assert first == again
    assert first.decision_id == again.decision_id
    assert first.decided_at == at(4)
    assert len(first.decision_id) == 32
    int(first.decision_id, 16)

    other = _two_agency_run(S.INSPECTION, now_offset=0).last_decision
    assert other.decision_id != first.decision_id


def test_decision_id_changes_with_any_content() -> None:
    base = Harness()
    base.plan(plan("customs", "food"))
    base.answer(answer("food", S.HOLD, minute=4))
    variants = [
        answer("food", S.HOLD, minute=5),
        answer("food", S.HOLD, minute=4, reasons=("other",)),
        answer("food", S.HOLD, minute=4, conditions=("cold",)),
    ]
    ids = {base.last_decision.decision_id}
    for variant in variants:
        run = Harness()
        run.plan(plan("customs", "food"))
        run.answer(variant)
        ids.add(run.last_decision.decision_id)
    other_submission = Harness("TRADER1-LRN0002")
    other_submission.plan(plan("customs", "food", submission_id="TRADER1-LRN0002"))
    other_submission.answer(answer("food", S.HOLD, minute=4, submission_id="TRADER1-LRN0002"))
    ids.add(other_submission.last_decision.decision_id)
    assert len(ids) == 5


def test_build_decision_rebuilds_the_issued_decision() -> None:
    run = Harness()
    run.plan(plan("customs", "food"))
    run.answer(answer("food", S.INSPECTION))
    assert build_decision(run.state) == run.last_decision
    assert build_decision(run.state).decision_id == run.state.last_decision_id


def test_build_decision_needs_a_plan() -> None:
    with pytest.raises(AssertionError):
        build_decision(new_state(SUBMISSION_ID))


def test_step_returns_the_state_it_updated() -> None:
    state = new_state(SUBMISSION_ID)
    returned, _ = step(state, PlanReceived(plan("customs")), at(0))
    assert returned.plan is not None
    assert returned.submission_id == SUBMISSION_ID


# --- state round trip ---------------------------------------------------------------------


def _round_trip(state: SubmissionState) -> SubmissionState:
    return SubmissionState.model_validate_json(state.model_dump_json())


# What follows the round trip: answers to v1 and v2 (counted, late, held or superseded by
# stage), a tick, then an amendment that applies anything held.
NEXT_EVENTS = [
    *(
        ResponseReceived(answer(code, S.CLEARED, minute=30 + i, sequence=5, version=v), code)
        for v in (1, 2)
        for i, code in enumerate(("customs", "food"))
    ),
    DeadlineTick(),
    PlanReceived(plan("customs", "food", version=3, planned_at=at(40))),
    ResponseReceived(answer("customs", S.HOLD, minute=41, version=3), "customs"),
]


@pytest.mark.parametrize(
    "stage", ["empty", "held", "open", "overdue", "final", "amended", "cancelled"]
)
def test_state_json_round_trip_is_equal_and_decides_the_same(stage: str) -> None:
    run = Harness()
    if stage != "empty":
        run.answer(answer("food", S.HOLD, minute=1))
    if stage not in ("empty", "held"):
        run.plan(plan(route("customs", deadline=at(20)), route("food", MAY)))
        run.answer(answer("food", S.INSPECTION, minute=2, sequence=1))
        run.answer(answer("food", S.HOLD, minute=0.5, sequence=0))  # older: kept for audit
    if stage in ("overdue", "final", "amended"):
        run.tick(at(25))
    if stage == "final":
        run.answer(answer("customs", S.REJECTED, minute=26))
    if stage == "amended":
        run.plan(plan("customs", "food", version=2, planned_at=at(27)))
    if stage == "cancelled":
        run.plan(cancellation(2))

    restored = SubmissionState.model_validate_json(run.state.model_dump_json())
    assert restored == run.state
    assert restored.model_dump_json() == run.state.model_dump_json()
    if run.state.plan is not None:
        assert build_decision(restored) == build_decision(run.state)

    original, copy = run.state, restored
    original_outputs: list[Output] = []
    copy_outputs: list[Output] = []
    for event in NEXT_EVENTS:
        original, out = step(original, event, at(45))
        original_outputs.extend(out)
        copy, out = step(copy, event, at(45))
        copy_outputs.extend(out)
    assert copy_outputs == original_outputs
    assert decisions(copy_outputs)  # the continuation did decide something to compare
    assert copy == original

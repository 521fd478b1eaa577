"""The permit ledger, pure: checks, write-offs, releases, idempotence, all-or-nothing, and
properties (balance never negative, write-offs never above the total, release restores)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from broker.core.messages import Permit
from broker.core.permits import Citation, PermitLedger, Problem, Refusal, WriteOff, remaining

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
HOLDER = "NL870012345"


def permit(
    permit_id: str = "P-1",
    total: str = "100",
    *,
    holder: str = HOLDER,
    unit: str = "KGM",
    hs: tuple[str, ...] = ("9601",),
    valid_from: datetime = T0 - timedelta(days=30),
    valid_to: datetime = T0 + timedelta(days=30),
) -> Permit:
    return Permit(
        permit_id=permit_id,
        type_code="C400",
        issuing_agency="wildlife",
        holder_id=holder,
        hs_prefixes=hs,
        unit=unit,
        total_quantity=Decimal(total),
        valid_from=valid_from,
        valid_to=valid_to,
        issued_at=valid_from,
    )


def cite(
    permit_id: str = "P-1",
    quantity: str | None = "10",
    *,
    item: int = 1,
    hs: str = "960110",
    net_mass: str = "4.5",
    supplementary: tuple[str, str] | None = None,
) -> Citation:
    return Citation(
        permit_id=permit_id,
        type_code="C400",
        item_sequence=item,
        hs_code=hs,
        quantity_used=None if quantity is None else Decimal(quantity),
        net_mass_kg=Decimal(net_mass),
        supplementary_quantity=Decimal(supplementary[0]) if supplementary else None,
        supplementary_unit=supplementary[1] if supplementary else None,
    )


def review(
    ledger: PermitLedger,
    *citations: Citation,
    submission: str = "sub-1",
    version: int = 1,
    holder: str | None = HOLDER,
    at: datetime = T0,
):
    return ledger.settle_review(
        citations, holder_id=holder, submission_id=submission, version=version, at=at
    )


# --- checks ---------------------------------------------------------------------------------


def refusal_of(ledger: PermitLedger, citation: Citation, **kwargs: object) -> Refusal:
    settlement = review(ledger, citation, **kwargs)  # type: ignore[arg-type]
    (refusal,) = settlement.refusals
    assert settlement.written_off == []
    return refusal


def test_an_unknown_permit_is_refused_and_names_the_permit() -> None:
    refusal = refusal_of(PermitLedger([permit()]), cite("P-404"))
    assert refusal.problem is Problem.UNKNOWN
    assert not refusal.problem.rejects  # cite the right number in an amendment
    assert "permit P-404 (C400) cited on item 1 is not a permit this agency issued" in (
        refusal.message
    )


def test_an_expired_permit_is_refused_with_its_expiry() -> None:
    ledger = PermitLedger([permit(valid_to=T0 - timedelta(days=1))])
    refusal = refusal_of(ledger, cite())
    assert refusal.problem is Problem.EXPIRED
    assert "expired on 2026-11-29 08:00 UTC" in refusal.message
    assert "received (2026-11-30 08:00 UTC)" in refusal.message
    assert ledger.remaining("P-1") == 100


def test_a_permit_not_valid_yet_is_refused() -> None:
    ledger = PermitLedger([permit(valid_from=T0 + timedelta(hours=1))])
    assert refusal_of(ledger, cite()).problem is Problem.NOT_YET_VALID


def test_another_holders_permit_is_rejected() -> None:
    refusal = refusal_of(PermitLedger([permit()]), cite(), holder="NL999999999")
    assert refusal.problem is Problem.FOREIGN
    assert refusal.problem.rejects
    assert "is held by NL870012345, not by NL999999999" in refusal.message


def test_a_permit_for_other_goods_is_rejected() -> None:
    refusal = refusal_of(PermitLedger([permit(hs=("0506",))]), cite(hs="960110"))
    assert refusal.problem is Problem.OTHER_GOODS
    assert "covers HS 0506, not item 1's HS 960110" in refusal.message


def test_over_use_is_rejected_with_what_is_left() -> None:
    ledger = PermitLedger([permit(total="25")])
    assert review(ledger, cite(quantity="20"), submission="a").accepted
    refusal = refusal_of(ledger, cite(quantity="10"), submission="b")
    assert refusal.problem is Problem.OVERUSE
    assert "would write off 10 KGM but only 5 of 25 KGM are left" in refusal.message
    assert ledger.remaining("P-1") == 5


def test_the_quantity_comes_from_the_item_when_not_stated() -> None:
    ledger = PermitLedger([permit(), permit("P-2", unit="NAR")])
    settlement = review(ledger, cite(quantity=None, net_mass="4.5"))
    assert [w.quantity for w in settlement.written_off] == [Decimal("4.5")]  # KGM: net mass
    settlement = review(
        ledger, cite("P-2", quantity=None, supplementary=("3", "NAR")), submission="s2"
    )
    assert [w.quantity for w in settlement.written_off] == [Decimal("3")]  # same unit
    refusal = refusal_of(ledger, cite("P-2", quantity=None), submission="s3")
    assert refusal.problem is Problem.NO_QUANTITY
    assert "state the quantity written off (quantity_used) in NAR" in refusal.message


# --- write-off, amendment, withdrawal -------------------------------------------------------


def test_a_write_off_is_recorded_and_explained() -> None:
    ledger = PermitLedger([permit()])
    settlement = review(ledger, cite(quantity="10"))
    (write_off,) = settlement.written_off
    assert write_off.explain() == (
        "permit P-1 (C400): item 1 writes off 10 KGM; 90 of 100 KGM left"
    )
    assert settlement.changed == {"P-1"}
    (usage,) = ledger.get("P-1").usages  # type: ignore[union-attr]
    assert (usage.submission_id, usage.version, usage.item_sequence) == ("sub-1", 1, 1)
    assert usage.released_at is None


def test_the_same_request_twice_writes_off_once() -> None:
    ledger = PermitLedger([permit()])
    review(ledger, cite(quantity="10"))
    again = review(ledger, cite(quantity="10"))
    assert again.accepted
    assert [w.repeated for w in again.written_off] == [True]
    assert again.changed == set()
    assert ledger.remaining("P-1") == 90


def test_a_version_is_all_or_nothing() -> None:
    """Item 1 fits, item 2 does not: neither stays written off, both are reported."""
    ledger = PermitLedger([permit(total="15"), permit("P-2", holder="NL1")])
    settlement = review(
        ledger, cite(quantity="10"), cite(quantity="10", item=2), cite("P-2", item=3)
    )
    assert [r.problem for r in settlement.refusals] == [Problem.OVERUSE, Problem.FOREIGN]
    assert settlement.written_off == []
    assert settlement.changed == set()
    assert ledger.remaining("P-1") == 15
    assert ledger.get("P-1").usages == ()  # type: ignore[union-attr]


def test_an_amendment_releases_the_old_write_off_and_applies_the_new() -> None:
    ledger = PermitLedger([permit()])
    review(ledger, cite(quantity="30"), version=1)
    settlement = review(ledger, cite(quantity="20"), version=2, at=T0 + timedelta(hours=1))
    assert [r.usage.quantity for r in settlement.released] == [Decimal("30")]
    assert settlement.released[0].usage.release_reason == "replaced by version 2"
    assert ledger.remaining("P-1") == 80
    # The old version's request, re-delivered after the new one: it changes nothing.
    stale = review(ledger, cite(quantity="30"), version=1)
    assert stale.superseded and stale.changed == set()
    assert ledger.remaining("P-1") == 80


def test_a_refused_amendment_still_releases_the_version_it_replaces() -> None:
    ledger = PermitLedger([permit()])
    review(ledger, cite(quantity="30"), version=1)
    settlement = review(ledger, cite(quantity="300"), version=2)
    assert [r.problem for r in settlement.refusals] == [Problem.OVERUSE]
    assert ledger.remaining("P-1") == 100
    assert settlement.changed == {"P-1"}  # the release must be persisted


def test_a_withdrawal_gives_everything_back() -> None:
    ledger = PermitLedger([permit(), permit("P-2")])
    review(ledger, cite(quantity="30"), cite("P-2", quantity="5", item=2), version=2)
    settlement = ledger.settle_withdrawal(
        submission_id="sub-1", version=3, reason="version 3: cancelled", at=T0
    )
    assert settlement.changed == {"P-1", "P-2"}
    assert {r.usage.release_reason for r in settlement.released} == {"version 3: cancelled"}
    assert ledger.remaining("P-1") == ledger.remaining("P-2") == 100
    # Idempotent: a second withdrawal finds nothing to release.
    assert (
        ledger.settle_withdrawal(submission_id="sub-1", version=3, reason="again", at=T0).changed
        == set()
    )


def test_a_withdrawal_of_an_older_version_keeps_the_newer_write_off() -> None:
    ledger = PermitLedger([permit()])
    review(ledger, cite(quantity="30"), version=2)
    ledger.settle_withdrawal(submission_id="sub-1", version=1, reason="rejected", at=T0)
    assert ledger.remaining("P-1") == 70


def test_re_issuing_a_permit_keeps_its_write_offs() -> None:
    ledger = PermitLedger([permit()])
    review(ledger, cite(quantity="30"))
    ledger.issue(permit(total="200"))
    assert ledger.remaining("P-1") == 170


def test_a_restored_ledger_equals_the_original() -> None:
    ledger = PermitLedger([permit(), permit("P-2")])
    review(ledger, cite(quantity="30"), submission="a")
    review(ledger, cite("P-2", quantity="30"), submission="b", version=2)
    twin = PermitLedger(ledger.permits())
    assert twin.permits() == ledger.permits()
    assert twin.latest_version("b") == 2
    stale = review(twin, cite("P-2", quantity="30"), submission="b", version=1)
    assert stale.superseded


# --- properties -------------------------------------------------------------------------------

quantities = st.integers(min_value=0, max_value=60).map(Decimal)
operations = st.lists(
    st.one_of(
        st.tuples(
            st.just("review"),
            st.sampled_from(["s1", "s2", "s3", "s4"]),
            st.integers(min_value=1, max_value=3),
            st.lists(st.tuples(st.sampled_from(["P-1", "P-2"]), quantities), max_size=3),
        ),
        st.tuples(
            st.just("withdraw"),
            st.sampled_from(["s1", "s2", "s3", "s4"]),
            st.integers(min_value=1, max_value=3),
            st.just([]),
        ),
    ),
    max_size=40,
)


def _apply(ledger: PermitLedger, operation: tuple[str, str, int, list[tuple[str, Decimal]]]):
    kind, submission, version, cited = operation
    if kind == "withdraw":
        return ledger.settle_withdrawal(
            submission_id=submission, version=version, reason="withdrawn", at=T0
        )
    citations = [
        cite(permit_id, str(quantity), item=n) for n, (permit_id, quantity) in enumerate(cited, 1)
    ]
    return review(ledger, *citations, submission=submission, version=version)


@settings(max_examples=300, deadline=None)
@given(operations)
def test_balances_never_go_negative_and_never_exceed_the_total(ops) -> None:  # type: ignore[no-untyped-def]
    ledger = PermitLedger([permit(total="100"), permit("P-2", total="50")])
    for operation in ops:
        _apply(ledger, operation)
        for current in ledger.permits():
            active = sum((u.quantity for u in current.usages if u.released_at is None), Decimal(0))
            assert 0 <= remaining(current) <= current.total_quantity
            assert active <= current.total_quantity
            # One active write-off per (submission, item) at most: amendments replace.
            keys = [(u.submission_id, u.item_sequence) for u in current.usages if not u.released_at]
            assert len(keys) == len(set(keys))
        # Restoring from the persisted records gives the same ledger.
        assert PermitLedger(ledger.permits()).permits() == ledger.permits()


@settings(max_examples=200, deadline=None)
@given(operations)
def test_withdrawing_every_submission_restores_every_balance(ops) -> None:  # type: ignore[no-untyped-def]
    ledger = PermitLedger([permit(total="100"), permit("P-2", total="50")])
    for operation in ops:
        _apply(ledger, operation)
    for submission in ("s1", "s2", "s3", "s4"):
        ledger.settle_withdrawal(submission_id=submission, version=3, reason="end", at=T0)
    assert ledger.remaining("P-1") == 100
    assert ledger.remaining("P-2") == 50


@settings(max_examples=200, deadline=None)
@given(st.permutations(range(20)), st.integers(min_value=0, max_value=19))
def test_twenty_declarations_of_ten_against_a_hundred_exactly_ten_pass(
    order: list[int], replayed: int
) -> None:
    """Whatever the order (and with one request re-delivered), exactly 10 write-offs fit."""
    ledger = PermitLedger([permit(total="100")])
    outcomes: dict[int, bool] = {}
    for n in [*order, order[replayed]]:
        settlement = review(ledger, cite(quantity="10"), submission=f"d{n}")
        outcomes.setdefault(n, settlement.accepted)
        assert settlement.accepted == outcomes[n]  # a replay answers as the first time
    assert sum(outcomes.values()) == 10
    assert ledger.remaining("P-1") == 0
    assert [n for n in order if outcomes[n]] == order[:10]  # first come, first served


def test_write_off_returns_a_refusal_not_a_negative_balance() -> None:
    ledger = PermitLedger([permit(total="5")])
    outcome = ledger.write_off(cite(quantity="6"), "s", 1, T0)
    assert isinstance(outcome, Refusal) and outcome.problem is Problem.OVERUSE
    assert isinstance(ledger.write_off(cite(quantity="5"), "s", 1, T0), WriteOff)
    assert ledger.remaining("P-1") == 0

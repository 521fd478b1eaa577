"""The gateway's pure parts, without a broker: the read model's memory bound and change rule,
webhook signatures, the dispatcher's commit bookkeeping, the idempotency store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from broker.core.messages import Decision, Outcome, Submission, SubmissionKind
from broker.gateway.delivery import OffsetTracker
from broker.gateway.idempotency import IdempotencyStore, StoredAnswer, request_fingerprint
from broker.gateway.read_model import ReadModel
from broker.gateway.webhooks import sign, verify
from broker.runtime.transport import TopicPartition

T0 = datetime(2026, 11, 30, 8, 0, tzinfo=UTC)
SHA = "0" * 64


def cancellation(sid: str, at: datetime, version: int = 2) -> Submission:
    return Submission(
        submission_id=sid,
        version=version,
        kind=SubmissionKind.CANCELLATION,
        trader_id="T",
        channel="http",
        received_at=at,
        payload_sha256=SHA,
        reason="r",
    )


def decision(
    sid: str, at: datetime, *, final: bool, outcome: Outcome = Outcome.RELEASED, version: int = 1
) -> Decision:
    return Decision(
        decision_id=f"{sid}-{version}-{final}-{outcome.value}",
        submission_id=sid,
        version=version,
        trader_id="T",
        outcome=outcome,
        final=final,
        decided_at=at,
        payload_sha256=SHA,
    )


def test_finished_submissions_are_forgotten_after_retention_and_beyond_the_cap() -> None:
    now = T0 + timedelta(days=10)
    model = ReadModel(clock=lambda: now, finished_retention_s=86400, max_finished=2)
    model.apply_decision(decision("old", T0, final=True))  # finished 10 days ago
    model.apply_decision(decision("open", T0, final=False, outcome=Outcome.PENDING))
    for n in range(3):
        model.apply_decision(decision(f"recent-{n}", now - timedelta(minutes=3 - n), final=True))
    model.apply_submission(cancellation("cancelled", now))
    assert model.evict() == 3
    assert model.get("old") is None and model.get("recent-0") is None
    assert model.get("recent-1") is None  # the cap keeps the two most recently finished
    assert model.get("open") is not None, "open submissions are always kept"
    assert model.get("recent-2") is not None and model.get("cancelled") is not None


def test_changes_are_refused_after_a_final_decision_or_a_cancellation() -> None:
    model = ReadModel(clock=lambda: T0, finished_retention_s=60, max_finished=10)
    model.apply_decision(decision("s", T0, final=False, outcome=Outcome.DOCUMENTS_REQUIRED))
    entry = model.get("s")
    assert entry is not None and entry.change_refused_because() is None
    model.apply_decision(decision("s", T0, final=True, outcome=Outcome.REJECTED))
    assert "final decision (REJECTED)" in (entry.change_refused_because() or "")
    model.apply_submission(cancellation("c", T0))
    refused = model.get("c")
    assert refused is not None and "cancelled" in (refused.change_refused_because() or "")


def test_an_older_or_repeated_decision_changes_nothing() -> None:
    model = ReadModel(clock=lambda: T0, finished_retention_s=60, max_finished=10)
    newer = decision("s", T0, final=False, outcome=Outcome.PENDING, version=2)
    assert model.apply_decision(newer)
    assert not model.apply_decision(newer)
    assert not model.apply_decision(decision("s", T0, final=True, version=1))
    entry = model.get("s")
    assert entry is not None and entry.decision == newer


def test_signatures_verify_only_with_the_secret_and_a_fresh_timestamp() -> None:
    header = sign("whsec_1", b'{"a":1}', 1_800_000_000)
    assert verify("whsec_1", b'{"a":1}', header, now=1_800_000_010)
    assert not verify("whsec_2", b'{"a":1}', header, now=1_800_000_010)
    assert not verify("whsec_1", b'{"a":2}', header, now=1_800_000_010)
    assert not verify("whsec_1", b'{"a":1}', header, now=1_800_001_000)
    assert not verify("whsec_1", b'{"a":1}', "garbage", now=1_800_000_010)


def test_offsets_are_committed_only_past_what_every_receiver_got() -> None:
    tp = TopicPartition("sw.decisions", 0)
    tracker = OffsetTracker()
    tracker.add(tp, 0, 2)
    tracker.add(tp, 1, 0)
    tracker.add(tp, 2, 1)
    assert tracker.take_committable() == {}
    tracker.done(tp, 2)
    tracker.done(tp, 0)
    assert tracker.take_committable() == {}
    tracker.done(tp, 0)
    assert tracker.take_committable() == {tp: 3}


def test_idempotency_answers_expire_and_are_capped() -> None:
    now = [T0]
    store = IdempotencyStore(clock=lambda: now[0], ttl_s=60, max_keys=2)
    fingerprint = request_fingerprint("POST", "/v1/submissions", "", b"{}")
    assert fingerprint != request_fingerprint("POST", "/v1/submissions", "", b"{ }")
    for key in ("a", "b", "c"):
        store.put("T", key, StoredAnswer(fingerprint, 202, b"{}", now[0]))
    assert store.get("T", "a") is None and store.get("T", "c") is not None
    assert store.get("U", "c") is None, "keys are per trader"
    now[0] += timedelta(seconds=61)
    assert store.get("T", "c") is None

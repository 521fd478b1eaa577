"""The trader API over real HTTP on the embedded broker: submit → final decision, idempotent
retries, isolation between traders, amendment and cancellation with their rule."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
import pytest
from gateway_stack import KEY_B, TRADER_A, Stack, beef, body

from broker.core.ids import submission_id_for
from broker.core.messages import Submission

pytestmark = pytest.mark.kafka

Problem = Callable[[httpx.Response, int], dict[str, Any]]


async def submissions_on_topic(stack: Stack) -> list[Submission]:
    app = stack.app
    found = []
    for partition in range(await app.transport.partitions_for(app.topics.submissions)):
        for record in await app.transport.read_partition(app.topics.submissions, partition):
            found.append(app.codec.decode(record.value or b"", Submission))
    return found


async def test_submit_then_follow_to_the_final_decision(stack: Stack) -> None:
    async with stack.client() as client:
        response = await client.post("/v1/submissions", content=body(beef("BEEF-E2E-1")))
        assert response.status_code == 202, response.text
        accepted = response.json()
        sid = submission_id_for(TRADER_A, "BEEF-E2E-1")
        assert accepted == {
            "submission_id": sid,
            "version": 1,
            "kind": "NEW",
            "status_url": f"/v1/submissions/{sid}",
        }
        assert response.headers["location"] == accepted["status_url"]
        # Acknowledged means durable: the record is on the topic when the 202 arrives.
        assert [s.submission_id for s in await submissions_on_topic(stack)] == [sid]

        view = await stack.decision(client, sid)
    decision = view["decision"]
    assert decision["outcome"] == "RELEASED" and decision["final"] is True
    agencies = {line["agency"]: line for line in decision["agencies"]}
    assert set(agencies) == {"customs", "veterinary", "food"}
    assert all(line["status"] == "CLEARED" and line["answered_at"] for line in agencies.values())
    assert all(line["reasons"] for line in agencies.values())
    assert view["lrn"] == "BEEF-E2E-1" and view["version"] == 1
    assert view["versions"][0]["kind"] == "NEW"
    assert set(view["versions"][0]["agencies"]) == {"customs", "veterinary", "food"}
    assert view["changes_allowed"] is False and "final decision" in view["changes_refused_because"]


async def test_a_retry_with_the_same_idempotency_key_creates_nothing(
    stack: Stack, problem: Problem
) -> None:
    payload = body(beef("BEEF-IDEM-1"))
    async with stack.client() as client:
        headers = {"Idempotency-Key": "7b0c3f0e-retry-1"}
        first = await client.post("/v1/submissions", content=payload, headers=headers)
        again = await client.post("/v1/submissions", content=payload, headers=headers)
        assert first.status_code == again.status_code == 202
        assert again.content == first.content
        assert again.headers["idempotent-replayed"] == "true"

        other = await client.post(
            "/v1/submissions", content=body(beef("BEEF-IDEM-2")), headers=headers
        )
        assert "another method, path or body" in problem(other, 409)["detail"]

        # Without a key, the LRN still names the submission: the same body answers the same.
        same_lrn = await client.post("/v1/submissions", content=payload)
        assert same_lrn.status_code == 202 and same_lrn.json() == first.json()
        changed = beef("BEEF-IDEM-1")
        changed["invoice"]["amount"] = "1.00"
        conflict = problem(await client.post("/v1/submissions", content=body(changed)), 409)
        assert conflict["submission_id"] == first.json()["submission_id"]
        assert conflict["status_url"] == first.json()["status_url"]
    assert len(await submissions_on_topic(stack)) == 1
    replays = stack.app.metrics.registry.get_sample_value("swb_http_idempotent_replays_total")
    assert replays == 1


async def test_traders_need_a_key_and_see_only_their_own(stack: Stack, problem: Problem) -> None:
    async with stack.client() as a, stack.client(KEY_B) as b, stack.client(None) as anonymous:
        sid = (await a.post("/v1/submissions", content=body(beef("BEEF-ISO-1")))).json()[
            "submission_id"
        ]
        unauthorized = await anonymous.get(f"/v1/submissions/{sid}")
        problem(unauthorized, 401)
        assert unauthorized.headers["www-authenticate"].startswith("Bearer")
        problem(await anonymous.post("/v1/submissions", content=body(beef("X-1"))), 401)
        wrong = await anonymous.get(f"/v1/submissions/{sid}", headers={"X-API-Key": "nope"})
        problem(wrong, 401)
        bearer = await anonymous.get(
            f"/v1/submissions/{sid}", headers={"Authorization": "Bearer key-trader-a-0123456789"}
        )
        assert bearer.status_code == 200

        unknown = problem(await b.get("/v1/submissions/sub-000000000000000000000000"), 404)
        others = problem(await b.get(f"/v1/submissions/{sid}"), 404)
        assert others["title"] == unknown["title"]
        problem(await b.put(f"/v1/submissions/{sid}", content=body(beef("BEEF-ISO-1"))), 404)
        problem(await b.delete(f"/v1/submissions/{sid}"), 404)
        problem(await b.get(f"/v1/submissions/{sid}/events"), 404)

        # The same LRN from another trader is another submission.
        own = await b.post("/v1/submissions", content=body(beef("BEEF-ISO-1")))
        assert own.status_code == 202 and own.json()["submission_id"] != sid
        assert (await a.get(f"/v1/submissions/{sid}")).status_code == 200


async def test_amend_until_final_then_409_with_the_rule(stack: Stack, problem: Problem) -> None:
    async with stack.client() as client:
        incomplete = body(beef("BEEF-AMEND-1", with_health_certificate=False))
        sid = (await client.post("/v1/submissions", content=incomplete)).json()["submission_id"]
        view = await stack.decision(client, sid, final=False, outcome="DOCUMENTS_REQUIRED")
        documents = view["decision"]["documents_required"]
        assert [(d["agency"], d["type_code"]) for d in documents] == [("veterinary", "N853")]
        assert view["changes_allowed"] is True

        other_lrn = problem(
            await client.put(f"/v1/submissions/{sid}", content=body(beef("BEEF-OTHER"))), 422
        )
        assert other_lrn["errors"][0]["field"] == "lrn"

        amended = await client.put(f"/v1/submissions/{sid}", content=body(beef("BEEF-AMEND-1")))
        assert amended.status_code == 202, amended.text
        assert amended.json()["version"] == 2 and amended.json()["kind"] == "AMENDMENT"
        view = await stack.decision(client, sid, version=2)
        assert view["decision"]["outcome"] == "RELEASED"
        assert [v["kind"] for v in view["versions"]] == ["NEW", "AMENDMENT"]

        late = problem(
            await client.put(
                f"/v1/submissions/{sid}",
                content=body(beef("BEEF-AMEND-1", with_health_certificate=False)),
            ),
            409,
        )
        assert "final decision (RELEASED)" in late["detail"] and late["rule"]
        problem(await client.delete(f"/v1/submissions/{sid}"), 409)


async def test_cancel_then_no_more_changes(stack: Stack, problem: Problem) -> None:
    async with stack.client() as client:
        incomplete = body(beef("BEEF-CANCEL-1", with_health_certificate=False))
        sid = (await client.post("/v1/submissions", content=incomplete)).json()["submission_id"]
        await stack.decision(client, sid, final=False, outcome="DOCUMENTS_REQUIRED")

        cancelled = await client.delete(
            f"/v1/submissions/{sid}", params={"reason": "goods sold en route"}
        )
        assert cancelled.status_code == 202, cancelled.text
        assert cancelled.json()["version"] == 2 and cancelled.json()["kind"] == "CANCELLATION"
        view = await stack.decision(client, sid, version=2, outcome="CANCELLED")
        assert view["cancelled"] is True
        assert [v["kind"] for v in view["versions"]] == ["NEW", "CANCELLATION"]

        refused = problem(
            await client.put(f"/v1/submissions/{sid}", content=body(beef("BEEF-CANCEL-1"))), 409
        )
        assert "cancelled" in refused["detail"]
        problem(await client.delete(f"/v1/submissions/{sid}"), 409)


async def test_invalid_unknown_and_oversized_bodies_are_problems(
    stack: Stack, problem: Problem
) -> None:
    async with stack.client() as client:
        broken = beef("BEEF-BAD-1")
        broken["items"][0]["hs_code"] = "12"
        broken["colour"] = "red"
        invalid = problem(await client.post("/v1/submissions", content=body(broken)), 422)
        fields = {error["field"] for error in invalid["errors"]}
        assert {"items.0.hs_code", "colour"} <= fields
        unknown = next(e for e in invalid["errors"] if e["field"] == "colour")
        assert "unknown field" in unknown["message"]

        problem(await client.post("/v1/submissions", content=b"{not json"), 422)
        huge = b"{" + b" " * (stack.app.settings.gateway.max_body_bytes + 1) + b"}"
        problem(await client.post("/v1/submissions", content=huge), 413)

        async def chunks() -> Any:
            for _ in range(2048):
                yield b" " * 1024

        problem(await client.post("/v1/submissions", content=chunks()), 413)
    assert await submissions_on_topic(stack) == []

"""The REST bridge on the in-memory transport, with the agency's endpoint played by an httpx
`MockTransport` (httpx's own fake of its transport interface) and the callback endpoint served
for real on a loopback port."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from broker.cli import main
from broker.core.messages import AgencyStatus
from broker.runtime.dlq import REASON, header
from broker.settings import BridgeSettings
from connectors.errors import AgencyUnavailable, RequestRefused
from connectors.rest import BreakerState, CircuitBreaker, RestBridge
from connectors.rest.endpoint import AgencyEndpoint
from connectors.rest.wire import classify_reply
from connectors.sdk import ConnectorFactory
from connectors.testing import ConnectorHarness, review_request, withdrawal_of

TOKEN = "s3cret-callback-token"


def settings(**overrides: Any) -> BridgeSettings:
    values: dict[str, Any] = {
        "url": "http://food.agency.test/swb/requests",
        "auth_header": "X-Api-Key",
        "auth_value": "food-key",
        "timeout_s": 0.5,
        "retry_initial_s": 0.001,
        "retry_max_s": 0.01,
        "breaker_failures": 1000,
        "breaker_reset_s": 0.05,
    }
    values.update(overrides)
    return BridgeSettings(**values)


class Agency:
    """The agency's HTTP endpoint: answers with `reply(request_json)`; records what it saw."""

    def __init__(self, reply: Callable[[dict[str, Any]], httpx.Response]) -> None:
        self.reply = reply
        self.calls: list[httpx.Request] = []
        self._called = asyncio.Event()

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls.append(request)
        self._called.set()
        return self.reply(json.loads(request.content))

    async def called(self, times: int) -> None:
        async with asyncio.timeout(5):
            while len(self.calls) < times:
                self._called.clear()
                await self._called.wait()

    @property
    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self)


def clears(body: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"status": "CLEARED", "reasons": ["no objection"]})


def bridge_harness(agency: Agency, **overrides: Any) -> ConnectorHarness:
    def build(factory: ConnectorFactory) -> RestBridge:
        return RestBridge("food", settings(**overrides), factory, http_transport=agency.transport)

    return ConnectorHarness("food", build=build, graceful_timeout_s=0.05)


# --- the HTTP contract, pure ---------------------------------------------------------------


def test_classify_reply() -> None:
    body = json.dumps([{"status": "INSPECTION"}, {"status": "CLEARED", "sequence": 2}]).encode()
    answers = classify_reply(200, body, None).answers
    assert [a.status for a in answers] == [AgencyStatus.INSPECTION, AgencyStatus.CLEARED]
    assert classify_reply(202, b"", None).accepted_only
    assert classify_reply(409, b"duplicate", None).accepted_only
    with pytest.raises(AgencyUnavailable) as unavailable:
        classify_reply(503, b"maintenance", "7")
    assert unavailable.value.retry_after_s == 7
    with pytest.raises(AgencyUnavailable, match="credentials"):
        classify_reply(401, b"", None)
    with pytest.raises(RequestRefused) as refused:
        classify_reply(422, b"unknown HS code", None)
    assert refused.value.reason == "agency-refused"
    with pytest.raises(RequestRefused) as invalid:
        classify_reply(200, b'{"status": "MAYBE"}', None)
    assert invalid.value.reason == "agency-answer-invalid"


def test_breaker_opens_after_threshold_and_one_trial_closes_it() -> None:
    breaker = CircuitBreaker(failure_threshold=2, reset_timeout_s=10)
    assert breaker.admit(0) == 0
    breaker.failed(0)
    assert breaker.state is BreakerState.CLOSED
    breaker.failed(1)
    assert breaker.state is BreakerState.OPEN
    assert breaker.admit(5) == pytest.approx(6)
    assert breaker.admit(11) == 0  # the trial
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.admit(11) == 10  # others wait for the trial's verdict
    breaker.failed(12)
    assert breaker.state is BreakerState.OPEN
    assert breaker.admit(22) == 0
    breaker.succeeded()
    assert breaker.state is BreakerState.CLOSED and breaker.failures == 0


# --- the endpoint client -------------------------------------------------------------------


async def test_endpoint_sends_json_auth_and_idempotency_key() -> None:
    agency = Agency(clears)
    request = review_request("food", "S-1")
    async with AgencyEndpoint(settings(), transport=agency.transport) as endpoint:
        reply = await endpoint.deliver(request, "http://bridge.test/v1/answers")
    (call,) = agency.calls
    assert call.method == "POST" and str(call.url) == "http://food.agency.test/swb/requests"
    assert call.headers["X-Api-Key"] == "food-key"
    assert call.headers["Idempotency-Key"] == request.request_id
    assert call.headers["X-SWB-Callback-URL"] == "http://bridge.test/v1/answers"
    assert json.loads(call.content)["submission_id"] == "S-1"
    assert reply.answers[0].status is AgencyStatus.CLEARED


async def test_endpoint_retries_outages_timeouts_and_refused_connections() -> None:
    failures: list[Callable[[], httpx.Response]] = [
        lambda: httpx.Response(503, headers={"Retry-After": "0"}),
        lambda: httpx.Response(429),
    ]

    async def flaky(request: httpx.Request) -> httpx.Response:
        attempt = len(agency_calls)
        agency_calls.append(request)
        if attempt == 0:
            raise httpx.ConnectError("connection refused", request=request)
        if attempt == 1:
            await asyncio.sleep(5)  # longer than timeout_s: the attempt is abandoned
        if attempt - 2 < len(failures):
            return failures[attempt - 2]()
        return httpx.Response(200, json={"status": "CLEARED"})

    agency_calls: list[httpx.Request] = []
    async with AgencyEndpoint(
        settings(timeout_s=0.05), transport=httpx.MockTransport(flaky)
    ) as endpoint:
        reply = await endpoint.deliver(review_request("food"))
    assert len(agency_calls) == 5
    assert {c.headers["Idempotency-Key"] for c in agency_calls} == {"NL1-LRN-1:1:food:REVIEW"}
    assert reply.answers[0].status is AgencyStatus.CLEARED


async def test_open_breaker_spares_a_dead_endpoint() -> None:
    """Down for 0.3 s, retrying every millisecond: without the breaker, hundreds of calls; with
    it (2 failures, 0.1 s open), the two that open it plus about one trial per 0.1 s."""
    loop = asyncio.get_running_loop()
    up_at = loop.time() + 0.3

    def down_then_up(body: dict[str, Any]) -> httpx.Response:
        if loop.time() < up_at:
            return httpx.Response(503)
        return httpx.Response(200, json={"status": "CLEARED"})

    agency = Agency(down_then_up)
    endpoint = AgencyEndpoint(
        settings(breaker_failures=2, breaker_reset_s=0.1), transport=agency.transport
    )
    async with endpoint:
        reply = await endpoint.deliver(review_request("food"))
    assert reply.answers
    assert 3 <= len(agency.calls) <= 8
    assert endpoint.breaker.state is BreakerState.CLOSED


# --- the bridge as an agency connector -----------------------------------------------------


async def test_synchronous_answer_is_published() -> None:
    agency = Agency(clears)
    async with bridge_harness(agency) as harness:
        await harness.send(review_request("food", "S-1"))
        (answer,) = await harness.responses(1)
    assert (answer.submission_id, answer.agency, answer.status) == ("S-1", "food", "CLEARED")
    assert answer.reasons == ("no objection",)


async def test_withdrawal_is_forwarded_and_publishes_nothing() -> None:
    agency = Agency(lambda body: httpx.Response(204))
    request = review_request("food", "S-1")
    async with bridge_harness(agency) as harness:
        await harness.send(withdrawal_of(request), review_request("food", "S-2"))
        await agency.called(2)
        await harness.stop()
        assert await harness.records(harness.topics.responses("food")) == []
    kinds = [json.loads(c.content)["kind"] for c in agency.calls]
    assert kinds == ["WITHDRAWAL", "REVIEW"]


async def test_refused_request_goes_to_the_dlq() -> None:
    agency = Agency(lambda body: httpx.Response(400, text="package lacks goods items"))
    async with bridge_harness(agency) as harness:
        await harness.send(review_request("food", "S-1"))
        (dead,) = await harness.dead_letters(1)
    assert header(dead, REASON) == "agency-refused"


async def test_failing_endpoint_loses_nothing_across_a_restart() -> None:
    """The endpoint is down: nothing is answered, nothing committed. The bridge stops and
    starts again; once the endpoint is back, the request is answered."""
    up = False
    agency = Agency(lambda body: clears(body) if up else httpx.Response(502))
    async with bridge_harness(agency) as harness:
        await harness.send(review_request("food", "S-1"))
        await agency.called(3)
        await harness.stop()
        assert await harness.records(harness.topics.responses("food")) == []
        up = True
        await harness.start()
        (answer,) = await harness.responses(1)
    assert answer.submission_id == "S-1"


async def test_answer_later_through_the_callback_endpoint() -> None:
    agency = Agency(lambda body: httpx.Response(202))
    options = {"callback_port": 0, "callback_token": TOKEN}
    async with bridge_harness(agency, **options) as harness:
        bridge = harness.agency_under_test
        assert isinstance(bridge, RestBridge) and bridge.callback is not None
        await harness.send(review_request("food", "S-1", version=2))
        await agency.called(1)
        assert agency.calls[0].headers["X-SWB-Callback-URL"] == bridge.callback.url
        answer = {
            "submission_id": "S-1",
            "version": 2,
            "status": "DOCUMENTS_REQUIRED",
            "documents_required": [{"type_code": "C085", "description": "Health certificate"}],
            "answered_at": "2026-11-30T09:00:00Z",
            "sequence": 1,
        }
        auth = {"Authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient() as client:
            url = bridge.callback.url
            anonymous = await client.post(url, json=answer)
            foreign = await client.post(url, json={**answer, "agency": "customs"}, headers=auth)
            accepted = await client.post(url, json=answer, headers=auth)
            health = await client.get(url.replace("/v1/answers", "/healthz"))
        (published,) = await harness.responses(1)
    assert anonymous.status_code == 401
    assert foreign.status_code == 422
    assert foreign.headers["content-type"] == "application/problem+json"
    assert accepted.status_code == 202 and accepted.json() == {"published": 1}
    assert health.json()["breaker"] == "closed"
    assert (published.submission_id, published.version, published.agency) == ("S-1", 2, "food")
    assert published.status is AgencyStatus.DOCUMENTS_REQUIRED
    assert published.documents_required[0].type_code == "C085"


def test_callback_endpoint_needs_a_token() -> None:
    def factory(agency: str, handler: Any) -> Any:
        raise AssertionError("not reached")

    with pytest.raises(ValueError, match="CALLBACK_TOKEN"):
        RestBridge("food", settings(callback_port=0), factory)


def test_swb_bridge_refuses_to_start_without_an_endpoint_or_a_callback_token() -> None:
    env = {"SWB_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9"}
    runner = CliRunner()
    no_url = runner.invoke(main, ["bridge", "food"], env=env)
    assert no_url.exit_code == 2 and "--url" in no_url.output
    no_token = runner.invoke(
        main, ["bridge", "food", "--url", "http://x", "--callback-port", "0"], env=env
    )
    assert no_token.exit_code == 2 and "--callback-token" in no_token.output

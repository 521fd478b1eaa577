"""Scale-out: two `swb run --role aggregator` processes in one consumer group over 4
partitions (the router and the simulated agencies run in the test process). The partitions
are split between them, every submission still gets one final decision, and when one of them
leaves mid-stream the other takes over its partitions and finishes the work."""

from __future__ import annotations

import asyncio
import signal
from collections import defaultdict
from typing import Any

import pytest
from helpers import (
    NO_DOCUMENTS_PROFILE,
    DecisionWatcher,
    Running,
    SwbProcess,
    kafka_settings,
    new_submission,
    sample_variations,
    submit,
    swb_env,
    wait_until,
)

from broker.bootstrap import open_app
from broker.core.declaration import now_utc
from broker.core.messages import Decision
from broker.runtime.memory import partition_for_key

pytestmark = [pytest.mark.kafka, pytest.mark.e2e]

PARTITIONS = 4
ALL_PARTITIONS = set(range(PARTITIONS))
FIRST_WAVE = 80
SECOND_WAVE = 40
THIRD_WAVE = 20


def current(process: SwbProcess) -> set[int]:
    assignments = process.partitions_assigned("aggregator")
    return set(assignments[-1]) if assignments else set()


def split_between(a: SwbProcess, b: SwbProcess) -> bool:
    mine, theirs = current(a), current(b)
    return bool(mine and theirs and not mine & theirs and mine | theirs == ALL_PARTITIONS)


def decided_by(process: SwbProcess) -> set[str]:
    """Submissions the process issued a final decision for (its JSON log lines say so)."""
    return {e["submission_id"] for e in process.logged("decision issued", final=True)}


@pytest.mark.timeout(180)
async def test_two_aggregators_split_the_partitions_and_decide_once(
    kafka_bootstrap: str, topic_prefix: str, swb: Any
) -> None:
    env = swb_env(kafka_bootstrap, topic_prefix, PARTITIONS)
    settings = kafka_settings(kafka_bootstrap, topic_prefix, partitions=PARTITIONS)
    async with open_app(settings) as app:
        now = now_utc()
        declarations = sample_variations(
            FIRST_WAVE + SECOND_WAVE + THIRD_WAVE, app.rules, tag=f"SCALE-{topic_prefix}"
        )
        submissions = [new_submission(d, now=now) for d in declarations]
        first_wave = submissions[:FIRST_WAVE]
        second_wave = submissions[FIRST_WAVE : FIRST_WAVE + SECOND_WAVE]
        third_wave = submissions[FIRST_WAVE + SECOND_WAVE :]

        running = Running()
        decisions = DecisionWatcher(app.transport, app.codec, app.topics)
        running.start("router", app.router())
        running.start("decisions", decisions)
        running.start_agencies(app.simulated_agencies(NO_DOCUMENTS_PROFILE))
        a = swb(["run", "--role", "aggregator"], env, "aggregator A")
        b = swb(["run", "--role", "aggregator"], env, "aggregator B")

        def decided() -> set[str]:
            return {d.submission_id for d in decisions.all() if d.final}

        try:
            await asyncio.gather(a.start(), b.start())
            async with asyncio.timeout(60):
                await running.ready()
                await a.wait_for_log(lambda: split_between(a, b), "A and B split the partitions")
            split = {"A": current(a), "B": current(b)}

            await submit(app, *first_wave)
            async with asyncio.timeout(60):
                await wait_until(
                    lambda: {s.submission_id for s in first_wave} <= decided(),
                    "the first wave is decided",
                    running,
                )
            # Each aggregator decided exactly the submissions of its own partitions.
            assert split_between(a, b), "no rebalance expected while both run"
            for name, process in (("A", a), ("B", b)):
                theirs = {
                    s.submission_id
                    for s in first_wave
                    if partition_for_key(s.submission_id.encode(), PARTITIONS) in split[name]
                }
                assert theirs, f"aggregator {name} owns no submission of the first wave"
                assert decided_by(process) == theirs, name

            # B leaves mid-stream (SIGTERM: it finishes its batch, commits and leaves).
            await submit(app, *second_wave)
            async with asyncio.timeout(60):
                await wait_until(
                    lambda: len(decided() & {s.submission_id for s in second_wave}) >= 5,
                    "the second wave is being decided",
                    running,
                )
                b.send(signal.SIGTERM)
                assert await b.wait() == 0
                await a.wait_for_log(
                    lambda: current(a) == ALL_PARTITIONS, "A takes over all partitions"
                )
                await wait_until(
                    lambda: {s.submission_id for s in second_wave} <= decided(),
                    "the second wave is decided",
                    running,
                )
                # After the take-over A decides for every partition, B's former ones too.
                await submit(app, *third_wave)
                await wait_until(
                    lambda: {s.submission_id for s in submissions} <= decided(),
                    "the third wave is decided",
                    running,
                )
            assert await a.stop() == 0
        finally:
            await running.stop()

        finals: dict[tuple[str, int], list[Decision]] = defaultdict(list)
        for decision in decisions.all():
            if decision.final:
                finals[(decision.submission_id, decision.version)].append(decision)
        assert {sid for sid, _ in finals} == {s.submission_id for s in submissions}
        for key, copies in finals.items():
            # One final decision per version; a re-delivery may only repeat it identically.
            assert all(copy == copies[0] for copy in copies), key
        third = {s.submission_id for s in third_wave}
        assert third <= decided_by(a)
        assert {partition_for_key(sid.encode(), PARTITIONS) for sid in third} & split["B"]

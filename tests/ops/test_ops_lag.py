"""Consumer lag (issue 6.1): end offsets minus committed offsets, per group/topic/partition."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from ops_support import wait_for
from prometheus_client import CollectorRegistry

from broker.errors import TransportError
from broker.runtime.kafka import KafkaTransport
from broker.runtime.lag import KafkaGroupOffsets, LagMonitor, lag_of
from broker.runtime.metrics import Metrics
from broker.runtime.transport import Outgoing, TopicPartition
from broker.settings import KafkaSettings

A0, A1, B0 = TopicPartition("t.a", 0), TopicPartition("t.a", 1), TopicPartition("t.b", 0)


def test_lag_counts_uncommitted_partitions_of_a_topic_the_group_reads() -> None:
    lags = lag_of({A0: 4}, {A0: 10, A1: 3, B0: 7})
    # t.b is another group's business: the group never committed there.
    assert lags == {A0: 6, A1: 3}


def test_lag_is_never_negative() -> None:
    """Tansu's end offset is the last batch's base + 1, which can trail a commit."""
    assert lag_of({A0: 12}, {A0: 10}) == {A0: 0}


class FakeOffsets:
    """A cluster in a dict; `down` makes every request fail as an unreachable cluster would."""

    def __init__(self) -> None:
        self.end = {A0: 10, A1: 5, B0: 2}
        self.commits = {"swb-router": {A0: 7, A1: 5}, "other": {}}
        self.down = False
        self.started = self.stopped = 0
        self.running = False
        self.fail_start = False

    async def start(self) -> None:  # idempotent, as KafkaGroupOffsets
        if self.fail_start:
            raise TransportError("Kafka: could not connect the lag monitor: refused")
        self.started += 0 if self.running else 1
        self.running = True

    async def stop(self) -> None:
        self.stopped += 1 if self.running else 0
        self.running = False

    def _check(self) -> None:
        if self.down:
            raise TransportError("Kafka: could not list consumer groups: connection refused")

    async def groups(self) -> list[str]:
        self._check()
        return list(self.commits)

    async def partitions(self, topics: Sequence[str]) -> list[TopicPartition]:
        self._check()
        return [tp for tp in self.end if tp.topic in topics]

    async def committed(
        self, group: str, partitions: Sequence[TopicPartition]
    ) -> dict[TopicPartition, int]:
        self._check()
        return {tp: o for tp, o in self.commits[group].items() if tp in partitions}

    async def end_offsets(self, partitions: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        self._check()
        return {tp: self.end[tp] for tp in partitions}


async def test_monitor_exports_lag_and_reachability_and_survives_an_outage() -> None:
    registry = CollectorRegistry()
    offsets = FakeOffsets()
    monitor = LagMonitor(offsets, ["t.a", "t.b"], Metrics(registry), interval_s=0.01)

    await monitor.measure()
    lag = {"group": "swb-router", "topic": "t.a"}
    assert registry.get_sample_value("swb_consumer_lag", {**lag, "partition": "0"}) == 3
    assert registry.get_sample_value("swb_consumer_lag", {**lag, "partition": "1"}) == 0
    assert (
        registry.get_sample_value("swb_consumer_lag", {**lag, "partition": "0", "topic": "t.b"})
        is None
    )
    assert registry.get_sample_value("swb_kafka_reachable") == 1

    offsets.down = True
    assert await monitor.measure() == []
    offsets.fail_start = True  # not even connecting: still reported, not raised
    assert await monitor.measure() == []
    offsets.fail_start = False
    assert registry.get_sample_value("swb_kafka_reachable") == 0
    assert registry.get_sample_value("swb_lag_checks_total", {"result": "failed"}) == 2

    offsets.down = False
    offsets.commits["swb-router"][A0] = 10
    stopping = asyncio.Event()
    run = asyncio.create_task(monitor.run(stopping))

    async def caught_up() -> bool:
        return registry.get_sample_value("swb_consumer_lag", {**lag, "partition": "0"}) == 0

    await wait_for(caught_up, timeout_s=5, what="the monitor to see the new commit", poll_s=0.01)
    stopping.set()
    await asyncio.wait_for(run, 5)
    assert registry.get_sample_value("swb_kafka_reachable") == 1
    assert (offsets.started, offsets.stopped) == (1, 1)


async def test_lag_measured_on_a_real_broker(kafka_bootstrap: str, topic_prefix: str) -> None:
    topic = f"{topic_prefix}.submissions"
    group = f"{topic_prefix}-group"
    transport = KafkaTransport(kafka_bootstrap, KafkaSettings())
    async with transport:
        await transport.create_topics([topic], 1)
        # Three single-record batches: Tansu's end offset is exact when batches hold one record.
        for n in range(3):
            await transport.producer().send_batch([Outgoing(topic, b"v%d" % n, key=b"k")])
        consumer = await transport.consumer(group, [topic])
        records = []
        async with asyncio.timeout(30):
            while not records:
                records = await consumer.getmany(timeout_ms=200, max_records=1)
        await consumer.commit({TopicPartition(topic, 0): records[0].offset + 1})

        registry = CollectorRegistry()
        offsets = KafkaGroupOffsets(transport._client_options("lag-test"))
        monitor = LagMonitor(offsets, [topic], Metrics(registry))
        await offsets.start()
        try:
            lags = await monitor.measure()
        finally:
            await offsets.stop()
        await consumer.stop()

    labels = {"group": group, "topic": topic, "partition": "0"}
    assert registry.get_sample_value("swb_consumer_lag", labels) == 2
    assert registry.get_sample_value("swb_kafka_reachable") == 1
    assert {(lag.group, lag.topic) for lag in lags} == {(group, topic)}

"""The export data partner single windows shared with this one, by UCR: what the router links
an import quoting a UCR to (Globally Networked Customs).

Each partner publishes the exports it released for us on
`<partner prefix>.partner.exchange.<our country>` (keyed by UCR, on this cluster or mirrored
here). Every router instance needs every UCR, whatever submissions it routes, so the inbox
reads those topics whole: first what is stored (then `ready` is set), then follows them in a
consumer group of its own. A partner topic that does not exist yet is looked for again every
few seconds. The router never waits for the inbox: it links what has arrived and says when
nothing has.

A record that cannot be decoded, or that names another export country than the partner whose
topic carried it, or another destination than ours, is dead-lettered to our DLQ and not used:
identity is the topic, as for agencies.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from decimal import Decimal

import structlog

from broker.core.codec import Codec
from broker.core.messages import PartnerExport
from broker.core.partner import replaces
from broker.core.topics import Topics
from broker.errors import CodecError, SwbError
from broker.runtime.dlq import dead_letter
from broker.runtime.metrics import Metrics
from broker.runtime.transport import Consumer, Outgoing, Record, Transport
from broker.settings import PartnerSettings

log = structlog.get_logger("swb.partner")

SERVICE = "partner-inbox"
_LOOK_FOR_TOPICS_S = 5.0


class PartnerInbox:
    def __init__(
        self,
        transport: Transport,
        codec: Codec,
        topics: Topics,
        settings: PartnerSettings,
        metrics: Metrics,
    ) -> None:
        self._transport = transport
        self._codec = codec
        self._topics = topics
        self._settings = settings
        self._metrics = metrics
        self._by_ucr: dict[str, PartnerExport] = {}
        # partner topic -> the partner country whose single window writes it
        self._partner_of: dict[str, str] = (
            {
                Topics(prefix).partner_exchange(settings.country): country
                for country, prefix in settings.partners.items()
            }
            if settings.country
            else {}
        )
        self._group_id = f"{topics.prefix}.partner-inbox-{uuid.uuid4().hex[:12]}"
        self.ready = asyncio.Event()

    # -- what the router asks ------------------------------------------------------------

    @property
    def countries(self) -> frozenset[str]:
        """The partner countries this single window exchanges export data with."""
        return frozenset(self._settings.partners) if self._settings.enabled else frozenset()

    @property
    def mass_tolerance(self) -> Decimal:
        return self._settings.mass_tolerance

    @property
    def value_tolerance(self) -> Decimal:
        return self._settings.value_tolerance

    def lookup(self, ucr: str) -> PartnerExport | None:
        return self._by_ucr.get(ucr)

    def __len__(self) -> int:
        return len(self._by_ucr)

    # -- following the partners' topics --------------------------------------------------

    async def run(self, stopping: asyncio.Event) -> None:
        if not self._partner_of:
            self.ready.set()
            await stopping.wait()
            return
        following: set[str] = set()
        consumer: Consumer | None = None
        ends: dict[tuple[str, int], int] = {}
        loop = asyncio.get_running_loop()
        try:
            while not stopping.is_set():
                present = await self._existing_topics()
                if present - following:
                    if consumer is not None:
                        await consumer.stop()
                    ends = await self._load(sorted(present))
                    following = present
                    consumer = await self._transport.consumer(self._group_id, sorted(present))
                    log.info("partner topics followed", topics=sorted(present), known=len(self))
                self.ready.set()
                next_look = loop.time() + _LOOK_FOR_TOPICS_S
                while not stopping.is_set() and loop.time() < next_look:
                    if consumer is None:
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stopping.wait(), _LOOK_FOR_TOPICS_S)
                        break
                    records = await consumer.getmany(timeout_ms=100)
                    fresh = [r for r in records if r.offset >= ends.get((r.topic, r.partition), 0)]
                    await self._apply(fresh)
        finally:
            if consumer is not None:
                await consumer.stop()

    async def _existing_topics(self) -> set[str]:
        present = set()
        for topic in self._partner_of:
            with contextlib.suppress(SwbError):
                await self._transport.partitions_for(topic)
                present.add(topic)
        return present

    async def _load(self, topics: list[str]) -> dict[tuple[str, int], int]:
        """Apply everything stored; the end offset read per partition (the consumer, reading
        from the beginning in its new group, skips what was applied here)."""
        ends: dict[tuple[str, int], int] = {}
        for topic in topics:
            for partition in range(await self._transport.partitions_for(topic)):
                records = await self._transport.read_partition(topic, partition)
                ends[(topic, partition)] = records[-1].offset + 1 if records else 0
                await self._apply(records)
        return ends

    async def _apply(self, records: list[Record]) -> None:
        refused: list[Outgoing] = []
        for record in records:
            problem = self._accept(record)
            if problem is not None:
                reason, message = problem
                log.warning(
                    "partner record refused", topic=record.topic, reason=reason, error=message
                )
                self._metrics.dlq.labels(reason, SERVICE).inc()
                refused.append(dead_letter(self._topics.dlq, record, reason, message, SERVICE))
        if refused:
            await self._transport.producer().send_batch(refused)

    def _accept(self, record: Record) -> tuple[str, str] | None:
        """Keep the record's export data; (reason, message) when it is refused."""
        try:
            export = self._codec.decode(record.value or b"", PartnerExport)
        except CodecError as exc:
            return exc.reason, str(exc)
        partner = self._partner_of.get(record.topic)
        if export.export_country != partner:
            return "partner-mismatch", (
                f"export_country {export.export_country} on {record.topic}, which {partner} writes"
            )
        if export.destination_country != self._settings.country:
            return "partner-mismatch", (
                f"destination {export.destination_country} is not this single window's "
                f"{self._settings.country}"
            )
        if record.key is not None and record.key != export.ucr.encode():
            return "key-mismatch", f"record key {record.key!r} is not the UCR {export.ucr}"
        if replaces(self._by_ucr.get(export.ucr), export):
            self._by_ucr[export.ucr] = export
        return None

"""Partner exchange service: shares each export, once finally released, with the destination
country's single window (Globally Networked Customs, UN/CEFACT Recommendation 36).

Reads `sw.submissions` (the export declarations) and `sw.decisions` (their final releases) in
one consumer group with range assignment: the topics are co-partitioned, so a member sees a
submission's declaration and its decisions. The router marks the exports to share (its plan,
and so the decision, carries `shared_with`: an export quoting a UCR to a partner country), so
every other decision is skipped without being remembered. A released export becomes one
`PartnerExport` on `<prefix>.partner.exchange.<destination>`, keyed by its UCR, written before
the offsets are committed.

Idempotent rather than transactional: a record shared twice (after a crash between the write
and the commit, or a decision published twice) is the same record, and the partner keeps one
per UCR. On assignment the service rebuilds what it needs from the topics themselves: which
exports were shared already (its own partner topics), the export declarations still waiting
for a release, and releases whose declaration it had not read before it stopped, which it
shares then. A decision read before its declaration (a consumer catching up reads topics at
different speeds) waits for the declaration.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict

import structlog

from broker.core.codec import Codec
from broker.core.declaration import Declaration
from broker.core.messages import Decision, Submission
from broker.core.partner import export_record, is_final_release, shared_with
from broker.core.topics import Topics
from broker.errors import CodecError
from broker.runtime.consuming import consume_batches
from broker.runtime.metrics import Metrics
from broker.runtime.transport import Consumer, Outgoing, Record, TopicPartition, Transport
from broker.settings import PartnerSettings

log = structlog.get_logger("swb.partner")

SERVICE = "partner-exchange"
#: Header naming the exporting submission on a shared record (the value names it too).
EXPORT_HEADER = "swb.export.submission_id"
#: Exports remembered as shared, beyond which the oldest are forgotten: only re-deliveries
#: within a run need it (an assignment rebuilds it from the partner topics).
_SHARED_MEMORY = 100_000


class PartnerExchangeService:
    def __init__(
        self,
        transport: Transport,
        codec: Codec,
        topics: Topics,
        settings: PartnerSettings,
        metrics: Metrics,
        *,
        partitions: int,
        group_id: str = "swb-partner-exchange",
    ) -> None:
        self._transport = transport
        self._codec = codec
        self._topics = topics
        self._settings = settings
        self._metrics = metrics
        self._partitions = partitions
        self._group_id = group_id
        # Export declarations waiting for their final release: sid -> (version, declaration).
        self._pending: dict[str, tuple[int, Declaration]] = {}
        # Final releases read before their declaration: sid -> decision.
        self._early: dict[str, Decision] = {}
        self._partition_of: dict[str, int] = {}
        self._shared: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._lock = asyncio.Lock()
        self.ready = asyncio.Event()

    @property
    def outboxes(self) -> list[str]:
        """The topics this single window shares exports on, one per partner country."""
        return [self._topics.partner_exchange(country) for country in self._settings.partners]

    def shared(self, submission_id: str, version: int) -> bool:
        return (submission_id, version) in self._shared

    async def run(self, stopping: asyncio.Event) -> None:
        if not self._settings.enabled:
            log.info("partner exchange off: SWB_PARTNER__COUNTRY and __PARTNERS are not set")
            self.ready.set()
            await stopping.wait()
            return
        await self._transport.create_topics(self.outboxes, self._partitions)
        consumer = await self._transport.consumer(
            self._group_id,
            [self._topics.submissions, self._topics.decisions],
            on_assign=self._restore,
            on_revoke=self._release,
        )
        self.ready.set()
        await consume_batches(
            consumer, stopping, self._lock, lambda records: self._process(consumer, records)
        )

    async def _process(self, consumer: Consumer, records: list[Record]) -> None:
        out: list[Outgoing] = []
        offsets: dict[TopicPartition, int] = {}
        for record in records:
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        # Declarations first: a batch holding both an export and its release shares it now.
        for record in sorted(records, key=lambda r: r.topic != self._topics.submissions):
            self._read(record, out)
        await self._send(out)
        try:
            await consumer.commit(offsets)
        except Exception as exc:  # a rebalance: the records come again, sharing is idempotent
            log.warning("commit failed; records will be redelivered", error=str(exc))

    def _read(self, record: Record, out: list[Outgoing]) -> None:
        """Not ours to refuse: the router and the aggregator dead-letter bad records."""
        try:
            if record.topic == self._topics.submissions:
                submission = self._codec.decode(record.value or b"", Submission)
                self._on_submission(submission, record.partition, out)
            elif record.topic == self._topics.decisions:
                decision = self._codec.decode(record.value or b"", Decision)
                self._on_decision(decision, record.partition, out)
        except CodecError:
            return

    def _on_submission(self, submission: Submission, partition: int, out: list[Outgoing]) -> None:
        sid = submission.submission_id
        if shared_with(submission.declaration, self._settings.partners) is None:
            # Not (or no longer: an amendment may drop the UCR, or a cancellation) shareable.
            self._forget(sid)
            return
        assert submission.declaration is not None
        known = self._pending.get(sid)
        if known is None or submission.version > known[0]:
            self._pending[sid] = (submission.version, submission.declaration)
            self._partition_of[sid] = partition
        early = self._early.get(sid)
        if early is not None:
            self._on_decision(early, partition, out)

    def _on_decision(self, decision: Decision, partition: int, out: list[Outgoing]) -> None:
        sid = decision.submission_id
        if decision.shared_with is None or not decision.final:
            return
        if not is_final_release(decision):  # rejected or cancelled: nothing to share
            self._forget(sid)
            return
        if (sid, decision.version) in self._shared:
            return
        pending = self._pending.get(sid)
        if pending is None or pending[0] != decision.version:
            self._early[sid] = decision  # its declaration has not been read yet
            self._partition_of[sid] = partition
            return
        self._forget(sid)
        export = export_record(pending[1], decision)
        out.append(
            Outgoing(
                self._topics.partner_exchange(decision.shared_with),
                self._codec.encode(export),
                key=export.ucr.encode(),
                headers=((EXPORT_HEADER, sid.encode()),),
            )
        )
        self._remember(sid, decision.version)
        self._metrics.partner_exports.labels(decision.shared_with).inc()
        log.info(
            "export shared with partner",
            submission_id=sid,
            version=decision.version,
            partner=decision.shared_with,
            ucr=export.ucr,
        )

    def _forget(self, sid: str) -> None:
        self._pending.pop(sid, None)
        self._early.pop(sid, None)
        self._partition_of.pop(sid, None)

    def _remember(self, sid: str, version: int) -> None:
        self._shared[(sid, version)] = None
        while len(self._shared) > _SHARED_MEMORY:
            self._shared.popitem(last=False)

    async def _send(self, out: list[Outgoing]) -> None:
        if out:
            await self._transport.producer().send_batch(out)

    # -- partitions ----------------------------------------------------------------------

    async def _restore(self, assigned: set[TopicPartition]) -> None:
        """What was shared, what waits for a release, and releases not shared yet."""
        for topic in self.outboxes:
            for partition in range(await self._transport.partitions_for(topic)):
                for record in await self._transport.read_partition(topic, partition):
                    sid = dict(record.headers).get(EXPORT_HEADER)
                    version = _version_of(self._codec, record)
                    if sid is not None and version is not None:
                        self._remember(sid.decode(errors="replace"), version)
        out: list[Outgoing] = []
        partitions = sorted({tp.partition for tp in assigned})
        for partition in partitions:
            await self._replay(self._topics.submissions, partition, out)
            await self._replay(self._topics.decisions, partition, out)
        await self._send(out)
        log.info(
            "partner exchange partitions assigned",
            partitions=partitions,
            waiting=len(self._pending),
            shared_on_restore=len(out),
        )

    async def _replay(self, topic: str, partition: int, out: list[Outgoing]) -> None:
        for record in await self._transport.read_partition(topic, partition):
            self._read(record, out)

    async def _release(self, revoked: set[TopicPartition]) -> None:
        partitions = {tp.partition for tp in revoked}
        async with self._lock:  # the batch in hand is shared and committed first
            for sid in [s for s, p in self._partition_of.items() if p in partitions]:
                self._forget(sid)


def _version_of(codec: Codec, record: Record) -> int | None:
    try:
        _, export = codec.decode_dict(record.value or b"")
    except CodecError:
        return None
    version = export.get("version")
    return version if isinstance(version, int) else None

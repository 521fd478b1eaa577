"""The composition root: builds the object graph from settings. The CLI, the gateway, the
benchmark and the tests all go through `open_app`."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

import httpx
import structlog
from prometheus_client import CollectorRegistry

from broker.core.codec import Codec
from broker.core.declaration import now_utc
from broker.core.layout import consumer_group
from broker.core.rules import RuleBook, load_rules
from broker.core.topics import Topics
from broker.runtime.aggregator import AggregatorService
from broker.runtime.embedded import EmbeddedBroker
from broker.runtime.kafka import KafkaTransport
from broker.runtime.lag import KafkaGroupOffsets, LagMonitor
from broker.runtime.memory import MemoryTransport
from broker.runtime.metrics import Metrics
from broker.runtime.metrics_server import MetricsServer
from broker.runtime.partner_exchange import PartnerExchangeService
from broker.runtime.partner_inbox import PartnerInbox
from broker.runtime.registry import SchemaRegistryClient
from broker.runtime.router import RouterService
from broker.runtime.transport import Transport
from broker.settings import Settings
from connectors.customs_risk import CustomsRiskAgency, CustomsRiskConfig
from connectors.permits import PermitAgency, PermitConfig
from connectors.rest import RestBridge
from connectors.sdk import AgencyConnector, Handler
from connectors.simulated import SimulatedAgency, SimulationProfile

if TYPE_CHECKING:
    from broker.gateway.service import GatewayService

log = structlog.get_logger("swb")

Clock = Callable[[], datetime]
ROLES = ("router", "aggregator", "gateway")


@dataclass
class App:
    """Everything a process needs, built once. Services are created on demand."""

    settings: Settings
    transport: Transport
    codec: Codec
    rules: RuleBook
    topics: Topics
    metrics: Metrics
    clock: Clock
    bootstrap_servers: str | None = None
    embedded: EmbeddedBroker | None = None
    instance: str = field(default="")
    _partner_inbox: PartnerInbox | None = field(default=None, repr=False)

    def group(self, role: str, agency: str | None = None) -> str:
        """The consumer group a role joins (named after the topic prefix, see layout)."""
        return consumer_group(self.topics, role, agency)[0]

    def router(self, *, group_id: str | None = None) -> RouterService:
        """With partner exchange configured, run `partner_inbox().run` beside it: the
        router links imports to the export data the inbox has read. `group_id`: another
        consumer group, for two single windows sharing one Kafka cluster (as in tests)."""
        return RouterService(
            self.transport,
            self.codec,
            self.rules,
            self.topics,
            self.metrics,
            self.clock,
            group_id=group_id or self.group("router"),
            partner=self.partner_inbox() if self.settings.partner.enabled else None,
        )

    def partner_inbox(self) -> PartnerInbox:
        """The partners' export data by UCR (one per process: the routers share it)."""
        if self._partner_inbox is None:
            self._partner_inbox = PartnerInbox(
                self.transport, self.codec, self.topics, self.settings.partner, self.metrics
            )
        return self._partner_inbox

    def partner_exchange(self, *, group_id: str | None = None) -> PartnerExchangeService:
        """Shares released exports with the partner single windows (settings.partner)."""
        return PartnerExchangeService(
            self.transport,
            self.codec,
            self.topics,
            self.settings.partner,
            self.metrics,
            partitions=self.settings.partitions,
            group_id=group_id or self.group("partner-exchange"),
        )

    def aggregator(self, *, group_id: str | None = None) -> AggregatorService:
        return AggregatorService(
            self.transport,
            self.codec,
            self.topics,
            self.metrics,
            self.clock,
            group_id=group_id or self.group("aggregator"),
            deadline_check_interval_s=self.settings.deadline_check_interval_s,
        )

    def connector(self, agency: str, handler: Handler, **options: Any) -> AgencyConnector:
        """`options` go to AgencyConnector (dead_letters, max_concurrency, ...)."""
        # Half the shutdown budget for in-flight handlers, the rest to publish, commit, close.
        options.setdefault("graceful_timeout_s", self.settings.shutdown_timeout_s / 2)
        options.setdefault("group_id", self.group("agency", agency))
        return AgencyConnector(agency, handler, self.transport, self.codec, self.topics, **options)

    def rest_bridge(
        self, agency: str, *, http_transport: httpx.AsyncBaseTransport | None = None
    ) -> RestBridge:
        """Agency `agency` answered by its HTTP endpoint (settings.bridge)."""
        bridge = self.settings.bridge

        def connector(code: str, handler: Handler) -> AgencyConnector:
            return self.connector(code, handler, dead_letters=bridge.dead_letters)

        return RestBridge(
            agency, bridge, connector, http_transport=http_transport, clock=self.clock
        )

    def simulated_agencies(
        self,
        profile: SimulationProfile,
        agencies: Iterable[str] | None = None,
        *,
        group_prefix: str | None = None,
    ) -> list[SimulatedAgency]:
        """`group_prefix`: consumer groups `<prefix>-<code>` (default: the agencies' own)."""
        codes = list(agencies) if agencies is not None else list(self.topics.agencies)

        def connector(code: str, handler: Handler) -> AgencyConnector:
            group = f"{group_prefix}-{code}" if group_prefix else self.group("agency", code)
            return self.connector(code, handler, group_id=group)

        return [SimulatedAgency(code, connector, profile) for code in codes]

    def customs_risk_agency(self, config: CustomsRiskConfig | None = None) -> CustomsRiskAgency:
        """Customs answering by risk lane (risk profiles as data, AEO relief, random selection)."""
        return CustomsRiskAgency(self.connector, config)

    def permit_agency(self, agency: str, config: PermitConfig | None = None) -> PermitAgency:
        """An agency that issues permits and writes them off (`<prefix>.permits`)."""
        return PermitAgency(
            agency,
            self.connector,
            self.transport,
            self.codec,
            self.topics,
            config,
            clock=self.clock,
        )

    def gateway(self, *, host: str | None = None, port: int | None = None) -> GatewayService:
        """The trader HTTP gateway (imported here: router-only processes never load FastAPI)."""
        from broker.gateway.service import GatewayService

        return GatewayService(self, host=host, port=port)

    def operations(self, roles: Iterable[str]) -> list[Callable[..., Coroutine[Any, Any, None]]]:
        """What an operator needs beside the roles, when SWB_METRICS_PORT is set: the metrics
        endpoint (/metrics, /healthz, /readyz) and the consumer lag monitor. Marks `roles` up."""
        for role in roles:
            self.metrics.role_up.labels(role).set(1)
        port = self.settings.metrics_port
        if port is None:
            return []
        server = MetricsServer(
            self.metrics.registry, self.settings.metrics_host, port, ready=self.transport.ping
        )
        services: list[Callable[..., Coroutine[Any, Any, None]]] = [server.run]
        if isinstance(self.transport, KafkaTransport):
            # The monitor connects like the transport does (same security settings).
            offsets = KafkaGroupOffsets(self.transport._client_options("lag"))
            monitor = LagMonitor(
                offsets,
                self.topics.all(),
                self.metrics,
                interval_s=self.settings.lag_check_interval_s,
            )
            services.append(monitor.run)
        return services


@contextlib.asynccontextmanager
async def open_app(
    settings: Settings,
    *,
    memory: bool = False,
    registry: CollectorRegistry | None = None,
    clock: Clock = now_utc,
    create_topics: bool = True,
) -> AsyncIterator[App]:
    """Connect (starting the embedded broker when no bootstrap servers are configured), create
    the topics, and tear everything down in reverse order on exit, also after a failure.
    `create_topics=False` for agency processes: their ACLs (deploy/acls) allow no topic admin.
    With SWB_SCHEMA_REGISTRY_URL, schemas are registered and Confluent framing is written."""
    topics = Topics(settings.topic_prefix)
    metrics = Metrics(registry)
    rules = load_rules(settings.rules_file)
    async with contextlib.AsyncExitStack() as stack:
        embedded: EmbeddedBroker | None = None
        bootstrap = settings.kafka_bootstrap_servers
        transport: Transport
        if memory:
            transport = MemoryTransport()
        else:
            if not bootstrap:
                embedded = EmbeddedBroker()
                await embedded.start()
                stack.push_async_callback(embedded.stop)
                bootstrap = embedded.bootstrap_servers
                metrics.embedded_broker_up.set(1)
                stack.callback(metrics.embedded_broker_up.set, 0)
                log.info("embedded broker started", bootstrap_servers=bootstrap)
            transport = KafkaTransport(
                bootstrap, settings.kafka, replication_factor=settings.replication_factor
            )
        await transport.start()
        stack.push_async_callback(transport.stop)
        if create_topics:
            await transport.create_topics(topics.all(), settings.partitions)
            await transport.create_topics([topics.permits], settings.partitions)
        codec = Codec()
        if settings.schema_registry_url:
            schema_registry = SchemaRegistryClient(settings.schema_registry_url)
            stack.push_async_callback(schema_registry.aclose)
            codec = await schema_registry.codec_for(topics)
        yield App(
            settings=settings,
            transport=transport,
            codec=codec,
            rules=rules,
            topics=topics,
            metrics=metrics,
            clock=clock,
            bootstrap_servers=bootstrap,
            embedded=embedded,
        )


async def run_until_stopped(
    services: Iterable[Callable[[asyncio.Event], Coroutine[Any, Any, None]]],
    stopping: asyncio.Event,
    *,
    shutdown_timeout_s: float,
) -> None:
    """Run services until `stopping` is set, then give them `shutdown_timeout_s` to finish the
    batch in hand, commit and close; cancel whatever is left after that (a warning, not a
    failure: what was not committed is redone by the next run)."""

    async def watchdog() -> None:
        await stopping.wait()
        await asyncio.sleep(shutdown_timeout_s)
        late = [run for run in runs if not run.done()]
        if late:
            log.warning(
                "services did not stop in time; cancelled",
                timeout_s=shutdown_timeout_s,
                services=[run.get_name() for run in late],
            )
            for run in late:
                run.cancel()

    async with asyncio.TaskGroup() as tasks:
        runs = [
            tasks.create_task(service(stopping), name=getattr(service, "__qualname__", None))
            for service in services
        ]
        guard = tasks.create_task(watchdog())
        await asyncio.wait(runs, return_when=asyncio.ALL_COMPLETED)
        guard.cancel()

"""Configuration, read once from SWB_* environment variables (nested with `__`) and CLI flags."""

from __future__ import annotations

import re
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    """Client settings. Defaults suit the embedded Tansu broker (DESIGN §8) and work on Apache
    Kafka; tune them there (SWB_KAFKA__FETCH_MAX_WAIT_MS=500 saves broker CPU, for example)."""

    # Tansu's fetch long-poll sleeps: end-to-end latency follows fetch_max_wait_ms.
    fetch_max_wait_ms: int = Field(default=10, ge=0)
    max_poll_records: int = Field(default=500, ge=1)
    # Records of one write go out as closed batches, one per partition and at once (no
    # linger: runtime/kafka.py); a batch holds at most this many bytes.
    max_batch_size: int = Field(default=256 * 1024, ge=1024)
    # Tansu cannot do InitProducerId v>0; enable on Apache Kafka if wanted (we dedupe anyway).
    enable_idempotence: bool = False
    request_timeout_ms: int = Field(default=30_000, ge=1000)
    # Tansu holds a JoinGroup for half the session timeout: 6 s (Apache Kafka's minimum)
    # makes a member join in 3 s instead of 5 s.
    session_timeout_ms: int = Field(default=6_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None


class GatewaySettings(BaseModel):
    """The trader HTTP gateway (README "Trader HTTP API"); SWB_GATEWAY__<NAME> overrides."""

    # Larger bodies get 413; a declaration of 999 goods items stays well under 1 MiB.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Seconds a client is told to wait (Retry-After) when the broker did not take a write.
    retry_after_s: int = Field(default=5, ge=1)
    # How long a write may wait for the broker's acknowledgement before the answer is 503.
    # None: the producer's own request timeout (+2 s), so a write called failed is no longer
    # queued in the client. Shorter answers sooner, but such a write may still land later
    # (a retry is safe: ids come from trader + LRN, and the router ignores a re-sent version).
    write_timeout_s: float | None = Field(default=None, gt=0)
    # Read model: finished submissions (final decision or cancelled) are forgotten after this
    # many seconds, and beyond this many, oldest first; open ones are always kept.
    finished_retention_s: float = Field(default=7 * 24 * 3600, gt=0)
    max_finished: int = Field(default=100_000, ge=1)
    # Idempotency-Key answers kept per gateway (also rebuilt from sw.submissions at start).
    idempotency_ttl_s: float = Field(default=24 * 3600, gt=0)
    idempotency_max_keys: int = Field(default=100_000, ge=1)
    sse_keepalive_s: float = Field(default=15.0, gt=0)
    webhook_timeout_s: float = Field(default=10.0, gt=0)
    webhook_max_attempts: int = Field(default=10, ge=1)
    webhook_backoff_initial_s: float = Field(default=1.0, gt=0)
    webhook_backoff_max_s: float = Field(default=600.0, gt=0)
    webhook_queue_size: int = Field(default=10_000, ge=1)
    max_webhooks_per_trader: int = Field(default=10, ge=1)


class BridgeSettings(BaseModel):
    """The REST bridge (`swb bridge CODE`, connectors/rest): forwards an agency's requests to
    its HTTP endpoint and publishes its answers. SWB_BRIDGE__<NAME> overrides, and CLI flags."""

    url: str | None = None  # the agency's endpoint; each request is POSTed to it as JSON
    auth_header: str = "Authorization"  # the header carrying `auth_value` on every POST
    auth_value: SecretStr | None = None  # e.g. "Bearer <token>"; never logged
    timeout_s: float = Field(default=10.0, gt=0)  # per attempt, connect to last byte
    # Retries never give up (a request is never lost): they back off from initial to max.
    retry_initial_s: float = Field(default=0.5, gt=0)
    retry_max_s: float = Field(default=60.0, gt=0)
    # Consecutive failures that open the circuit; it stays open this long, then one trial.
    breaker_failures: int = Field(default=5, ge=1)
    breaker_reset_s: float = Field(default=30.0, gt=0)
    max_concurrency: int = Field(default=16, ge=1)  # requests in flight to the endpoint
    # False when the bridge holds only its agency's ACLs (deploy/acls): refused requests are
    # then logged, not written to sw.dlq, which the agency principal may not write.
    dead_letters: bool = True
    # The callback endpoint for answers given later. None: no callback endpoint; 0: free port.
    callback_port: int | None = Field(default=None, ge=0, le=65535)
    callback_host: str = "127.0.0.1"
    callback_token: SecretStr | None = None  # agencies call back with "Bearer <token>"
    callback_url: str | None = None  # advertised to the agency in X-SWB-Callback-URL


class PartnerSettings(BaseModel):
    """Partner-customs exchange (Globally Networked Customs): SWB_PARTNER__<NAME> overrides.

    `country` is this single window's ISO 3166-1 alpha-2 code; `partners` maps each partner
    country to the topic prefix its single window publishes under on this Kafka cluster (its
    own, or mirrored here). Released exports to a partner are shared on
    `<prefix>.partner.exchange.<partner>`; the router reads
    `<partner prefix>.partner.exchange.<country>` to link imports. Empty: no exchange."""

    country: str | None = Field(default=None, pattern=r"^[A-Z]{2}$")
    partners: dict[str, str] = Field(default_factory=dict)
    # Differences between export and import accepted before customs is shown a mismatch:
    # relative net mass (packing, moisture) and relative value (same currency only).
    mass_tolerance: Decimal = Field(default=Decimal("0.02"), ge=0, le=1)
    value_tolerance: Decimal = Field(default=Decimal("0.05"), ge=0, le=1)

    @field_validator("partners")
    @classmethod
    def _partner_codes(cls, partners: dict[str, str]) -> dict[str, str]:
        for country, prefix in partners.items():
            if not re.fullmatch(r"[A-Z]{2}", country):
                raise ValueError(f"partner {country!r}: use an ISO 3166-1 alpha-2 code, e.g. IN")
            if not re.fullmatch(r"[A-Za-z0-9._-]+", prefix):
                raise ValueError(f"partner {country}: {prefix!r} is not a topic prefix")
        return partners

    @property
    def enabled(self) -> bool:
        return self.country is not None and bool(self.partners)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWB_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    # Empty means: start the embedded Tansu broker on a free loopback port.
    kafka_bootstrap_servers: str | None = None
    kafka: KafkaSettings = KafkaSettings()
    topic_prefix: str = Field(default="sw", pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(default=4, ge=1, le=256)
    # None: min(3, brokers in the cluster). Production: 3, with min.insync.replicas 2.
    replication_factor: int | None = Field(default=None, ge=1)
    rules_file: Path | None = None  # None: the rules shipped in the package
    schema_registry_url: str | None = None
    # How often the aggregator checks SLA deadlines.
    deadline_check_interval_s: float = Field(default=1.0, gt=0)
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)
    # Prometheus endpoint (/metrics, /healthz, /readyz) of `swb run` for roles without the
    # gateway. None: no endpoint and no lag monitor; 0: a free port.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"
    # How often the lag monitor compares end offsets with the groups' committed offsets.
    lag_check_interval_s: float = Field(default=15.0, gt=0)
    # API key -> trader id, set by the operator: SWB_API_KEYS='{"<key>": "<trader EORI>"}'.
    api_keys: dict[str, str] = Field(default_factory=dict)
    gateway: GatewaySettings = GatewaySettings()
    bridge: BridgeSettings = BridgeSettings()
    partner: PartnerSettings = PartnerSettings()

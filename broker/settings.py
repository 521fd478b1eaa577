"""Configuration, read once from SWB_* environment variables (nested with `__`) and CLI flags."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseModel):
    """Client settings. Defaults suit the embedded Tansu broker (DESIGN §8) and work on Apache
    Kafka; tune them there (SWB_KAFKA__FETCH_MAX_WAIT_MS=500 saves broker CPU, for example)."""

    # Tansu's fetch long-poll sleeps: end-to-end latency follows fetch_max_wait_ms.
    fetch_max_wait_ms: int = Field(default=10, ge=0)
    max_poll_records: int = Field(default=500, ge=1)
    # Batch produces: Tansu's cost per request grows with the number of stored batches.
    linger_ms: int = Field(default=5, ge=0)
    max_batch_size: int = Field(default=256 * 1024, ge=1024)
    # Tansu cannot do InitProducerId v>0; enable on Apache Kafka if wanted (we dedupe anyway).
    enable_idempotence: bool = False
    request_timeout_ms: int = Field(default=30_000, ge=1000)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SWB_", env_nested_delimiter="__", extra="ignore", frozen=True
    )

    # Empty means: start the embedded Tansu broker on a free loopback port.
    kafka_bootstrap_servers: str | None = None
    kafka: KafkaSettings = KafkaSettings()
    topic_prefix: str = Field(default="sw", pattern=r"^[A-Za-z0-9._-]+$")
    partitions: int = Field(default=4, ge=1, le=256)
    rules_file: Path | None = None  # None: the rules shipped in the package
    schema_registry_url: str | None = None
    # How often the aggregator checks SLA deadlines.
    deadline_check_interval_s: float = Field(default=1.0, gt=0)
    shutdown_timeout_s: float = Field(default=10.0, gt=0)
    log_format: Literal["auto", "console", "json"] = "auto"
    log_level: str = "INFO"
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=8080, ge=0, le=65535)

"""Settings, read from ``HUB_*`` environment variables (or passed to ``Hub``)."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class HubSettings(BaseSettings):
    """Every knob has a default that works on a laptop."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore", env_file=".env")

    database_url: str | None = Field(
        default=None, description="Postgres DSN; unset: an embedded server under data_dir"
    )
    data_dir: Path = Field(default=Path(".hub"), description="where the embedded server lives")
    db_schema: str = Field(default="hub", alias="HUB_SCHEMA", description="Postgres schema")
    modules: Annotated[list[str], NoDecode] = Field(
        default=["workflows"],
        description="comma-separated modules (or packages) whose workflows are loaded",
    )
    worker_id: str = Field(default_factory=_default_worker_id)
    lease_seconds: float = Field(default=15.0, gt=0.2, description="execution lease length")
    poll_interval: float = Field(
        default=5.0, gt=0, description="safety-net poll; LISTEN/NOTIFY wakes workers sooner"
    )
    pool_min: int = Field(default=2, ge=1)
    pool_max: int = Field(default=10, ge=1)
    max_executions: int = Field(default=500, ge=1, description="executions a worker drives")
    max_payload_bytes: int = Field(default=1_000_000, ge=1024)
    retention_days: float = Field(default=7.0, gt=0, description="finished executions kept")
    scheduler: bool = Field(default=True, description="workers fire scheduled jobs")
    metrics_port: int | None = Field(
        default=None, description="`hub worker` serves Prometheus metrics on this port")
    hold_timer_seconds: float = Field(
        default=30.0, description="timers shorter than this keep the lease; longer ones release"
    )

    @field_validator("modules", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value


class KafkaSettings(BaseSettings):
    """The Kafka side: broker, group, security. ``HUB_KAFKA_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="HUB_KAFKA_", extra="ignore",
                                      env_file=".env")

    bootstrap: str | None = Field(
        default=None, description="host:port list; unset: an embedded broker (dev, tests)"
    )
    group: str = Field(default="hub", description="one consumer group per hub deployment")
    group_instance_id: str | None = Field(
        default=None, description="static membership: a restarted worker keeps its partitions"
    )
    topics_file: Path = Field(default=Path("topics.yaml"))
    topic_prefix: str = Field(
        default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=100,
        description="put before every topic name (consumed, produced, dead letters), so "
                    "environments can share a cluster; e.g. `staging.`")
    subscribers: Annotated[list[str], NoDecode] = Field(default=["subscribers"])
    security_protocol: str = Field(default="PLAINTEXT",
                                   pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$")
    sasl_mechanism: str | None = Field(default=None,
                                       pattern="^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$")
    sasl_username: str | None = None
    sasl_password: str | None = Field(default=None, repr=False)
    sasl_password_file: Path | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    fetch_max_wait_ms: int = Field(default=20, ge=0)
    max_poll_records: int = Field(default=500, ge=1)
    max_in_flight_per_partition: int = Field(default=64, ge=1)
    max_backlog_per_partition: int = Field(default=2000, ge=1)
    session_timeout_ms: int = Field(default=10_000)
    rebalance_timeout_ms: int = Field(default=60_000)
    shutdown_timeout_s: float = Field(default=20.0)
    start_timeout_s: float = Field(
        default=60.0, ge=0,
        description="how long a starting worker waits for an unreachable broker before it "
                    "exits naming it")
    relay_batch: int = Field(default=500, ge=1)

    @field_validator("subscribers", mode="before")
    @classmethod
    def _split(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    def password(self) -> str | None:
        """The SASL password, from the file when one is named (never logged)."""
        if self.sasl_password_file is not None:
            return self.sasl_password_file.read_text().strip()
        return self.sasl_password

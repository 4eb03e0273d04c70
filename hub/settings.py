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

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore")

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
    hold_timer_seconds: float = Field(
        default=30.0, description="timers shorter than this keep the lease; longer ones release"
    )

    @field_validator("modules", mode="before")
    @classmethod
    def _split_modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

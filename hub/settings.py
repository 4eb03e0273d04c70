"""Every setting of a hub process: ``HUB_*`` environment variables and an optional ``.env``.

:class:`Settings` is the one model a process loads (:func:`load_settings`) and validates at
start-up; its sections are what each component is handed: ``engine`` (:class:`HubSettings`),
``kafka`` (:class:`KafkaSettings`), ``api`` (:class:`ApiSettings`). Connectors keep their
own models next to their code (``HUB_<SYSTEM>_*``), built and checked when the container
starts them. Webhook secrets and the SASL password never appear in a repr or an error.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import json
import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, NamedTuple

from pydantic import BaseModel, BeforeValidator, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from hub import devruntime
from hub.errors import HubError
from hub.redaction import DEFAULT_FIELDS

SCHEMA_PATTERN = r"^[a-z_][a-z0-9_]{0,40}$"
"""Names the hub's schema may take: it is written into every statement, never quoted."""


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [m.strip() for m in value.split(",") if m.strip()]
    return value


CommaList = Annotated[list[str], NoDecode, BeforeValidator(_split_commas)]
"""A list given as ``a,b,c`` in the environment."""


def _default_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class Retention(NamedTuple):
    """How long the tables that only grow keep their rows, in seconds."""

    audit_s: float
    redrive_s: float
    outbox_s: float  # published outbox rows (unsent and failed ones are never purged)


class HubSettings(BaseSettings):
    """Every knob has a default that works on a laptop."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore", env_file=".env")

    database_url: str | None = Field(
        default=None, description="Postgres DSN; unset: an embedded server under data_dir"
    )
    data_dir: Path = Field(default=Path(".hub"), description="where the embedded server lives")

    @field_validator("database_url")
    @classmethod
    def _check_dsn(cls, value: str | None) -> str | None:
        """A URL that is not Postgres's stops at once, not after 30 s of failed connects."""
        if value is None or not value.strip():
            return None
        scheme = value.split("://", 1)[0].lower() if "://" in value else ""
        if scheme not in ("postgres", "postgresql"):
            raise ValueError("must be a Postgres URL, like postgresql://user:password@host:5432/"
                             "db (unset it to use the embedded server)")
        return value
    db_schema: str = Field(default="hub", alias="HUB_SCHEMA", pattern=SCHEMA_PATTERN,
                           description="Postgres schema of the hub's tables")
    modules: CommaList = Field(
        default=["workflows"],
        description="comma-separated modules (or packages) whose workflows are loaded",
    )
    worker_id: str = Field(default_factory=_default_worker_id,
                           description="this worker's name on leases and in logs")
    lease_seconds: float = Field(default=15.0, gt=0.2,
                                 description="execution lease; the takeover time after a crash")
    poll_interval: float = Field(
        default=5.0, gt=0, description="safety-net poll; LISTEN/NOTIFY wakes workers sooner"
    )
    pool_min: int = Field(default=2, ge=1, description="asyncpg pool: connections kept open")
    pool_max: int = Field(default=10, ge=1, description="asyncpg pool: connections at most")
    max_executions: int = Field(default=500, ge=1,
                                description="executions one worker drives at once")
    max_payload_bytes: int = Field(default=1_000_000, ge=1024,
                                   description="largest workflow input or step output")
    max_event_bytes: int = Field(
        default=1_048_576, ge=1024,
        description="largest event a step may emit (value, key and headers, as Kafka "
                    "counts them); the relay's producer accepts up to this")
    max_fanout_items: int = Field(
        default=10_000, ge=1, le=1_000_000,
        description="items one map_each step may fan out over; a longer list fails the step "
                    "before any item starts (map_each(max_items=...) overrides it per map)")
    max_calls_per_step: int = Field(
        default=50, ge=1, le=10_000,
        description="connector calls recorded per step attempt in the lineage; further ones "
                    "are counted as dropped")
    outbox_retention_s: float = Field(
        default=7 * 86400.0, gt=0,
        description="seconds published outbox rows are kept; unpublished and failed ones "
                    "stay until sent")
    retention_days: float = Field(
        default=7.0, gt=0,
        description="days executions that ended well are kept; compensation_failed and parked "
                    "ones stay until repaired")
    redact_fields: CommaList = Field(
        default=list(DEFAULT_FIELDS),
        description="comma-separated field names whose values the API, console, CLI and logs "
                    "show as ***, matched by their words (api_key matches apiKey, X-Api-Key)")
    audit_retention_days: float = Field(
        default=400.0, gt=0, description="days operator actions are kept in the audit")
    redrive_retention_days: float = Field(
        default=30.0, gt=0, description="days the record of a dead letter's redrive is kept")
    dedupe_window_s: float = Field(
        default=86400.0, gt=0,
        description="a store=False workflow's succeeded execution is kept this long, without "
                    "its input, steps or result, so its transaction id still dedupes")
    scheduler: bool = Field(default=True, description="workers fire scheduled jobs")
    metrics_port: int | None = Field(
        default=None, description="`hub worker` serves Prometheus metrics on this port")
    hold_timer_seconds: float = Field(
        default=30.0, description="timers shorter than this keep the lease; longer ones release"
    )

    def housekeeping(self) -> Retention:
        """The retentions ``Store.purge_housekeeping`` applies."""
        return Retention(audit_s=self.audit_retention_days * 86400.0,
                         redrive_s=self.redrive_retention_days * 86400.0,
                         outbox_s=self.outbox_retention_s)


class KafkaSettings(BaseSettings):
    """The Kafka side: broker, group, security. ``HUB_KAFKA_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="HUB_KAFKA_", extra="ignore",
                                      env_file=".env", populate_by_name=True)

    bootstrap: str | None = Field(
        default=None, description="host:port list; unset: an embedded broker (dev, tests)"
    )
    group: str = Field(default="hub", description="one consumer group per hub deployment")
    group_instance_id: str | None = Field(
        default=None, description="static membership: a restarted worker keeps its partitions"
    )
    topics_file: Path = Field(default=Path("topics.yaml"), description="the topic declarations")
    topic_prefix: str = Field(
        default="", pattern=r"^[A-Za-z0-9._-]*$", max_length=100,
        description="put before every topic name (consumed, produced, dead letters), so "
                    "environments can share a cluster; e.g. `staging.`")
    subscribers: CommaList = Field(
        default=["subscribers"], description="comma-separated subscriber modules (or packages)")
    security_protocol: str = Field(default="PLAINTEXT",
                                   pattern="^(PLAINTEXT|SSL|SASL_PLAINTEXT|SASL_SSL)$",
                                   description="PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL")
    sasl_mechanism: str | None = Field(default=None,
                                       pattern="^(PLAIN|SCRAM-SHA-256|SCRAM-SHA-512)$",
                                       description="PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512")
    sasl_username: str | None = Field(default=None, description="SASL user")
    sasl_password: str | None = Field(default=None, repr=False, description="SASL password")
    sasl_password_file: Path | None = Field(
        default=None, description="a file holding the SASL password (wins over the variable)")
    ssl_cafile: Path | None = Field(default=None, description="CA bundle for the brokers' TLS")
    ssl_certfile: Path | None = Field(default=None, description="client certificate (mTLS)")
    ssl_keyfile: Path | None = Field(default=None, description="client certificate's key")
    fetch_max_wait_ms: int = Field(default=20, ge=0,
                                   description="fetch latency (aiokafka's default is 500)")
    max_poll_records: int = Field(default=500, ge=1, description="records per fetch at most")
    max_in_flight_per_partition: int = Field(
        default=64, ge=1, description="keys of one partition handled side by side")
    max_backlog_per_partition: int = Field(
        default=2000, ge=1, description="fetched records waiting; more pauses the partition")
    max_backlog_bytes_per_partition: int = Field(
        default=16 * 1024 * 1024, ge=1024,
        description="bytes of fetched records not yet handled; more pauses the partition "
                    "(until half drained), so a few large records cannot exhaust memory")
    session_timeout_ms: int = Field(
        default=10_000, description="a worker silent this long loses its partitions")
    rebalance_timeout_ms: int = Field(
        default=60_000, description="how long members have to rejoin in a rebalance")
    shutdown_timeout_s: float = Field(
        default=20.0, description="a stopping worker waits this long for its handlers")
    start_timeout_s: float = Field(
        default=60.0, ge=0,
        description="how long a starting worker waits for an unreachable broker before it "
                    "exits naming it")
    relay_batch: int = Field(default=500, ge=1, description="outbox events per publish")
    batch_max_attempts: int = Field(
        default=10, ge=1,
        description="tries of a partition's batch that keeps failing (backoff up to 30 s) "
                    "before the partition is parked")
    relay_max_attempts: int = Field(
        default=20, ge=1,
        description="publish attempts of an outbox event before it is failed (retryable "
                    "errors; others fail it at once)")
    relay_backoff_max_s: float = Field(
        default=300.0, gt=0,
        description="longest wait between two publish attempts of an outbox event (the wait "
                    "doubles from 1 s)")
    schema_registry_url: str | None = Field(
        default=None, alias="HUB_SCHEMA_REGISTRY_URL",
        description="Confluent-compatible schema registry (Apicurio: .../apis/ccompat/v7) for "
                    "topics in format avro or json-schema")
    schema_registry_username: str | None = Field(
        default=None, alias="HUB_SCHEMA_REGISTRY_USERNAME",
        description="basic-auth user of the schema registry")
    schema_registry_password: SecretStr | None = Field(
        default=None, alias="HUB_SCHEMA_REGISTRY_PASSWORD", repr=False,
        description="basic-auth password of the schema registry")
    schema_registry_timeout_s: float = Field(
        default=10.0, gt=0, alias="HUB_SCHEMA_REGISTRY_TIMEOUT_S",
        description="one registry request at most; a timeout retries the batch")
    schema_registry_cache_size: int = Field(
        default=1000, ge=1, alias="HUB_SCHEMA_REGISTRY_CACHE_SIZE",
        description="schemas kept by id (they never change under an id)")

    def password(self) -> str | None:
        """The SASL password, from the file when one is named (never logged)."""
        if self.sasl_password_file is not None:
            return self.sasl_password_file.read_text().strip()
        return self.sasl_password


class ApiSettings(BaseSettings):
    """Defaults suit a laptop; production sets the webhook secrets."""

    model_config = SettingsConfigDict(env_prefix="HUB_", extra="ignore", populate_by_name=True,
                                      env_file=".env")

    # NoDecode: parsed by the validator below, so a value that is not JSON is reported with
    # the other bad variables (pydantic-settings would stop at it)
    webhook_secrets: Annotated[dict[str, SecretStr | list[SecretStr]], NoDecode] = Field(
        default_factory=dict,
        description='per-source webhook secrets, JSON: {"warehouse": "whsec_..."}; a list '
                    'of several while rotating',
    )
    webhook_secrets_file: Path | None = Field(
        default=None, description="a JSON file of per-source secrets (merged, file wins)"
    )
    webhook_tolerance_s: float = Field(
        default=300.0, gt=0, le=86400, alias="HUB_WEBHOOK_TOLERANCE_S",
        description="a signed webhook is accepted within this many seconds of its timestamp",
    )
    api_routes: CommaList = Field(
        default=["api.routes"],
        description="comma-separated modules (or module:attribute) holding an APIRouter "
                    "`router` of custom routes",
    )
    max_body_bytes: int = Field(
        default=1024 * 1024, ge=1024, alias="HUB_API_MAX_BODY_BYTES",
        description="largest request body; larger ones are refused with 413",
    )
    max_wait_seconds: float = Field(
        default=60.0, gt=0, alias="HUB_API_MAX_WAIT_SECONDS",
        description="the longest ?wait=true may hold a request",
    )
    key_touch_seconds: float = Field(
        default=60.0, ge=0, alias="HUB_API_KEY_TOUCH_SECONDS",
        description="last_used_at of a key (and a console session's last_seen_at) is "
                    "written at most this often",
    )
    console_session_hours: float = Field(
        default=12.0, gt=0, le=24 * 90,
        description="a console login lasts at most this many hours, however busy",
    )
    console_idle_minutes: float = Field(
        default=60.0, gt=0,
        description="a console session unused for this many minutes ends",
    )
    trusted_proxies: CommaList = Field(
        default=[],
        description="comma-separated IPs or CIDRs of the TLS-terminating proxies whose "
                    "X-Forwarded-Proto (or Forwarded: proto=) is believed, making console "
                    "cookies Secure; anyone else's forwarded headers are ignored",
    )

    trace_ui_url: str | None = Field(
        default=None,
        description="address of a trace UI's page of one trace, with a {trace_id} "
                    "placeholder (e.g. http://jaeger:16686/trace/{trace_id}): the console "
                    "links each execution to its trace",
    )

    @field_validator("trace_ui_url")
    @classmethod
    def _check_trace_ui_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        if "{trace_id}" not in value:
            raise ValueError("has no {trace_id} placeholder; give the address of one trace's "
                             "page, like http://jaeger:16686/trace/{trace_id}")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// address")
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, value: list[str]) -> list[str]:
        out = []
        for entry in value:
            try:
                out.append(str(ipaddress.ip_network(entry, strict=False)))
            except ValueError:
                raise ValueError(f"{entry!r} is neither an IP address nor a CIDR range "
                                 "(like 10.0.0.0/8)") from None
        return out

    @field_validator("webhook_secrets", mode="before")
    @classmethod
    def _parse_secrets(cls, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value) if value.strip() else {}
            except ValueError:
                raise ValueError('not JSON; give an object, like {"warehouse": "..."}') from None
        return value

    @field_validator("webhook_secrets")
    @classmethod
    def _check_secrets(cls, value: dict[str, SecretStr | list[SecretStr]]) -> (
        dict[str, SecretStr | list[SecretStr]]
    ):
        for source, given in value.items():
            _webhook_keys(source, given)
        return value

    def secrets(self) -> dict[str, list[bytes]]:
        """Every source's keys: the variable's, then the file's (which wins per source)."""
        merged = dict(self.webhook_secrets)
        if self.webhook_secrets_file is not None:
            path = self.webhook_secrets_file
            try:
                raw = json.loads(path.read_text())
                parsed = _SecretsFile.model_validate({"secrets": raw}).secrets
            except (OSError, ValueError, ValidationError) as exc:
                # the message names the file, never its content
                raise HubError(
                    f"HUB_WEBHOOK_SECRETS_FILE {str(path)!r} must be a readable JSON object "
                    f'of source name to secret, like {{"warehouse": "..."}} '
                    f"({type(exc).__name__})"
                ) from None
            merged.update(parsed)
        out: dict[str, list[bytes]] = {}
        for source, given in merged.items():
            try:
                keys = _webhook_keys(source, given)
            except ValueError as exc:  # the file's (the variable's were checked at load)
                raise HubError(f"HUB_WEBHOOK_SECRETS_FILE: {exc}") from None
            if keys:
                out[source] = keys
        return out


class _SecretsFile(BaseModel):
    secrets: dict[str, SecretStr | list[SecretStr]]


_SECRET_PREFIX = "whsec_"


def _webhook_keys(source: str, given: SecretStr | list[SecretStr]) -> list[bytes]:
    """A source's HMAC keys: ``whsec_<base64>`` (the Standard Webhooks form) is decoded,
    any other string is its UTF-8 bytes. The error names the source, never the value."""
    keys = []
    for secret in given if isinstance(given, list) else [given]:
        text = secret.get_secret_value()
        if not text:
            continue
        if not text.startswith(_SECRET_PREFIX):
            keys.append(text.encode())
            continue
        b64 = text[len(_SECRET_PREFIX):]
        try:
            key = base64.b64decode(b64 + "=" * (-len(b64) % 4), validate=True)
        except ValueError:
            raise ValueError(f"the secret of source {source!r} starts with {_SECRET_PREFIX} "
                             "but the rest is not base64") from None
        if len(key) < 16:
            raise ValueError(f"the secret of source {source!r} holds {len(key)} bytes of key; "
                             "give at least 16 (24 to 64 is usual)")
        keys.append(key)
    return keys


class Settings(BaseModel):
    """All of a process's settings, one section per component."""

    engine: HubSettings = Field(default_factory=HubSettings)
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    origins: dict[str, str] = Field(default_factory=dict)
    """Variables whose value came from elsewhere than the environment (a running dev mode)."""

    def variables(self) -> list[Variable]:
        """Every variable with its effective value (secrets masked), section by section."""
        out = []
        for section in (self.engine, self.kafka, self.api):
            model = type(section)
            for field, info in model.model_fields.items():
                name = variable_name(model, field)
                out.append(Variable(name=name,
                                    value=_shown(model, field, getattr(section, field)),
                                    description=info.description or "",
                                    origin=self.origins.get(name)))
        return out


class Variable(BaseModel):
    """One environment variable as ``hub settings`` shows it."""

    name: str
    value: Any
    description: str
    origin: str | None = None  # None: the environment, a .env file or the default


class SettingsError(ValueError):
    """Settings that do not validate; the message names every variable at fault. Not a
    ``HubError``: the CLI reports it apart, with its own exit status (2)."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid settings:\n  " + "\n  ".join(problems))
        self.problems = problems


def load_settings(**overrides: Any) -> Settings:
    """Read and validate every section; one error names each bad variable of all of them.

    ``overrides``: section name to a dict of field values that win over the environment
    (command-line options)."""
    sections: dict[str, BaseSettings] = {}
    problems: list[str] = []
    for name, model in (("engine", HubSettings), ("kafka", KafkaSettings),
                        ("api", ApiSettings)):
        try:
            sections[name] = model(**overrides.get(name, {}))
        except ValidationError as exc:
            problems += [_problem(model, err) for err in exc.errors()]
    if problems:
        raise SettingsError(problems)
    settings = Settings.model_validate(sections)
    if settings.kafka.bootstrap is None:
        dev = devruntime.running(settings.engine.data_dir)
        if dev is not None:  # a `hub dev` in this folder: its broker, and say so
            settings = settings.model_copy(update={
                "kafka": settings.kafka.model_copy(update={"bootstrap": dev.kafka_bootstrap}),
                "origins": {"HUB_KAFKA_BOOTSTRAP": dev.origin}})
    return settings


@functools.cache
def process_settings() -> Settings:
    """The settings of this process's command, read and validated once: every entry point
    (each CLI command, ``hub worker``, ``hub api``, ``hub dev``) takes them from here."""
    return load_settings()


def variable_name(model: type[BaseSettings], field: str) -> str:
    """The environment variable of ``model.field``: its alias, or the prefix and name."""
    info = model.model_fields[field]
    prefix = str(model.model_config.get("env_prefix", ""))
    return (info.alias or f"{prefix}{field}").upper()


def _is_secret(model: type[BaseSettings], field: str) -> bool:
    """Hidden from reprs (``repr=False``) or holding ``SecretStr`` values."""
    info = model.model_fields.get(field)
    return info is not None and (not info.repr or "SecretStr" in str(info.annotation))


def _shown(model: type[BaseSettings], field: str, value: Any) -> Any:
    if value is None or not _is_secret(model, field):
        if isinstance(value, Path):
            return str(value)
        return mask_dsn(value) if isinstance(value, str) else value
    return {k: "***" for k in value} if isinstance(value, dict) else "***"


_DSN_PASSWORD = re.compile(  # up to the last @ before the host: a password may hold an @
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/?#@\s]*:)[^/?#\s]*(?=@[^@/?#\s]*(?:[/?#\s]|$))", re.I)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:password|sslpassword)=)[^&#\s]*", re.I)


def mask_dsn(text: str) -> str:
    """A DSN or URL with its password (in the userinfo or a ``password=`` parameter) as
    ``***``: ``hub settings``, errors and logs may show where a server is, never how to
    log in to it."""
    text = _DSN_PASSWORD.sub(lambda m: m["head"] + "***", text)
    return _QUERY_PASSWORD.sub(lambda m: m["head"] + "***", text)


def _problem(model: type[BaseSettings], err: Any) -> str:
    loc = [str(p) for p in err["loc"]]
    fields = model.model_fields
    field = next((f for f, i in fields.items() if f == loc[0] or i.alias == loc[0]), loc[0])
    name = variable_name(model, field) if field in fields else loc[0].upper()
    shown = ("***" if _is_secret(model, field)
             else mask_dsn(json.dumps(err.get("input"), default=str)))
    return f"{name}: {err['msg']} (got {shown})"

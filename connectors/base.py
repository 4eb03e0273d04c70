"""What every HTTP connector shares: settings, one client, limits, retries and error mapping.

A connector's job at the edge is to turn a foreign system's answers into the two errors the
engine understands, and to make a re-run step have one effect:

```
answer                                   in-process retry   raised to the engine
connection error, timeout                yes (bounded)      TransientConnectorError
5xx (but 501), 408, 425, 429             yes, Retry-After   TransientConnectorError
other 4xx (409 included, see classify)   no                 PermanentConnectorError
breaker open                             no                 CircuitOpenError (transient)
```
Every attempt carries the step's idempotency key (``Idempotency-Key``), so the system can
deduplicate a call repeated by us, by the engine or by a worker that took over after a crash.
Error messages name connector, method, path and status with a short, redacted body excerpt;
never headers, query parameters or credentials. ``CallGuard`` holds the limits, the breaker
and the retries apart from httpx, so a connector built on a vendor SDK (Stripe's) shares
them instead of copying them.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import time
import urllib.parse
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, ClassVar, Literal, Protocol, Self, TypeVar, get_args

import httpx
import structlog
from aiolimiter import AsyncLimiter
from pydantic import (
    AnyHttpUrl,
    NonNegativeFloat,
    NonNegativeInt,
    PositiveFloat,
    PositiveInt,
    SecretStr,
    ValidationError,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_random_exponential

from connectors.breaker import CircuitBreaker
from hub import (
    ConnectorCall,
    HubError,
    PermanentConnectorError,
    StepContext,
    TransientConnectorError,
)

log = structlog.get_logger("connectors")

Verdict = Literal["success", "transient", "permanent"]
"""How a connector reads an HTTP answer; see ``HttpConnector.classify``."""

S = TypeVar("S", bound="ConnectorSettings")
T = TypeVar("T")

_EXCERPT_CHARS = 200
_TRANSIENT_4XX = frozenset({408, 425, 429})


class ConnectorConfigError(HubError):
    """A connector's configuration is missing or invalid; raised at start-up."""


class RetryableHttpError(TransientConnectorError):
    """A failed attempt worth repeating: ``status`` is None for a connection error.

    ``retry_after_s`` is the wait the system asked for (``Retry-After``), if any;
    ``sent`` is False when the request surely never reached the system (connect errors),
    so repeating it is safe even without an idempotency mechanism.
    """

    def __init__(self, message: str, *, status: int | None, retry_after_s: float | None = None,
                 sent: bool = True) -> None:
        super().__init__(message, retry_after=retry_after_s)
        self.status = status
        self.retry_after_s = self.retry_after
        self.sent = sent


class ConnectorSettings(BaseSettings):
    """Settings every HTTP connector has; a subclass per system sets ``env_prefix``.

    A secret is a ``SecretStr | None`` field ``x`` paired with a ``x_file: FilePath | None``
    field: set one or the other (``HUB_ERP_API_KEY`` or ``HUB_ERP_API_KEY_FILE``, the latter
    for mounted secrets). Names listed in ``required_secrets`` must end up set. ``SecretStr``
    keeps the value out of ``repr``, logs and validation errors.
    """

    model_config = SettingsConfigDict(env_prefix="HUB_CONNECTOR_", extra="ignore")

    required_secrets: ClassVar[tuple[str, ...]] = ()

    base_url: AnyHttpUrl
    timeout_s: PositiveFloat = 10.0
    connect_timeout_s: PositiveFloat = 3.0
    max_connections: PositiveInt = 20
    max_concurrency: PositiveInt = 10
    rate_per_second: PositiveFloat = 20.0
    max_retries: NonNegativeInt = 3
    retry_initial_s: NonNegativeFloat = 0.2
    retry_max_s: NonNegativeFloat = 5.0
    retry_after_max_s: NonNegativeFloat = 30.0
    breaker_failure_threshold: PositiveInt = 5
    breaker_window_s: PositiveFloat = 60.0
    breaker_reset_s: PositiveFloat = 30.0

    @model_validator(mode="after")
    def _load_secret_files(self) -> Self:
        prefix = env_prefix(type(self)).upper()
        for name in secret_fields(type(self)):
            var = f"{prefix}{name.upper()}"
            path = getattr(self, f"{name}_file", None)
            if path is not None:
                if getattr(self, name) is not None:
                    raise ValueError(f"set {var} or {var}_FILE, not both")
                text = path.read_text(encoding="utf-8").strip()
                if not text:
                    raise ValueError(f"{var}_FILE names an empty file ({path})")
                setattr(self, name, SecretStr(text))
            if name in self.required_secrets and getattr(self, name) is None:
                raise ValueError(f"{var} or {var}_FILE is required")
        return self

    def secret_values(self) -> list[str]:
        """The plain secrets, so error excerpts can be scrubbed of any a system echoes."""
        out = []
        for name in secret_fields(type(self)):
            value = getattr(self, name)
            if isinstance(value, SecretStr) and value.get_secret_value():
                out.append(value.get_secret_value())
        return out


def env_prefix(cls: type[BaseSettings]) -> str:
    return str(cls.model_config.get("env_prefix") or "")


def secret_fields(cls: type[BaseSettings]) -> list[str]:
    """Names of the ``SecretStr`` fields that have a ``<name>_file`` companion or none."""
    return [name for name, info in cls.model_fields.items()
            if info.annotation is SecretStr or SecretStr in get_args(info.annotation)]


def load_settings(cls: type[S], **values: Any) -> S:
    """Build ``cls`` from the environment (and ``values``), naming each bad variable.

    The pydantic error is not chained: its text echoes input values, which may be secrets.
    """
    try:
        return cls(**values)
    except ValidationError as exc:
        prefix = env_prefix(cls).upper()
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            loc = [str(part) for part in err["loc"]]
            where = f"{prefix}{loc[0].upper()}" if loc else cls.__name__
            problems.append(f"{where}: {err['msg']}")
        raise ConnectorConfigError(
            f"{cls.__name__}: invalid configuration: " + "; ".join(problems)
            + "; set these environment variables (or *_FILE for secrets)"
        ) from None


class Connector(Protocol):
    """What the hub needs of any connector it registers in the container."""

    name: str

    async def aclose(self) -> None: ...


Sleep = Callable[[float], Awaitable[None]]


class CallGuard:
    """What every connector puts around a call to its system, whether it speaks HTTP itself
    (``HttpConnector``) or through a vendor SDK: a concurrency limit, a rate limit, the
    circuit breaker and bounded retries with jitter that honour ``Retry-After``.

    An attempt reports through what it raises: ``RetryableHttpError`` is worth repeating
    here; any other ``ConnectorError`` is final. The breaker counts attempts that got no
    answer (status None) or a 5xx as failures, and any answer (a 4xx or 429 included) as a
    sign of life; an attempt ended by anything else (cancelled) decides nothing.
    """

    def __init__(
        self,
        name: str,
        settings: ConnectorSettings,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.settings = settings
        self._sleep = sleep
        self._semaphore = asyncio.Semaphore(settings.max_concurrency)
        rate = settings.rate_per_second
        # aiolimiter cannot hand out one token from a bucket smaller than one.
        self._limiter = AsyncLimiter(rate, 1.0) if rate >= 1 else AsyncLimiter(1, 1.0 / rate)
        self.breaker = CircuitBreaker(
            name, failure_threshold=settings.breaker_failure_threshold,
            window_s=settings.breaker_window_s, reset_s=settings.breaker_reset_s, clock=clock)

    async def call(self, attempt: Callable[[], Awaitable[T]], *, idempotent: bool = True,
                   log_fields: Mapping[str, object] | None = None) -> T:
        """Run ``attempt`` until it returns or fails for good (or retries run out).

        ``idempotent=False`` repeats only attempts that surely never reached the system
        (``RetryableHttpError.sent`` is False) and 429s. ``log_fields`` (e.g. method and
        path; never secrets) go with the retry log line.
        """
        fields = dict(log_fields or {})
        retrying = AsyncRetrying(
            stop=stop_after_attempt(1 + self.settings.max_retries),
            wait=self._wait,
            retry=retry_if_exception(lambda e: self._retry_in_process(e, idempotent)),
            sleep=self._sleep,
            before_sleep=lambda state: self._log_retry(state, fields),
            reraise=True,
        )
        return await retrying(self._guarded, attempt)

    async def _guarded(self, attempt: Callable[[], Awaitable[T]]) -> T:
        self.breaker.before_call()
        system_failed: bool | None = None
        try:
            async with self._semaphore, self._limiter:
                result = await attempt()
            system_failed = False
            return result
        except RetryableHttpError as exc:
            system_failed = exc.status is None or exc.status >= 500
            raise
        except TransientConnectorError:
            system_failed = True
            raise
        except PermanentConnectorError:
            system_failed = False
            raise
        finally:
            if system_failed is None:
                self.breaker.on_abandon()
            elif system_failed:
                self.breaker.on_failure()
            else:
                self.breaker.on_success()

    def _retry_in_process(self, exc: BaseException, idempotent: bool) -> bool:
        if not isinstance(exc, RetryableHttpError):
            return False
        if exc.retry_after_s is not None and exc.retry_after_s > self.settings.retry_after_max_s:
            return False  # a long outage: let the engine schedule the step later
        return idempotent or not exc.sent or exc.status == 429

    def _wait(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, RetryableHttpError) and exc.retry_after_s is not None:
            return exc.retry_after_s
        jitter = wait_random_exponential(multiplier=self.settings.retry_initial_s,
                                         max=self.settings.retry_max_s)
        return float(jitter(state))

    def _log_retry(self, state: RetryCallState, fields: Mapping[str, object]) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("connector_retry_scheduled", connector=self.name, **fields,
                    status=getattr(exc, "status", None), attempt=state.attempt_number,
                    delay_s=state.next_action.sleep if state.next_action else None)


IDEMPOTENCY_KEY_MAX = 255
"""The longest idempotency key a header carries (Stripe's bound; others allow less or
the same)."""


def header_key(key: str) -> str:
    """``key`` as an ``Idempotency-Key`` header can carry it, the same on every attempt.

    A key is made of outside data (a map's item key is a SKU, "Müsli-500g"), and a header
    value is visible ASCII: a key that is not, or that holds a ``%``, is sent
    percent-encoded (so no two keys meet), and one still longer than the bound as its start
    and a digest of the whole.
    """
    if len(key) <= IDEMPOTENCY_KEY_MAX and all(33 <= ord(c) <= 126 and c != "%" for c in key):
        return key
    sent = urllib.parse.quote(key.encode("utf-8", "surrogatepass"), safe="-._~:[]/@!$&'()*+,;=")
    if len(sent) > IDEMPOTENCY_KEY_MAX:
        digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()[:40]
        sent = f"{sent[:IDEMPOTENCY_KEY_MAX - 41]}~{digest}"
    return sent


class HttpConnector:
    """One ``httpx.AsyncClient`` per outside system, behind a concurrency limit, a rate limit,
    a circuit breaker and bounded retries (its ``CallGuard``).

    Subclasses add the system's calls on top of ``request`` and may override ``classify``
    (e.g. read 409 as success when it means "already created with this key"),
    ``idempotency_header`` (``None`` when the system has no such mechanism), and the hooks
    ``before_send`` / ``after_receive``, which see every attempt (e.g. to pace calls by the
    system's rate-limit headers, or to turn its own reset header into ``Retry-After``).
    """

    idempotency_header: ClassVar[str | None] = "Idempotency-Key"
    outside_id_fields: ClassVar[tuple[tuple[str | int, ...], ...]] = (("id",),)
    """Where a JSON answer holds the outside system's id of what the call created or touched,
    for the lineage: paths of keys and list indexes, the first that holds a string or a
    number wins (``()`` is the body itself). ``outside_id`` may read it otherwise."""

    def __init__(
        self,
        name: str,
        settings: ConnectorSettings,
        *,
        headers: Mapping[str, str] | None = None,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.settings = settings
        self._secrets = settings.secret_values()
        self._client = httpx.AsyncClient(
            base_url=str(settings.base_url),
            headers=dict(headers or {}),
            auth=auth,
            transport=transport,
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s),
            limits=httpx.Limits(max_connections=settings.max_connections,
                                max_keepalive_connections=settings.max_connections),
            event_hooks={"request": [self.before_send], "response": [self.after_receive]},
        )
        self.guard = CallGuard(name, settings, sleep=sleep, clock=clock)
        self.breaker = self.guard.breaker

    async def before_send(self, request: httpx.Request) -> None:
        """Called before every attempt goes out."""

    async def after_receive(self, response: httpx.Response) -> None:
        """Called with every answer, before ``classify`` reads it."""

    def redact(self, text: str) -> str:
        """``text`` with every configured secret replaced by ``***``."""
        return self._redact(text)

    def outside_id(self, operation: str, response: httpx.Response) -> str | None:
        """The outside id of what a successful call touched, by ``outside_id_fields``."""
        if "json" not in response.headers.get("content-type", ""):
            return None
        try:
            body: Any = response.json()
        except ValueError:
            return None
        for path in self.outside_id_fields:
            value = body
            for key in path:
                if isinstance(key, str) and isinstance(value, dict):
                    value = value.get(key)
                elif isinstance(key, int) and isinstance(value, list) and len(value) > key:
                    value = value[key]
                else:
                    value = None
            if isinstance(value, str | int) and not isinstance(value, bool):
                return str(value)
        return None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._client.aclose()

    def classify(self, response: httpx.Response) -> Verdict:
        """Read an answer. 409 is permanent here: what it means differs between systems."""
        status = response.status_code
        if status < 400:
            return "success"
        if status in _TRANSIENT_4XX or (status >= 500 and status != 501):
            return "transient"
        return "permanent"

    async def request(
        self,
        method: str,
        path: str,
        *,
        ctx: StepContext | None,
        json: Any = None,
        params: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
        idempotent: bool = True,
        operation: str | None = None,
        touches: str | None = None,
    ) -> httpx.Response:
        """Send one logical call; return the successful response or raise a connector error.

        ``ctx`` is required (pass ``None`` deliberately outside a step): its idempotency key
        and trace context go out with every attempt, and every attempt is recorded in its
        lineage under ``operation`` (e.g. ``create_deal``; method and path by default), with
        ``touches``, the outside id of the record the call acts on when the caller knows it
        (an answer without an id, such as Odoo's ``action_confirm``, then still names it).
        ``idempotent=False`` retries in-process only attempts that never reached the
        system; the engine may still retry the step.
        """
        hdrs = dict(headers or {})
        if ctx is not None:
            if self.idempotency_header:
                hdrs[self.idempotency_header] = header_key(ctx.idempotency_key)
            if ctx.traceparent:
                hdrs["traceparent"] = ctx.traceparent
        method = method.upper()
        named = operation or f"{method} {self._redact(path.split('?', 1)[0])}"
        key = hdrs.get(self.idempotency_header) if self.idempotency_header else None
        call = _Call(ctx, named, key, touches)
        return await self.guard.call(
            lambda: self._attempt(method, path, json, params, hdrs, call),
            idempotent=idempotent, log_fields={"method": method, "path": path})

    async def _attempt(self, method: str, path: str, json: Any,
                       params: Mapping[str, Any] | None, headers: dict[str, str],
                       call: _Call | None = None) -> httpx.Response:
        started = time.perf_counter()
        try:
            response = await self._client.request(
                method, path, json=json, params=params, headers=headers)
        except httpx.RequestError as exc:
            self._record(call, method, path, started, None, type(exc).__name__)
            raise self._request_error(method, path, exc) from exc
        verdict = self.classify(response)
        self._record(call, method, path, started, response, None, verdict == "success")
        if verdict == "success":
            return response
        message = (f"connector {self.name!r}: {method} {path} answered "
                   f"{response.status_code}: {self._excerpt(response)}")
        if verdict == "permanent":
            raise PermanentConnectorError(message)
        raise RetryableHttpError(message, status=response.status_code,
                                 retry_after_s=retry_after_s(response))

    def _record(self, call: _Call | None, method: str, path: str, started: float,
                response: httpx.Response | None, error: str | None,
                success: bool = False) -> None:
        """The one place an attempt enters the step's lineage: redacted path, no query,
        body or headers; the outside id only from a successful answer."""
        if call is None or call.ctx is None:
            return
        call.attempts += 1
        outside = call.touches
        if response is not None and success and response.status_code < 400:
            outside = self.outside_id(call.operation, response) or outside
        call.ctx.record_call(ConnectorCall(
            system=self.name, operation=call.operation, method=method,
            path=self._redact(path.split("?", 1)[0]), attempt=call.attempts,
            duration_ms=(time.perf_counter() - started) * 1000.0,
            status=response.status_code if response is not None else None, error=error,
            idempotency_key=call.key, outside_id=self._redact(outside) if outside else None))

    def _request_error(self, method: str, path: str, exc: httpx.RequestError) -> Exception:
        """The one place httpx's exceptions become ours."""
        what = f"connector {self.name!r}: {method} {path} failed: {type(exc).__name__}"
        detail = self._redact(str(exc))[:_EXCERPT_CHARS]
        message = f"{what}: {detail}" if detail else what
        if isinstance(exc, httpx.UnsupportedProtocol | httpx.LocalProtocolError) or not \
                isinstance(exc, httpx.TransportError):
            return PermanentConnectorError(message)
        sent = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout)
        return RetryableHttpError(message, status=None, sent=sent)

    def _excerpt(self, response: httpx.Response) -> str:
        text = " ".join(response.text.split())
        return self._redact(text)[:_EXCERPT_CHARS] or "(empty body)"

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


class _Call:
    """One logical call's facts for the lineage, shared by its attempts."""

    __slots__ = ("attempts", "ctx", "key", "operation", "touches")

    def __init__(self, ctx: StepContext | None, operation: str, key: str | None,
                 touches: str | None = None) -> None:
        self.ctx = ctx
        self.operation = operation
        self.key = key
        self.touches = touches
        self.attempts = 0


def retry_after_s(response: httpx.Response) -> float | None:
    """Seconds the system asked us to wait, from ``Retry-After`` (seconds or HTTP-date)."""
    return parse_retry_after(response.headers.get("retry-after"))


def parse_retry_after(value: str | None) -> float | None:
    """A ``Retry-After`` value (delta-seconds or HTTP-date) in seconds; None if absent or not
    one of the two forms (garbage is ignored: the step's own backoff applies). The error that
    carries it bounds it (``hub.errors.RETRY_AFTER_MAX_S``)."""
    if value is None:
        return None
    value = value.strip()
    if not value or len(value) > 64:
        return None
    if value.isascii() and value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - datetime.now(UTC)).total_seconds())

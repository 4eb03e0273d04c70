"""The shared connector base: error mapping, retries, idempotency, limits, breaker, settings.

The outside system is an ``httpx.MockTransport`` (allowed for a connector's error mapping);
sleeps and the breaker's clock are injected so nothing here waits for real, except the
rate-limit test, which measures a fraction of a second.
"""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import FilePath, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors import (
    BreakerState,
    CircuitOpenError,
    ConnectorConfigError,
    ConnectorSettings,
    HttpConnector,
    Verdict,
    load_settings,
)
from hub import Container, PermanentConnectorError, StepContext, TransientConnectorError
from hub.metrics import REGISTRY as METRICS

SECRET = "sk-live-very-secret"
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

Handler = (Callable[[httpx.Request], httpx.Response]
           | Callable[[httpx.Request], Coroutine[Any, Any, httpx.Response]])


class ErpSettings(ConnectorSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_TESTERP_", extra="ignore")
    required_secrets = ("api_key",)

    api_key: SecretStr | None = None
    api_key_file: FilePath | None = None


class FakeSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings(**overrides: object) -> ErpSettings:
    values: dict[str, object] = {"base_url": "https://erp.example", "api_key": SECRET,
                                 "retry_initial_s": 0.1, "retry_max_s": 1.0}
    values.update(overrides)
    return ErpSettings.model_validate(values)


def connector(handler: Handler, sleep: FakeSleep | None = None, clock: FakeClock | None = None,
              **overrides: object) -> HttpConnector:
    s = settings(**overrides)
    assert s.api_key is not None
    return HttpConnector(
        "erp", s, headers={"Authorization": f"Bearer {s.api_key.get_secret_value()}"},
        transport=httpx.MockTransport(handler), sleep=sleep or FakeSleep(),
        clock=clock or FakeClock())


def state_of(erp: HttpConnector) -> BreakerState:
    """Read afresh: the state changes under mypy's narrowing as the clock moves."""
    return erp.breaker.state


def step_ctx() -> StepContext:
    return StepContext.make(execution_id="ex-1", transaction_id="tx-1", workflow="order",
                            step="create_invoice", attempt=1, container=Container(),
                            trigger={"traceparent": TRACEPARENT})


def scripted(*responses: httpx.Response | Exception) -> tuple[Handler, list[httpx.Request]]:
    seen: list[httpx.Request] = []
    queue = list(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item

    return handler, seen


async def test_503_and_connection_error_are_retried_until_success() -> None:
    handler, seen = scripted(httpx.Response(503), httpx.ConnectError("refused"),
                             httpx.Response(201, json={"id": 7}))
    sleep = FakeSleep()
    async with connector(handler, sleep) as erp:
        response = await erp.request("POST", "/invoices", ctx=step_ctx(), json={"n": 1})
    assert response.json() == {"id": 7}
    assert len(seen) == 3
    assert len(sleep.delays) == 2 and all(0 <= d <= 1.0 for d in sleep.delays)


async def test_idempotency_key_and_traceparent_are_the_same_on_every_attempt() -> None:
    handler, seen = scripted(httpx.Response(500), httpx.Response(502), httpx.Response(200))
    async with connector(handler) as erp:
        await erp.request("POST", "/invoices", ctx=step_ctx(), json={})
    assert {r.headers["Idempotency-Key"] for r in seen} == {"ex-1:create_invoice"}
    assert {r.headers["traceparent"] for r in seen} == {TRACEPARENT}


@pytest.mark.parametrize("key", [
    "ex-1:each-reserve[Müsli-500g]", "ex-1:each[\u20ac 5 off]", "ex-1:each[a%C3%BCb]",
    "ex-1:each[\udcff\udcfe]", "ex-1:each[" + "x" * 400 + "]", "ex-1:each[\n\r\t ]"])
async def test_an_idempotency_key_of_outside_text_is_sent_as_a_header_can_carry_it(
        key: str) -> None:
    """A map item's key is outside data: before, a SKU with a 'ü' made httpx raise
    UnicodeEncodeError on every call of the item, and a 400-character key went out whole."""
    handler, seen = scripted(httpx.Response(500), httpx.Response(200))
    ctx = StepContext.make(execution_id="ex-1", transaction_id="tx-1", workflow="order",
                           step=key.removeprefix("ex-1:"), attempt=1, container=Container())
    async with connector(handler) as erp:
        await erp.request("POST", "/invoices", ctx=ctx, json={})
    sent = {r.headers["Idempotency-Key"] for r in seen}
    assert len(sent) == 1, "the same header on every attempt"
    (value,) = sent
    assert len(value) <= 255 and all(33 <= ord(c) <= 126 for c in value)


def test_distinct_idempotency_keys_stay_distinct_as_headers() -> None:
    from connectors.base import header_key

    keys = ["e:m[ü]", "e:m[%C3%BC]", "e:m[%25C3%25BC]", "e:m[ü ]", "e:m[ü\t]",
            "e:m[" + "x" * 300 + "1]", "e:m[" + "x" * 300 + "2]", "e:m[plain-SKU_1]"]
    assert len({header_key(k) for k in keys}) == len(keys)
    assert header_key("e:m[plain-SKU_1]") == "e:m[plain-SKU_1]", "a plain key goes as it is"
    assert urllib.parse.unquote(header_key("e:m[ü]")) == "e:m[ü]"


async def test_429_retry_after_seconds_is_honoured() -> None:
    handler, seen = scripted(httpx.Response(429, headers={"Retry-After": "7"}),
                             httpx.Response(200))
    sleep = FakeSleep()
    async with connector(handler, sleep) as erp:
        await erp.request("GET", "/stock", ctx=None)
    assert sleep.delays == [7.0]
    assert len(seen) == 2


async def test_503_retry_after_http_date_is_honoured() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=12), usegmt=True)
    handler, _ = scripted(httpx.Response(503, headers={"Retry-After": when}),
                          httpx.Response(200))
    sleep = FakeSleep()
    async with connector(handler, sleep) as erp:
        await erp.request("GET", "/stock", ctx=None)
    assert len(sleep.delays) == 1 and 9 < sleep.delays[0] <= 12


async def test_retry_after_beyond_the_cap_goes_to_the_engine_at_once() -> None:
    handler, seen = scripted(httpx.Response(429, headers={"Retry-After": "3600"}))
    async with connector(handler, retry_after_max_s=30) as erp:
        with pytest.raises(TransientConnectorError) as info:
            await erp.request("GET", "/stock", ctx=None)
    assert info.value.retryable is True
    assert len(seen) == 1


async def test_exhausted_retries_raise_a_retryable_error_for_the_engine() -> None:
    handler, seen = scripted(httpx.Response(503, text="maintenance"))
    async with connector(handler, max_retries=2, breaker_failure_threshold=10) as erp:
        with pytest.raises(TransientConnectorError) as info:
            await erp.request("PUT", "/orders/1", ctx=step_ctx())
    assert info.value.retryable is True
    assert len(seen) == 3
    assert "503" in str(info.value) and "PUT /orders/1" in str(info.value)


async def test_400_is_permanent_names_the_status_and_hides_the_secret() -> None:
    handler, seen = scripted(httpx.Response(
        400, json={"error": "bad sku", "echo": f"Authorization: Bearer {SECRET}"}))
    async with connector(handler) as erp:
        with pytest.raises(PermanentConnectorError) as info:
            await erp.request("POST", "/invoices", ctx=step_ctx(), params={"token": "q"})
    message = str(info.value)
    assert info.value.retryable is False
    assert len(seen) == 1
    assert "'erp'" in message and "POST /invoices" in message and "400" in message
    assert "bad sku" in message
    assert SECRET not in message and "token" not in message


async def test_non_idempotent_call_is_not_repeated_after_it_reached_the_system() -> None:
    handler, seen = scripted(httpx.Response(503), httpx.Response(200))
    async with connector(handler) as erp:
        with pytest.raises(TransientConnectorError):
            await erp.request("POST", "/payments", ctx=None, idempotent=False)
    assert len(seen) == 1


async def test_non_idempotent_call_is_repeated_when_it_never_connected() -> None:
    handler, seen = scripted(httpx.ConnectError("refused"), httpx.Response(200))
    async with connector(handler) as erp:
        await erp.request("POST", "/payments", ctx=None, idempotent=False)
    assert len(seen) == 2


async def test_subclass_can_classify_409_as_success() -> None:
    class Erp(HttpConnector):
        def classify(self, response: httpx.Response) -> Verdict:
            return "success" if response.status_code == 409 else super().classify(response)

    s = settings()
    handler, _ = scripted(httpx.Response(409, json={"id": 7}))
    async with Erp("erp", s, transport=httpx.MockTransport(handler)) as erp:
        response = await erp.request("POST", "/invoices", ctx=step_ctx())
    assert response.status_code == 409


async def test_409_is_permanent_by_default() -> None:
    handler, _ = scripted(httpx.Response(409))
    async with connector(handler) as erp:
        with pytest.raises(PermanentConnectorError):
            await erp.request("POST", "/invoices", ctx=step_ctx())


async def test_breaker_opens_fails_fast_half_opens_and_closes_on_success() -> None:
    calls: list[httpx.Request] = []
    healthy = False

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request)
        return httpx.Response(200 if healthy else 503)

    clock = FakeClock()
    async with connector(handler, clock=clock, max_retries=0, breaker_failure_threshold=3,
                         breaker_reset_s=10) as erp:
        for _ in range(3):
            with pytest.raises(TransientConnectorError):
                await erp.request("GET", "/ping", ctx=None)
        assert erp.breaker.state is BreakerState.OPEN
        assert circuit_open(erp.name) == 1.0

        with pytest.raises(CircuitOpenError, match="circuit open"):
            await erp.request("GET", "/ping", ctx=None)
        assert len(calls) == 3  # failed fast: the system was not called

        clock.now += 10
        assert state_of(erp) is BreakerState.HALF_OPEN
        healthy = True
        await erp.request("GET", "/ping", ctx=None)
        assert state_of(erp) is BreakerState.CLOSED
        assert len(calls) == 4
        assert circuit_open(erp.name) == 0.0


def circuit_open(name: str) -> float | None:
    """The worker's ``hub_connector_circuit_open`` gauge of one connector."""
    return METRICS.get_sample_value("hub_connector_circuit_open", {"connector": name})


async def test_failed_half_open_probe_opens_the_breaker_again() -> None:
    handler, _ = scripted(httpx.Response(503))
    clock = FakeClock()
    async with connector(handler, clock=clock, max_retries=0, breaker_failure_threshold=1,
                         breaker_reset_s=5) as erp:
        with pytest.raises(TransientConnectorError):
            await erp.request("GET", "/ping", ctx=None)
        clock.now += 5
        with pytest.raises(TransientConnectorError):
            await erp.request("GET", "/ping", ctx=None)
        assert erp.breaker.state is BreakerState.OPEN


async def test_client_errors_do_not_open_the_breaker() -> None:
    handler, _ = scripted(httpx.Response(404))
    async with connector(handler, breaker_failure_threshold=2) as erp:
        for _ in range(3):
            with pytest.raises(PermanentConnectorError):
                await erp.request("GET", "/missing", ctx=None)
    assert erp.breaker.state is BreakerState.CLOSED


async def test_concurrency_limit_bounds_requests_in_flight() -> None:
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200)

    async with connector(handler, max_concurrency=2, rate_per_second=1000) as erp:
        await asyncio.gather(*(erp.request("GET", "/x", ctx=None) for _ in range(10)))
    assert peak == 2


async def test_rate_limit_spreads_requests_over_time() -> None:
    handler, seen = scripted(httpx.Response(200))
    async with connector(handler, rate_per_second=40) as erp:
        t0 = time.perf_counter()
        await asyncio.gather(*(erp.request("GET", "/x", ctx=None) for _ in range(50)))
        elapsed = time.perf_counter() - t0
    assert len(seen) == 50
    assert elapsed >= 0.2  # 40 at once, the other 10 at 40/s


def test_missing_settings_name_the_environment_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_TESTERP_BASE_URL", raising=False)
    monkeypatch.setenv("HUB_TESTERP_TIMEOUT_S", "-1")
    with pytest.raises(ConnectorConfigError) as info:
        load_settings(ErpSettings)
    message = str(info.value)
    assert "HUB_TESTERP_BASE_URL" in message
    assert "HUB_TESTERP_TIMEOUT_S" in message


def test_missing_secret_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_TESTERP_BASE_URL", "https://erp.example")
    with pytest.raises(ConnectorConfigError, match="HUB_TESTERP_API_KEY_FILE"):
        load_settings(ErpSettings)


def test_bad_settings_error_does_not_echo_the_secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_TESTERP_BASE_URL", "not a url")
    monkeypatch.setenv("HUB_TESTERP_API_KEY", SECRET)
    with pytest.raises(ConnectorConfigError) as info:
        load_settings(ErpSettings)
    assert SECRET not in str(info.value)
    assert info.value.__cause__ is None and info.value.__suppress_context__


def test_secret_is_read_from_a_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "api_key"
    secret_file.write_text(SECRET + "\n")
    monkeypatch.setenv("HUB_TESTERP_BASE_URL", "https://erp.example")
    monkeypatch.setenv("HUB_TESTERP_API_KEY_FILE", str(secret_file))
    loaded = load_settings(ErpSettings)
    assert loaded.api_key is not None
    assert loaded.api_key.get_secret_value() == SECRET
    assert SECRET not in repr(loaded)


def test_secret_and_secret_file_together_are_refused(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    secret_file = tmp_path / "api_key"
    secret_file.write_text(SECRET)
    monkeypatch.setenv("HUB_TESTERP_BASE_URL", "https://erp.example")
    monkeypatch.setenv("HUB_TESTERP_API_KEY", SECRET)
    monkeypatch.setenv("HUB_TESTERP_API_KEY_FILE", str(secret_file))
    with pytest.raises(ConnectorConfigError, match="not both"):
        load_settings(ErpSettings)


@pytest.mark.parametrize("garbage", ["soon", "-5", "1.5", "", "  ", "12abc", "١٢",
                                     "Mon, 99 Foo 2026 25:61:00 GMT", "9" * 200])
def test_a_garbage_retry_after_is_ignored(garbage: str) -> None:
    from connectors.base import parse_retry_after

    assert parse_retry_after(garbage) is None


async def test_a_retry_after_reaches_the_engine_bounded() -> None:
    from hub.errors import RETRY_AFTER_MAX_S

    handler, _ = scripted(httpx.Response(429, headers={"Retry-After": "86400000"}))
    async with connector(handler, retry_after_max_s=30) as erp:
        with pytest.raises(TransientConnectorError) as info:
            await erp.request("GET", "/stock", ctx=None)
    assert info.value.retry_after == RETRY_AFTER_MAX_S


async def test_an_http_date_retry_after_reaches_the_engine_in_seconds() -> None:
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=120), usegmt=True)
    handler, _ = scripted(httpx.Response(503, headers={"Retry-After": when}))
    async with connector(handler, retry_after_max_s=30) as erp:
        with pytest.raises(TransientConnectorError) as info:
            await erp.request("GET", "/stock", ctx=None)
    assert info.value.retry_after is not None and 115 < info.value.retry_after <= 120

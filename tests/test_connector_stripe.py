"""The Stripe connector against the Stripe sandbox, over real HTTP on loopback.

Each test starts from an empty sandbox and a fresh connector (so a fresh breaker); effects
are read back from ``/_sandbox/state``. A few tests speak to the sandbox with plain httpx to
pin its Stripe semantics (idempotency, auth, form parameters) independently of the SDK.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from connectors import CircuitOpenError, ConnectorConfigError, load_settings
from connectors.stripe import StripeConnector, StripeRefused, StripeSettings
from hub import Container, PermanentConnectorError, StepContext, TransientConnectorError
from hub.sandbox import SandboxControl, SandboxServer
from hub.sandbox.stripe import SANDBOX_API_KEY, StripeSandbox

pytestmark = pytest.mark.filterwarnings(  # the SDK's HTTPXClient posts the form as data=str
    "ignore:Use 'content=<...>':DeprecationWarning")

OTHER_KEY = "sk_test_51OtherAccount000000000000000000000"


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    server = SandboxServer([StripeSandbox(seed=1, api_keys=(SANDBOX_API_KEY, OTHER_KEY))])
    server.start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
async def control(sandbox: SandboxServer) -> AsyncIterator[SandboxControl]:
    async with SandboxControl(sandbox.control_url) as control:
        await control.clear_faults()
        await control.reset()
        yield control


def settings(sandbox: SandboxServer, **overrides: Any) -> StripeSettings:
    env = sandbox.connector_env()
    values: dict[str, Any] = {"base_url": env["HUB_STRIPE_BASE_URL"],
                              "api_key": env["HUB_STRIPE_API_KEY"], "max_retries": 2,
                              "retry_initial_s": 0, "retry_max_s": 0}
    values.update(overrides)
    return load_settings(StripeSettings, **values)


@pytest.fixture
async def payments(sandbox: SandboxServer, control: SandboxControl,
                   ) -> AsyncIterator[StripeConnector]:
    async with StripeConnector(settings(sandbox)) as connector:
        yield connector


@pytest.fixture
async def http(sandbox: SandboxServer, control: SandboxControl,
               ) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sandbox.url("stripe"), headers={
            "Authorization": f"Bearer {SANDBOX_API_KEY}"}) as client:
        yield client


def step(name: str = "authorize_payment", execution_id: str | None = None,
         compensating: bool = False) -> StepContext:
    return StepContext.make(execution_id=execution_id or str(uuid.uuid4()),
                            transaction_id="order-1", workflow="t", step=name, attempt=1,
                            container=Container(), compensating=compensating)


async def authorized(payments: StripeConnector, amount: int = 1000) -> dict[str, Any]:
    return await payments.authorize(step(), amount=amount, currency="eur", order_id="o-1")


async def intent_state(control: SandboxControl, pi: str) -> dict[str, Any]:
    state = await control.state("stripe")
    return {**state["payment_intents"][pi], **state["counts"][pi]}


# --- the operations -------------------------------------------------------------------


async def test_authorize_holds_the_amount_on_a_manual_capture_intent(
        payments: StripeConnector, control: SandboxControl) -> None:
    result = await payments.authorize(step(), amount=1250, currency="EUR", order_id="o-7",
                                      customer_email="ada@example.com")
    assert result == {"id": result["id"], "status": "requires_capture", "amount": 1250,
                      "amount_capturable": 1250, "amount_received": 0, "currency": "eur"}
    pi = await intent_state(control, result["id"])
    assert pi["capture_method"] == "manual" and pi["metadata"] == {"order_id": "o-7"}
    assert pi["latest_charge"].startswith("ch_") and pi["payment_method"] == "pm_card_visa"


async def test_rerunning_authorize_in_the_same_step_holds_the_money_once(
        payments: StripeConnector, control: SandboxControl) -> None:
    ctx = step()
    first = await payments.authorize(ctx, amount=1000, currency="eur", order_id="o-1")
    again = await payments.authorize(ctx, amount=1000, currency="eur", order_id="o-1")
    assert again == first
    state = await control.state("stripe")
    assert state["by_order"] == {"o-1": [first["id"]]}
    assert state["idempotent_replays"] == 2  # create and confirm


async def test_every_post_carries_a_key_derived_from_the_step(
        payments: StripeConnector, http: httpx.AsyncClient) -> None:
    ctx = step()
    await payments.authorize(ctx, amount=1000, currency="eur", order_id="o-1")
    for suffix in ("create", "confirm"):
        reused = await http.post("/v1/payment_intents", data={"amount": "5", "currency": "x"},
                                 headers={"Idempotency-Key": f"{ctx.idempotency_key}:{suffix}"})
        assert reused.json()["error"]["type"] == "idempotency_error"


async def test_create_confirm_and_retrieve_are_separate_calls(
        payments: StripeConnector, control: SandboxControl) -> None:
    ctx = step()
    created = await payments.create_payment_intent(ctx, amount=700, currency="usd",
                                                   order_id="o-2")
    assert created["status"] == "requires_payment_method"
    confirmed = await payments.confirm_payment_intent(ctx, created["id"],
                                                      payment_method="pm_card_visa")
    assert confirmed["status"] == "requires_capture"
    assert await payments.retrieve_payment_intent(ctx, created["id"]) == confirmed


async def test_capture_takes_the_money_once_however_often_it_is_called(
        payments: StripeConnector, control: SandboxControl) -> None:
    pi = await authorized(payments)
    ctx = step("capture_payment")
    captured = await payments.capture(ctx, pi["id"])
    assert captured["status"] == "succeeded" and captured["amount_received"] == 1000
    assert await payments.capture(ctx, pi["id"]) == captured  # same step: replayed
    assert await payments.capture(step("capture_payment"), pi["id"]) == captured  # other key
    assert (await intent_state(control, pi["id"]))["captures"] == 1


async def test_partial_capture_receives_only_that_amount(
        payments: StripeConnector, control: SandboxControl) -> None:
    pi = await authorized(payments)
    captured = await payments.capture(step("capture_payment"), pi["id"], amount_to_capture=600)
    assert captured["amount_received"] == 600 and captured["amount_capturable"] == 0


async def test_cancel_releases_the_hold_and_cancelling_again_is_success(
        payments: StripeConnector, control: SandboxControl) -> None:
    pi = await authorized(payments)
    canceled = await payments.cancel(step(compensating=True), pi["id"])
    assert canceled["status"] == "canceled" and canceled["amount_capturable"] == 0
    assert (await payments.cancel(step(compensating=True), pi["id"]))["status"] == "canceled"
    state = await intent_state(control, pi["id"])
    assert state["cancels"] == 1 and state["cancellation_reason"] == "abandoned"


async def test_cancelling_a_captured_payment_is_refused_saying_to_refund(
        payments: StripeConnector, control: SandboxControl) -> None:
    pi = await authorized(payments)
    await payments.capture(step("capture_payment"), pi["id"])
    with pytest.raises(StripeRefused, match="refund it instead") as info:
        await payments.cancel(step(compensating=True), pi["id"])
    assert info.value.code == "payment_intent_unexpected_state"
    assert (await intent_state(control, pi["id"]))["cancels"] == 0


async def test_refund_gives_back_part_once_and_refuses_more_than_is_left(
        payments: StripeConnector, control: SandboxControl) -> None:
    pi = await authorized(payments)
    await payments.capture(step("capture_payment"), pi["id"])
    ctx = step("refund_payment")
    refund = await payments.refund(ctx, pi["id"], amount=300, reason="requested_by_customer",
                                   metadata={"refund_request": "r-1"})
    assert refund == {"id": refund["id"], "status": "succeeded", "amount": 300,
                      "payment_intent": pi["id"]}
    assert await payments.refund(ctx, pi["id"], amount=300, reason="requested_by_customer",
                                 metadata={"refund_request": "r-1"}) == refund
    with pytest.raises(StripeRefused) as info:
        await payments.refund(step("refund_payment"), pi["id"], amount=800)
    assert info.value.code == "amount_too_large" and info.value.param == "amount"
    state = await control.state("stripe")
    assert state["counts"][pi["id"]]["refunds"] == 1
    assert state["refunds"][refund["id"]]["metadata"] == {"refund_request": "r-1"}


async def test_refunding_an_uncaptured_payment_is_refused(
        payments: StripeConnector, control: SandboxControl) -> None:
    pi = await authorized(payments)
    with pytest.raises(StripeRefused, match="charge_not_refundable"):
        await payments.refund(step("refund_payment"), pi["id"])


# --- Stripe's refusals ------------------------------------------------------------------


@pytest.mark.parametrize("card", ["pm_card_chargeDeclined", "pm_card_visa_chargeDeclined"])
async def test_declined_card_is_permanent_and_names_the_decline_code(
        payments: StripeConnector, control: SandboxControl, card: str) -> None:
    with pytest.raises(StripeRefused) as info:
        await payments.authorize(step(), amount=1000, currency="eur", order_id="o-9",
                                 payment_method=card)
    error = info.value
    assert error.retryable is False and error.http_status == 402
    assert (error.type, error.code, error.decline_code) == (
        "card_error", "card_declined", "generic_decline")
    assert "generic_decline" in str(error)
    (pi,) = (await control.state("stripe"))["by_order"]["o-9"]
    # a declined intent would wait for another payment method: authorize cancels it
    assert (await intent_state(control, pi))["status"] == "canceled"


async def test_card_needing_authentication_fails_instead_of_waiting(
        payments: StripeConnector) -> None:
    with pytest.raises(StripeRefused) as info:
        await payments.authorize(step(), amount=1000, currency="eur", order_id="o-3",
                                 payment_method="pm_card_authenticationRequired")
    assert info.value.code == "authentication_required"


async def test_same_key_with_other_parameters_is_an_idempotency_error(
        payments: StripeConnector, control: SandboxControl) -> None:
    ctx = step()
    await payments.authorize(ctx, amount=1000, currency="eur", order_id="o-1")
    with pytest.raises(StripeRefused, match="same parameters on every attempt") as info:
        await payments.authorize(ctx, amount=2000, currency="eur", order_id="o-1")
    assert info.value.type == "idempotency_error"
    assert (await control.state("stripe"))["idempotency_errors"] == 1


async def test_wrong_api_key_is_refused_without_echoing_it(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    wrong = "sk_test_51WrongKey999999999999999999999999"
    async with StripeConnector(settings(sandbox, api_key=wrong)) as payments:
        with pytest.raises(StripeRefused) as info:
            await authorized(payments)
    assert info.value.http_status == 401 and info.value.retryable is False
    assert "Invalid API Key provided" in str(info.value) and wrong not in str(info.value)


async def test_unknown_payment_intent_is_refused_as_missing(payments: StripeConnector) -> None:
    with pytest.raises(StripeRefused) as info:
        await payments.capture(step("capture_payment"), "pi_doesnotexist")
    assert (info.value.http_status, info.value.code) == (404, "resource_missing")


# --- faults -----------------------------------------------------------------------------


async def test_a_429_burst_is_absorbed_by_one_layer_of_retries(
        payments: StripeConnector, control: SandboxControl) -> None:
    await control.set_faults("stripe", burst_429=2, retry_after_s=0)
    result = await authorized(payments)
    assert result["status"] == "requires_capture"
    state = await control.state("stripe")
    assert state["requests"]["POST /v1/payment_intents"] == 3  # two 429s, then created
    assert len(state["payment_intents"]) == 1


async def test_an_outage_is_transient_and_opens_the_breaker(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    await control.set_faults("stripe", error_rate=1.0)
    async with StripeConnector(settings(sandbox, max_retries=2,
                                        breaker_failure_threshold=3)) as payments:
        with pytest.raises(TransientConnectorError) as info:
            await authorized(payments)
        assert info.value.retryable is True and "500" in str(info.value)
        with pytest.raises(CircuitOpenError):
            await authorized(payments)
    state = await control.state("stripe")
    assert state["requests"]["POST /v1/payment_intents"] == 3  # the breaker failed fast
    assert state["payment_intents"] == {}


async def test_a_hanging_stripe_times_out_as_transient(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    await control.set_faults("stripe", timeout_rate=1.0, hang_s=2)
    async with StripeConnector(settings(sandbox, max_retries=0, timeout_s=0.3)) as payments:
        with pytest.raises(TransientConnectorError, match="no answer from Stripe"):
            await authorized(payments)


async def test_a_refused_connection_is_transient() -> None:
    s = load_settings(StripeSettings, base_url="http://127.0.0.1:9", api_key=SANDBOX_API_KEY,
                      max_retries=1, retry_initial_s=0, retry_max_s=0)
    async with StripeConnector(s) as payments:
        with pytest.raises(TransientConnectorError, match="ConnectError"):
            await authorized(payments)


# --- settings and wiring ----------------------------------------------------------------


def test_missing_api_key_names_both_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_STRIPE_API_KEY", raising=False)
    monkeypatch.delenv("HUB_STRIPE_API_KEY_FILE", raising=False)
    with pytest.raises(ConnectorConfigError, match="HUB_STRIPE_API_KEY or HUB_STRIPE_API_KEY_"):
        load_settings(StripeSettings)


def test_bad_base_url_names_the_variable_and_not_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_STRIPE_BASE_URL", "not a url")
    monkeypatch.setenv("HUB_STRIPE_API_KEY", SANDBOX_API_KEY)
    with pytest.raises(ConnectorConfigError, match="HUB_STRIPE_BASE_URL") as info:
        load_settings(StripeSettings)
    assert SANDBOX_API_KEY not in str(info.value)


def test_the_real_stripe_is_the_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HUB_STRIPE_BASE_URL", raising=False)
    monkeypatch.setenv("HUB_STRIPE_API_KEY", SANDBOX_API_KEY)
    monkeypatch.setenv("HUB_STRIPE_API_VERSION", "2025-03-31.basil")
    loaded = load_settings(StripeSettings)
    assert str(loaded.base_url) == "https://api.stripe.com/"
    assert loaded.api_version == "2025-03-31.basil"


async def test_payments_is_built_from_the_environment(
        sandbox: SandboxServer, control: SandboxControl,
        monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in sandbox.connector_env().items():
        monkeypatch.setenv(name, value)
    container = Container()
    payments = container.resolve("payments")
    assert isinstance(payments, StripeConnector)
    assert (await authorized(payments))["status"] == "requires_capture"
    await container.aclose()


# --- the sandbox's Stripe semantics, seen without the SDK --------------------------------


async def test_sandbox_replays_a_repeated_key_and_refuses_other_parameters(
        http: httpx.AsyncClient, control: SandboxControl) -> None:
    body = {"amount": "900", "currency": "usd", "metadata[order_id]": "o-5"}
    first = await http.post("/v1/payment_intents", data=body, headers={"Idempotency-Key": "k-1"})
    again = await http.post("/v1/payment_intents", data=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json() and first.json()["metadata"] == {"order_id": "o-5"}
    assert again.headers["idempotent-replayed"] == "true"
    assert "idempotent-replayed" not in first.headers
    assert first.headers["request-id"].startswith("req_")

    other = await http.post("/v1/payment_intents", data={**body, "amount": "901"},
                            headers={"Idempotency-Key": "k-1"})
    assert other.status_code == 400
    assert other.json()["error"]["type"] == "idempotency_error"
    elsewhere = await http.post(f"/v1/payment_intents/{first.json()['id']}/cancel",
                                headers={"Idempotency-Key": "k-1"})
    assert elsewhere.status_code == 400 and "same endpoint" in elsewhere.json()["error"][
        "message"]

    basic = base64.b64encode(f"{OTHER_KEY}:".encode()).decode()
    scoped = await http.post("/v1/payment_intents", data=body, headers={
        "Idempotency-Key": "k-1", "Authorization": f"Basic {basic}"})
    assert scoped.status_code == 200 and scoped.json()["id"] != first.json()["id"]
    assert len((await control.state("stripe"))["payment_intents"]) == 2


async def test_sandbox_does_not_save_an_answer_to_invalid_parameters(
        http: httpx.AsyncClient, control: SandboxControl) -> None:
    missing = await http.post("/v1/payment_intents", data={"currency": "usd"},
                              headers={"Idempotency-Key": "k-2"})
    assert missing.status_code == 400
    assert missing.json()["error"] | {"request_log_url": None} == {
        "type": "invalid_request_error", "code": "parameter_missing", "param": "amount",
        "message": "Missing required param: amount.",
        "doc_url": "https://stripe.com/docs/error-codes/parameter-missing",
        "request_log_url": None}
    fixed = await http.post("/v1/payment_intents", data={"amount": "500", "currency": "usd"},
                            headers={"Idempotency-Key": "k-2"})
    assert fixed.status_code == 200
    unknown = await http.post("/v1/payment_intents",
                              data={"amount": "500", "currency": "usd", "colour": "red"})
    assert unknown.json()["error"]["code"] == "parameter_unknown"


async def test_sandbox_answers_401_in_stripes_format(http: httpx.AsyncClient) -> None:
    anonymous = await http.get("/v1/payment_intents/pi_x", headers={"Authorization": ""})
    assert anonymous.status_code == 401
    assert "did not provide an API key" in anonymous.json()["error"]["message"]
    wrong = await http.get("/v1/payment_intents/pi_x",
                           headers={"Authorization": "Bearer sk_test_51NotOurs00000000001234"})
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"]
    error = wrong.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["message"].endswith("1234") and "NotOurs" not in error["message"]


async def test_sandbox_refuses_a_confirmation_that_may_redirect_without_return_url(
        http: httpx.AsyncClient) -> None:
    created = await http.post("/v1/payment_intents", data={
        "amount": "500", "currency": "usd", "payment_method": "pm_card_visa"})
    confirm = await http.post(f"/v1/payment_intents/{created.json()['id']}/confirm")
    assert confirm.status_code == 400 and confirm.json()["error"]["param"] == "return_url"


async def test_sandbox_answers_unknown_routes_in_stripes_format(
        http: httpx.AsyncClient) -> None:
    answer = await http.post("/v1/charges/ch_1/frobnicate")
    assert answer.status_code == 404
    assert answer.json()["error"]["message"].startswith("Unrecognized request URL (POST: ")


async def test_injected_faults_are_in_stripes_format(
        http: httpx.AsyncClient, control: SandboxControl) -> None:
    await control.set_faults("stripe", burst_429=1, retry_after_s=2)
    limited = await http.get("/v1/refunds/re_x")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert limited.headers["stripe-should-retry"] == "true"
    assert limited.json()["error"]["code"] == "rate_limit"
    await control.set_faults("stripe", error_rate=1.0)
    failed = await http.get("/v1/refunds/re_x")
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "api_error"


def test_permanent_refusals_are_permanent_connector_errors() -> None:
    assert issubclass(StripeRefused, PermanentConnectorError)

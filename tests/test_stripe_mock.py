"""Conformance beyond our own fake: the Stripe connector's requests against ``stripe-mock``.

``stripe-mock`` is Stripe's official API mock (Go module github.com/stripe/stripe-mock,
built by ``scripts/install-stripe-mock``); it validates every request against Stripe's
OpenAPI specification and answers fixtures without keeping state. So these tests assert
that no request of ours was refused, not the values that come back. If stripe-mock cannot
be built (no Go, no module proxy), the tests fail saying so: they never skip.
"""

from __future__ import annotations

import socket
import subprocess
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from connectors import load_settings
from connectors.stripe import StripeConnector, StripeSettings
from hub import Container, StepContext

pytestmark = [
    pytest.mark.slow,
    # the SDK's HTTPXClient hands httpx the form body as data=str
    pytest.mark.filterwarnings("ignore:Use 'content=<...>':DeprecationWarning"),
]

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "sk_test_123"  # stripe-mock takes any key that looks like a test-mode secret key


@pytest.fixture(scope="session")
def stripe_mock_binary() -> Path:
    script = ROOT / "scripts" / "install-stripe-mock"
    try:
        done = subprocess.run([str(script), "--print"], capture_output=True, text=True,
                              timeout=900, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("scripts/install-stripe-mock took over 15 minutes; the Stripe conformance "
                    "test needs stripe-mock", pytrace=False)
    binary = Path(done.stdout.strip().splitlines()[-1]) if done.stdout.strip() else None
    if done.returncode != 0 or binary is None or not binary.is_file():
        pytest.fail("stripe-mock is not available, so the Stripe connector's conformance "
                    f"cannot be checked: scripts/install-stripe-mock exited {done.returncode}: "
                    f"{done.stderr.strip()[-800:]}", pytrace=False)
    return binary


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def stripe_mock(stripe_mock_binary: Path, tmp_path_factory: pytest.TempPathFactory,
                ) -> Iterator[str]:
    """stripe-mock listening on a free loopback port (HTTP only); its base URL."""
    port = _free_port()
    log_path = tmp_path_factory.mktemp("stripe-mock") / "stripe-mock.log"
    with log_path.open("wb") as log_file:
        process = subprocess.Popen(
            [str(stripe_mock_binary), "-http-addr", f"127.0.0.1:{port}"],
            stdout=log_file, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            if process.poll() is not None:
                pytest.fail(f"stripe-mock exited {process.returncode} at start: "
                            f"{log_path.read_text()[-800:]}", pytrace=False)
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"stripe-mock did not listen on port {port} within 30s: "
                                f"{log_path.read_text()[-800:]}", pytrace=False)
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
async def payments(stripe_mock: str) -> AsyncIterator[StripeConnector]:
    settings = load_settings(StripeSettings, base_url=stripe_mock, api_key=API_KEY,
                             max_retries=0)
    async with StripeConnector(settings) as connector:
        yield connector


def step(name: str) -> StepContext:
    return StepContext.make(execution_id=str(uuid.uuid4()), transaction_id="order-1",
                            workflow="t", step=name, attempt=1, container=Container(),
                            trigger={"traceparent":
                                     "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"})


async def test_stripe_mock_refuses_requests_that_break_the_spec(stripe_mock: str) -> None:
    """The premise of the other tests: stripe-mock validates, it does not accept anything."""
    async with httpx.AsyncClient(base_url=stripe_mock, auth=(API_KEY, "")) as client:
        bad = await client.post("/v1/payment_intents",
                                data={"amount": "10", "currency": "usd", "colour": "red"})
        good = await client.post("/v1/payment_intents", data={"amount": "10", "currency": "usd"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"
    assert good.status_code == 200


async def test_authorize_conforms(payments: StripeConnector) -> None:
    result = await payments.authorize(step("authorize_payment"), amount=1999, currency="usd",
                                      order_id="o-1", customer_email="ada@example.com")
    assert result["id"]


async def test_create_confirm_and_retrieve_conform(payments: StripeConnector) -> None:
    ctx = step("authorize_payment")
    created = await payments.create_payment_intent(
        ctx, amount=500, currency="eur", order_id="o-2", capture_method="automatic")
    await payments.confirm_payment_intent(ctx, created["id"], payment_method="pm_card_visa")
    await payments.retrieve_payment_intent(ctx, created["id"])


async def test_capture_conforms(payments: StripeConnector) -> None:
    await payments.capture(step("capture_payment"), "pi_123")
    await payments.capture(step("capture_payment"), "pi_123", amount_to_capture=700)


async def test_cancel_conforms(payments: StripeConnector) -> None:
    await payments.cancel(step("authorize_payment"), "pi_123")
    await payments.cancel(step("authorize_payment"), "pi_123", reason="requested_by_customer")


async def test_refund_conforms(payments: StripeConnector) -> None:
    result = await payments.refund(step("refund_payment"), "pi_123", amount=300,
                                   reason="requested_by_customer",
                                   metadata={"refund_request": "r-1"})
    assert result["id"]
    await payments.refund(step("refund_payment"), "pi_123")

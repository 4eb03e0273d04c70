"""Payments on Stripe, through the official SDK's async client, behind our ``CallGuard``.

Used subset of API v1: PaymentIntents with manual capture (create, confirm, retrieve,
capture, cancel) and Refunds (create). ``StripeClient`` talks through the SDK's
``HTTPXClient``; ``base_addresses`` points it at the sandbox or at the real API.

Retries: one layer, ours. The SDK's own are off (``max_network_retries=0``), and
``CallGuard`` repeats attempts as it does for every connector: backoff from the settings,
``Retry-After`` honoured, the breaker and the limits counted per attempt. Every POST carries
an ``Idempotency-Key`` derived from the step's (``f"{ctx.idempotency_key}:{call}"``, one
suffix per call, so a step that makes two calls has two keys), so Stripe replays instead
of repeating whether the retry is ours or the engine's. Outside a step (``ctx=None``) a
random key per logical call still makes our own retries safe.

Errors, mapped in ``StripeConnector._map_error`` only:
```
APIConnectionError                     TransientConnectorError (RetryableHttpError, retried)
RateLimitError, 409 (key in use), 5xx  TransientConnectorError (RetryableHttpError, retried)
CardError                              StripeRefused (permanent): code and decline_code
InvalidRequestError, Authentication-,
PermissionError                        StripeRefused (permanent): type, code, message
IdempotencyError                       StripeRefused (permanent): a bug, same key and
                                       other parameters; step parameters must be deterministic
```
Compensations are idempotent: cancelling a canceled intent and capturing a captured one
return it; cancelling a captured one refuses, saying to refund instead.

Left out: customers, payment methods created from card details, 3-D Secure (confirmation
sends ``error_on_requires_action``: a card asking for it fails the authorization), refunds
found by listing (a re-run refund step replays through its key; one retried with another key
is refused by Stripe as ``charge_already_refunded``). A 5xx that Stripe recorded under a
key (``Stripe-Should-Retry: false``) replays on every retry, so that step fails for good
once its retries are spent.
The SDK builds its own httpx client: timeouts come from the settings, the connection pool
is httpx's default, and ``max_concurrency`` bounds what is in flight.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, ClassVar, Literal, TypeVar

import httpx
import stripe
import structlog
from pydantic import AnyHttpUrl, FilePath, SecretStr
from pydantic_settings import SettingsConfigDict
from stripe.params import (
    PaymentIntentCancelParams,
    PaymentIntentCaptureParams,
    PaymentIntentConfirmParams,
    PaymentIntentCreateParams,
    RefundCreateParams,
)

from connectors.base import (
    CallGuard,
    ConnectorConfigError,
    ConnectorSettings,
    RetryableHttpError,
    Sleep,
    load_settings,
    parse_retry_after,
)
from hub import (
    ConnectorCall,
    PermanentConnectorError,
    StepContext,
    TransientConnectorError,
    provides,
)

log = structlog.get_logger("connectors.stripe")

T = TypeVar("T")

CancellationReason = Literal["abandoned", "duplicate", "fraudulent", "requested_by_customer"]
RefundReason = Literal["duplicate", "fraudulent", "requested_by_customer"]
CaptureMethod = Literal["automatic", "automatic_async", "manual"]

_UNEXPECTED_STATE = "payment_intent_unexpected_state"


class StripeSettings(ConnectorSettings):
    """``HUB_STRIPE_*``: the API key (or ``HUB_STRIPE_API_KEY_FILE``) and where Stripe is."""

    model_config = SettingsConfigDict(env_prefix="HUB_STRIPE_", extra="ignore")
    required_secrets: ClassVar[tuple[str, ...]] = ("api_key",)

    base_url: AnyHttpUrl = AnyHttpUrl("https://api.stripe.com")
    api_key: SecretStr | None = None
    api_key_file: FilePath | None = None
    api_version: str | None = None
    """``Stripe-Version``; the SDK's pinned version when unset."""


class StripeRefused(PermanentConnectorError):
    """Stripe refused a call for good; its error fields travel as attributes."""

    def __init__(self, message: str, *, operation: str, http_status: int | None,
                 type: str | None, code: str | None, decline_code: str | None = None,
                 param: str | None = None) -> None:
        super().__init__(message)
        self.operation = operation
        self.http_status = http_status
        self.type = type
        self.code = code
        self.decline_code = decline_code
        self.param = param


class StripeConnector:
    """The ``payments`` service: authorize, capture, cancel and refund card payments."""

    name = "stripe"

    def __init__(self, settings: StripeSettings, *, sleep: Sleep = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if settings.api_key is None:
            raise ConnectorConfigError("StripeConnector: HUB_STRIPE_API_KEY or "
                                       "HUB_STRIPE_API_KEY_FILE is required")
        self.settings = settings
        self.guard = CallGuard(self.name, settings, sleep=sleep, clock=clock)
        self.breaker = self.guard.breaker
        self._secrets = settings.secret_values()
        self._http = stripe.HTTPXClient(
            timeout=httpx.Timeout(settings.timeout_s, connect=settings.connect_timeout_s))
        self._client = stripe.StripeClient(
            settings.api_key.get_secret_value(),
            http_client=self._http,
            base_addresses={"api": str(settings.base_url).rstrip("/")},
            stripe_version=settings.api_version,
            max_network_retries=0,
        )

    async def aclose(self) -> None:
        await self._http.close_async()  # type: ignore[no-untyped-call]

    async def __aenter__(self) -> StripeConnector:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- the workflow's calls -----------------------------------------------------------

    async def authorize(self, ctx: StepContext | None, *, amount: int, currency: str,
                        order_id: str, payment_method: str = "pm_card_visa",
                        customer_email: str | None = None) -> dict[str, Any]:
        """Hold ``amount`` on the card: create a manual-capture intent, then confirm it.

        Two calls with two keys (``:create``, ``:confirm``), so a re-run step replays both
        and holds the money once. A decline raises ``StripeRefused`` with its decline code,
        after cancelling the intent: a failed step is not rolled back by the engine, so it
        leaves nothing open behind it.
        """
        created = await self.create_payment_intent(
            ctx, amount=amount, currency=currency, order_id=order_id,
            payment_method=payment_method, customer_email=customer_email)
        try:
            return await self.confirm_payment_intent(ctx, created["id"])
        except StripeRefused:
            await self.cancel(ctx, created["id"], reason="abandoned")
            raise

    async def create_payment_intent(
            self, ctx: StepContext | None, *, amount: int, currency: str, order_id: str,
            payment_method: str | None = None, customer_email: str | None = None,
            capture_method: CaptureMethod = "manual") -> dict[str, Any]:
        params: PaymentIntentCreateParams = {
            "amount": amount, "currency": currency.lower(), "capture_method": capture_method,
            "metadata": {"order_id": order_id},
            # server-side confirmation: no payment method that would redirect the customer
            "automatic_payment_methods": {"enabled": True, "allow_redirects": "never"}}
        if payment_method is not None:
            params["payment_method"] = payment_method
        if customer_email is not None:
            params["receipt_email"] = customer_email
        options = self._options(ctx, "create")
        intent = await self._call("create payment intent", lambda: (
            self._client.v1.payment_intents.create_async(params, options)),
            ctx, options, ("create_payment_intent", "POST", "/v1/payment_intents"))
        return _intent(intent)

    async def confirm_payment_intent(self, ctx: StepContext | None, payment_intent_id: str,
                                     *, payment_method: str | None = None) -> dict[str, Any]:
        # a card that asks for 3-D Secure fails the call (a back-end step cannot complete it)
        # instead of leaving the intent waiting in requires_action
        params: PaymentIntentConfirmParams = {"error_on_requires_action": True}
        if payment_method is not None:
            params["payment_method"] = payment_method
        options = self._options(ctx, "confirm")
        intent = await self._call(f"confirm payment intent {payment_intent_id}", lambda: (
            self._client.v1.payment_intents.confirm_async(payment_intent_id, params, options)),
            ctx, options, ("confirm_payment_intent", "POST",
                           f"/v1/payment_intents/{payment_intent_id}/confirm"))
        return _intent(intent)

    async def retrieve_payment_intent(self, ctx: StepContext | None,
                                      payment_intent_id: str) -> dict[str, Any]:
        options = self._options(ctx, None)
        intent = await self._call(f"retrieve payment intent {payment_intent_id}", lambda: (
            self._client.v1.payment_intents.retrieve_async(payment_intent_id, None, options)),
            ctx, options, ("retrieve_payment_intent", "GET",
                           f"/v1/payment_intents/{payment_intent_id}"))
        return _intent(intent)

    async def capture(self, ctx: StepContext | None, payment_intent_id: str, *,
                      amount_to_capture: int | None = None) -> dict[str, Any]:
        """Take the held money; an intent captured already (by any key) is returned as is."""
        params: PaymentIntentCaptureParams = {}
        if amount_to_capture is not None:
            params["amount_to_capture"] = amount_to_capture
        options = self._options(ctx, "capture")
        try:
            intent = await self._call(f"capture payment intent {payment_intent_id}", lambda: (
                self._client.v1.payment_intents.capture_async(
                    payment_intent_id, params, options)),
                ctx, options, ("capture_payment_intent", "POST",
                               f"/v1/payment_intents/{payment_intent_id}/capture"))
        except StripeRefused as exc:
            if exc.code != _UNEXPECTED_STATE:
                raise
            current = await self.retrieve_payment_intent(ctx, payment_intent_id)
            if current["status"] != "succeeded":
                raise
            log.info("payment_already_captured", payment_intent=payment_intent_id)
            return current
        return _intent(intent)

    async def cancel(self, ctx: StepContext | None, payment_intent_id: str, *,
                     reason: CancellationReason = "abandoned") -> dict[str, Any]:
        """Release the hold. Canceled already: success. Captured: refused, refund instead."""
        params: PaymentIntentCancelParams = {"cancellation_reason": reason}
        options = self._options(ctx, "cancel")
        operation = f"cancel payment intent {payment_intent_id}"
        try:
            intent = await self._call(operation, lambda: (
                self._client.v1.payment_intents.cancel_async(
                    payment_intent_id, params, options)),
                ctx, options, ("cancel_payment_intent", "POST",
                               f"/v1/payment_intents/{payment_intent_id}/cancel"))
        except StripeRefused as exc:
            if exc.code != _UNEXPECTED_STATE:
                raise
            current = await self.retrieve_payment_intent(ctx, payment_intent_id)
            if current["status"] == "canceled":
                log.info("payment_already_canceled", payment_intent=payment_intent_id)
                return current
            if current["status"] == "succeeded":
                raise StripeRefused(
                    f"connector 'stripe': {operation}: it was captured already, so it "
                    "cannot be canceled; refund it instead",
                    operation=operation, http_status=exc.http_status, type=exc.type,
                    code=exc.code) from exc
            raise
        return _intent(intent)

    async def refund(self, ctx: StepContext | None, payment_intent_id: str, *,
                     amount: int | None = None, reason: RefundReason | None = None,
                     metadata: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Give back ``amount`` (all that is left by default) of a captured payment."""
        params: RefundCreateParams = {"payment_intent": payment_intent_id}
        if amount is not None:
            params["amount"] = amount
        if reason is not None:
            params["reason"] = reason
        if metadata:
            params["metadata"] = dict(metadata)
        options = self._options(ctx, "refund")
        refund = await self._call(f"refund payment intent {payment_intent_id}", lambda: (
            self._client.v1.refunds.create_async(params, options)),
            ctx, options, ("create_refund", "POST", "/v1/refunds"))
        intent = refund.payment_intent
        return {"id": refund.id, "status": refund.status, "amount": refund.amount,
                "payment_intent": intent if isinstance(intent, str | None) else intent.id}

    # --- the edge -----------------------------------------------------------------------

    def _options(self, ctx: StepContext | None, call: str | None) -> stripe.RequestOptions:
        """Per-request options: the derived idempotency key (POSTs) and trace context."""
        options: stripe.RequestOptions = {}
        if call is not None:
            base = ctx.idempotency_key if ctx is not None else f"adhoc-{uuid.uuid4()}"
            options["idempotency_key"] = f"{base}:{call}"
        if ctx is not None and ctx.traceparent:
            options["headers"] = {"traceparent": ctx.traceparent}
        return options

    async def _call(self, operation: str, call: Callable[[], Awaitable[T]],
                    ctx: StepContext | None, options: stripe.RequestOptions,
                    lineage: tuple[str, str, str]) -> T:
        """One logical call; ``lineage`` (name, method, path) is what each attempt records
        in the step's lineage, as the SDK would send it."""
        attempts = 0

        async def attempt() -> T:
            nonlocal attempts
            attempts += 1
            started = time.perf_counter()
            try:
                result = await call()
            except stripe.StripeError as exc:
                self._record(ctx, options, lineage, attempts, started, None, exc)
                raise self._map_error(operation, exc) from exc
            self._record(ctx, options, lineage, attempts, started, result, None)
            return result

        return await self.guard.call(attempt, log_fields={"operation": operation})

    def _record(self, ctx: StepContext | None, options: stripe.RequestOptions,
                lineage: tuple[str, str, str], attempt: int, started: float,
                result: object, exc: stripe.StripeError | None) -> None:
        """The one place an attempt enters the lineage: the object's id (``pi_...``,
        ``re_...``) is the outside id; no parameters, headers or key."""
        if ctx is None:
            return
        name, method, path = lineage
        status: int | None = None
        error: str | None = None
        if exc is not None:
            status = exc.http_status
            if status is None:
                error = type(exc.__cause__ or exc).__name__
        else:
            response = getattr(result, "last_response", None)
            status = getattr(response, "code", None)
        outside = getattr(result, "id", None) if exc is None else None
        ctx.record_call(ConnectorCall(
            system=self.name, operation=name, method=method, path=self._redact(path),
            attempt=attempt, duration_ms=(time.perf_counter() - started) * 1000.0,
            status=status if isinstance(status, int) else None, error=error,
            idempotency_key=options.get("idempotency_key"),
            outside_id=self._redact(outside) if isinstance(outside, str) else None))

    def _map_error(self, operation: str, exc: stripe.StripeError,
                   ) -> TransientConnectorError | PermanentConnectorError:
        """The one place the SDK's errors become ours."""
        what = f"connector 'stripe': {operation}"
        if isinstance(exc, stripe.APIConnectionError):
            cause = exc.__cause__
            sent = not isinstance(cause, httpx.ConnectError | httpx.ConnectTimeout
                                  | httpx.PoolTimeout)
            return RetryableHttpError(
                f"{what} failed: no answer from Stripe ({type(cause or exc).__name__})",
                status=None, sent=sent)
        status = exc.http_status
        fields = _error_fields(exc)
        type_, code = _str(fields.get("type")), _str(fields.get("code")) or exc.code
        decline_code, param = _str(fields.get("decline_code")), _str(fields.get("param"))
        message = self._redact(_str(fields.get("message")) or exc.user_message or "no message")
        label = "/".join(part for part in (type_, code, decline_code) if part)
        detail = f"Stripe answered {status} {label}: {message}"
        if isinstance(exc, stripe.RateLimitError) or (
                status is not None and (status >= 500 or status == 409)):
            return RetryableHttpError(f"{what}: {detail}", status=status,
                                      retry_after_s=parse_retry_after(_header(exc, "retry-after")))
        if isinstance(exc, stripe.IdempotencyError):
            detail += ("; the same Idempotency-Key was sent with other parameters: the step "
                       "must send the same parameters on every attempt")
        return StripeRefused(f"{what}: {detail}", operation=operation, http_status=status,
                             type=type_, code=code, decline_code=decline_code, param=param)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _intent(intent: stripe.PaymentIntent) -> dict[str, Any]:
    return {"id": intent.id, "status": intent.status, "amount": intent.amount,
            "amount_capturable": intent.amount_capturable,
            "amount_received": intent.amount_received, "currency": intent.currency}


def _error_fields(exc: stripe.StripeError) -> dict[str, Any]:
    body = exc.json_body
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _str(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _header(exc: stripe.StripeError, name: str) -> str | None:
    for key, value in (exc.headers or {}).items():
        if key.lower() == name:
            return value
    return None


@provides("payments")
def _build() -> StripeConnector:
    return StripeConnector(load_settings(StripeSettings))

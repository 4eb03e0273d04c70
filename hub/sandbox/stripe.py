"""``StripeSandbox``: the subset of Stripe's API v1 the payments connector uses, in memory.

```
POST /v1/payment_intents               create (capture_method, confirm, payment_method, ...)
GET  /v1/payment_intents/{id}          retrieve
POST /v1/payment_intents/{id}/confirm  requires_payment_method|requires_confirmation ->
                                       requires_capture (manual) | succeeded (automatic)
POST /v1/payment_intents/{id}/capture  requires_capture -> succeeded
POST /v1/payment_intents/{id}/cancel   requires_* | processing -> canceled
POST /v1/refunds                       of a succeeded intent, up to what is left
GET  /v1/refunds/{id}                  retrieve
```
What is faithful, because the connector (or a workflow) depends on it:
- authentication with the secret key as Bearer token or Basic user name; 401 otherwise;
- form-encoded bodies in Stripe's bracket notation (``metadata[order_id]=...``), unknown or
  malformed parameters refused with ``parameter_unknown`` / ``parameter_missing`` / ...;
- objects shaped as Stripe's (``object``, ``pi_``/``ch_``/``re_`` ids, ``amount_capturable``,
  ``amount_received``, ``latest_charge``, ``metadata``, ``created``, ``livemode: false``);
- errors as ``{"error": {"type", "code", "message", "param", "doc_url", ...}}`` and a
  ``Request-Id`` header on every answer; state errors are ``payment_intent_unexpected_state``;
- idempotency: a POST's ``Idempotency-Key`` (scoped per API key) with the same endpoint and
  parameters replays the first answer, error or not, with ``Idempotent-Replayed: true``;
  other parameters or another endpoint: 400 ``idempotency_error``. As on Stripe, nothing is
  saved for a request that failed authentication or parameter validation;
- a confirm without a ``return_url`` on an intent open to redirecting payment methods
  (``automatic_payment_methods`` enabled without ``allow_redirects=never``) is refused;
- Stripe's test payment methods (``TEST_CARDS``): ``pm_card_visa`` succeeds,
  ``pm_card_chargeDeclined`` answers 402 ``card_error`` ``card_declined`` /
  ``generic_decline`` and leaves the intent in ``requires_payment_method``;
- injected faults in Stripe's format: 500 ``api_error`` and 429 ``rate_limit``, both with
  ``Stripe-Should-Retry: true`` (and ``Retry-After`` on 429s).

Seeded: only the secret key (``SANDBOX_API_KEY``, or ``api_keys``) and the test cards;
intents are made by the workflows. Left out: customers, charges and payment-methods APIs,
lists and ``expand``, webhooks, live mode, key expiry after 24 hours, 409s for concurrent
requests with one key (requests run one at a time here), currencies' exact minimums.
Inspection (``/_sandbox/state``): intents, refunds, per-intent counts of captures, cancels
and refunds, intents by ``metadata[order_id]``, idempotent replays and key conflicts.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import re
import string
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import Response

from hub.sandbox.system import SandboxSystem

SANDBOX_API_KEY = "sk_test_51HubSandbox0000000000000000000000"
"""The secret key the sandbox accepts and puts in ``HUB_STRIPE_API_KEY``."""

API_VERSION = "2026-10-28.endive"
"""Answered in ``Stripe-Version`` when a request names none."""

TEST_CARDS: dict[str, tuple[str, str, str] | None] = {
    "pm_card_visa": None,
    "pm_card_mastercard": None,
    "pm_card_amex": None,
    "pm_card_chargeDeclined": ("card_declined", "generic_decline", "Your card was declined."),
    "pm_card_visa_chargeDeclined": (
        "card_declined", "generic_decline", "Your card was declined."),
    "pm_card_chargeDeclinedInsufficientFunds": (
        "card_declined", "insufficient_funds", "Your card has insufficient funds."),
    "pm_card_chargeDeclinedExpiredCard": (
        "expired_card", "expired_card", "Your card has expired."),
    "pm_card_chargeDeclinedIncorrectCvc": (
        "incorrect_cvc", "incorrect_cvc", "Your card's security code is incorrect."),
    "pm_card_authenticationRequired": (
        "authentication_required", "authentication_required",
        "Your card was declined. This transaction requires authentication."),
}
"""Stripe's test payment methods: None succeeds, else (code, decline_code, message)."""

_NEEDS_AUTHENTICATION = "pm_card_authenticationRequired"
_CONFIRMABLE = ("requires_payment_method", "requires_confirmation", "requires_action")
_CANCELABLE = ("requires_payment_method", "requires_capture", "requires_confirmation",
               "requires_action", "processing")
_CAPTURE_METHODS = ("automatic", "automatic_async", "manual")
_CANCELLATION_REASONS = ("duplicate", "fraudulent", "requested_by_customer", "abandoned")
_REFUND_REASONS = ("duplicate", "fraudulent", "requested_by_customer")
_MAX_AMOUNT = 99_999_999
_MIN_AMOUNT = {"usd": 50, "eur": 50, "gbp": 30, "chf": 50, "cad": 50, "aud": 50}
_ID_CHARS = string.ascii_letters + string.digits

Params = dict[str, Any]
Action = Callable[[Params], dict[str, Any]]


class StripeApiError(Exception):
    """An answer in Stripe's error format; ``saved`` is False for failures Stripe's
    idempotency layer does not record (authentication, parameter validation)."""

    def __init__(self, status: int, type: str, message: str, *, code: str | None = None,
                 param: str | None = None, saved: bool = True, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.saved = status, saved
        self.error: dict[str, Any] = {"type": type, "message": message}
        if code:
            self.error["code"] = code
            self.error["doc_url"] = f"https://stripe.com/docs/error-codes/{code.replace('_', '-')}"
        if param:
            self.error["param"] = param
        self.error.update(extra)

    def body(self, request_id: str) -> dict[str, Any]:
        return {"error": {**self.error,
                          "request_log_url": f"https://dashboard.stripe.com/test/logs/{request_id}"}}


def invalid(message: str, *, code: str | None = None, param: str | None = None,
            status: int = 400, saved: bool = True, **extra: Any) -> StripeApiError:
    return StripeApiError(status, "invalid_request_error", message, code=code, param=param,
                          saved=saved, **extra)


def _validation(message: str, code: str, param: str) -> StripeApiError:
    return invalid(message, code=code, param=param, saved=False)


@dataclass(frozen=True)
class _Saved:
    """The first answer to one idempotency key, replayed to every repeat."""

    endpoint: str
    params: Params
    status: int
    body: bytes
    request_id: str


class StripeSandbox(SandboxSystem):
    name: ClassVar[str] = "stripe"
    default_port: ClassVar[int] = 8901

    def __init__(self, *, seed: int | None = None,
                 api_keys: tuple[str, ...] = (SANDBOX_API_KEY,)) -> None:
        self.seed = seed
        self.api_keys = api_keys
        self._init_state()
        super().__init__(seed=seed)

    def _init_state(self) -> None:
        self._rng = random.Random(self.seed)
        self.intents: dict[str, dict[str, Any]] = {}
        self.charges: dict[str, dict[str, Any]] = {}
        self.refunds: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, Counter[str]] = {}
        self.replays = 0
        self.idempotency_errors = 0
        self._saved: dict[tuple[str, str], _Saved] = {}

    # --- SandboxSystem ------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/v1")

        def route(method: str, path: str, action: Callable[..., dict[str, Any]]) -> None:
            async def endpoint(request: Request) -> Response:
                ids = dict(request.path_params)
                return await self._serve(request, lambda params: action(params, **ids))
            router.add_api_route(path, endpoint, methods=[method])

        route("POST", "/payment_intents", self._create_intent)
        route("GET", "/payment_intents/{intent}", self._retrieve_intent)
        route("POST", "/payment_intents/{intent}/confirm", self._confirm_intent)
        route("POST", "/payment_intents/{intent}/capture", self._capture_intent)
        route("POST", "/payment_intents/{intent}/cancel", self._cancel_intent)
        route("POST", "/refunds", self._create_refund)
        route("GET", "/refunds/{refund}", self._retrieve_refund)
        return router

    def install(self, app: FastAPI) -> None:
        async def unrecognized(request: Request, exc: Exception) -> Response:
            status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
            if status not in (404, 405):
                return self._error(self.error_500())
            return self._error(invalid(
                f"Unrecognized request URL ({request.method}: {request.url.path}). Please "
                "see https://stripe.com/docs or we can help at https://support.stripe.com/.",
                status=404))

        app.add_exception_handler(StarletteHTTPException, unrecognized)

    def inspect(self) -> dict[str, Any]:
        by_order: dict[str, list[str]] = {}
        for intent in self.intents.values():
            order = intent["metadata"].get("order_id")
            if order is not None:
                by_order.setdefault(order, []).append(intent["id"])
        keys = ("id", "status", "amount", "amount_capturable", "amount_received", "currency",
                "capture_method", "metadata", "latest_charge", "payment_method",
                "cancellation_reason", "created")
        return {
            "payment_intents": {i: {k: pi[k] for k in keys} for i, pi in self.intents.items()},
            "refunds": dict(self.refunds),
            "counts": {i: {k: c[k] for k in ("captures", "cancels", "refunds")}
                       for i, c in self.counts.items()},
            "by_order": by_order,
            "idempotent_replays": self.replays,
            "idempotency_errors": self.idempotency_errors,
        }

    def reset(self) -> None:
        self._init_state()

    def error_response(self, status: int, *, retry_after_s: float | None = None) -> Response:
        headers = {"Stripe-Should-Retry": "true"}
        if status == 429:
            if retry_after_s is not None:
                headers["Retry-After"] = str(max(0, round(retry_after_s)))
            error = invalid("Too many requests hit the API too quickly. We recommend an "
                            "exponential backoff of your requests.", code="rate_limit",
                            status=429)
        elif status == 504:
            error = StripeApiError(504, "api_error", "Request timed out")
        else:
            error = self.error_500(status)
        return self._error(error, headers)

    def connector_env(self, base_url: str) -> dict[str, str]:
        return {"HUB_STRIPE_BASE_URL": base_url, "HUB_STRIPE_API_KEY": self.api_keys[0]}

    @staticmethod
    def error_500(status: int = 500) -> StripeApiError:
        return StripeApiError(status, "api_error", "Sorry, something went wrong. We've "
                              "already been notified of the problem, but if you need any "
                              "help, you can reach us at support.stripe.com/contact.")

    # --- the HTTP edge: auth, parameters, idempotency -----------------------------------

    async def _serve(self, request: Request, action: Action) -> Response:
        request_id = self._new_id("req_", 14)
        headers = {"Request-Id": request_id,
                   "Stripe-Version": request.headers.get("stripe-version", API_VERSION)}
        try:
            api_key = self._authenticate(request)
            if request.method == "POST":
                params = decode_form((await request.body()).decode("utf-8", "replace"))
            else:
                params = decode_form(request.url.query)
        except StripeApiError as exc:
            return self._error(exc, headers, request_id)
        key = request.headers.get("idempotency-key") if request.method == "POST" else None
        endpoint = f"{request.method} {request.url.path}"
        if key is not None:
            replay = self._replay(api_key, key, endpoint, params, headers, request_id)
            if replay is not None:
                return replay
        try:
            status, body = 200, action(params)
        except StripeApiError as exc:
            status, body = exc.status, exc.body(request_id)
            if not exc.saved:
                key = None
        raw = json.dumps(body, indent=2).encode()
        if key is not None:
            self._saved[(api_key, key)] = _Saved(endpoint, params, status, raw, request_id)
        return Response(raw, status, headers, media_type="application/json")

    def _replay(self, api_key: str, key: str, endpoint: str, params: Params,
                headers: dict[str, str], request_id: str) -> Response | None:
        if len(key) > 255:
            return self._error(invalid(
                "Invalid Idempotency-Key: it must be 255 characters or fewer.", saved=False),
                headers, request_id)
        saved = self._saved.get((api_key, key))
        if saved is None:
            return None
        if saved.endpoint != endpoint or saved.params != params:
            self.idempotency_errors += 1
            first, now = saved.endpoint.split(" ", 1)[1], endpoint.split(" ", 1)[1]
            message = (
                f"Keys for idempotent requests can only be used for the same endpoint they "
                f"were first used for ('{first}' vs '{now}'). Try using a key other than "
                f"'{key}' if you meant to execute a different request."
                if saved.endpoint != endpoint else
                "Keys for idempotent requests can only be used with the same parameters "
                f"they were first used with. Try using a key other than '{key}' if you "
                "meant to execute a different request.")
            return self._error(StripeApiError(400, "idempotency_error", message),
                               headers, request_id)
        self.replays += 1
        return Response(saved.body, saved.status, {
            **headers, "Idempotent-Replayed": "true", "Original-Request": saved.request_id},
            media_type="application/json")

    def _authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization", "")
        scheme, _, credentials = header.partition(" ")
        key = credentials.strip()
        if scheme.lower() == "basic":
            try:
                key = base64.b64decode(key, validate=True).decode().partition(":")[0]
            except (binascii.Error, UnicodeDecodeError):
                key = ""
        if not header:
            raise StripeApiError(
                401, "invalid_request_error",
                "You did not provide an API key. You need to provide your API key in the "
                "Authorization header, using Bearer auth (e.g. 'Authorization: Bearer "
                "YOUR_SECRET_KEY'). See https://stripe.com/docs/api#authentication for "
                "details, or we can help at https://support.stripe.com/.", saved=False)
        if scheme.lower() not in ("bearer", "basic") or key not in self.api_keys:
            raise StripeApiError(401, "invalid_request_error",
                                 f"Invalid API Key provided: {_redact_key(key)}", saved=False)
        return key

    def _error(self, error: StripeApiError, headers: dict[str, str] | None = None,
               request_id: str | None = None) -> Response:
        request_id = request_id or self._new_id("req_", 14)
        hdrs = {"Request-Id": request_id, **(headers or {})}
        if error.status == 401:
            hdrs["WWW-Authenticate"] = 'Basic realm="Stripe"'
        return Response(json.dumps(error.body(request_id), indent=2).encode(), error.status,
                        hdrs, media_type="application/json")

    def _new_id(self, prefix: str, length: int = 24) -> str:
        return prefix + "".join(self._rng.choice(_ID_CHARS) for _ in range(length))

    # --- payment intents ----------------------------------------------------------------

    def _create_intent(self, params: Params) -> dict[str, Any]:
        _only(params, "amount", "currency", "capture_method", "confirm", "payment_method",
              "metadata", "receipt_email", "description", "automatic_payment_methods",
              "payment_method_types", "allowed_payment_method_types",
              "error_on_requires_action", "return_url", "expand")
        amount = _int(params, "amount", required=True)
        currency = _str(params, "currency", required=True).lower()
        if not re.fullmatch(r"[a-z]{3}", currency):
            raise _validation(f"Invalid currency: {currency}.", "parameter_invalid_string",
                              "currency")
        minimum = _MIN_AMOUNT.get(currency, 1)
        if amount < minimum:
            raise invalid(f"Amount must be at least {minimum} {currency}",
                          code="amount_too_small", param="amount")
        if amount > _MAX_AMOUNT:
            raise invalid(f"Amount must be no more than {_MAX_AMOUNT} {currency}",
                          code="amount_too_large", param="amount")
        capture_method = _enum(params, "capture_method", _CAPTURE_METHODS) or "automatic"
        payment_method = _str(params, "payment_method")
        if payment_method is not None:
            _payment_method_exists(payment_method)
        types = params.get("payment_method_types") or params.get("allowed_payment_method_types")
        automatic = params.get("automatic_payment_methods")
        redirects = "always"
        if isinstance(automatic, dict):
            enabled = _bool(automatic, "enabled", param="automatic_payment_methods[enabled]")
            redirects = _enum(automatic, "allow_redirects", ("always", "never"),
                              param="automatic_payment_methods[allow_redirects]") or "always"
        else:
            enabled = not types  # the default since API version 2023-08-16
        pi_id = self._new_id("pi_")
        intent: dict[str, Any] = {
            "id": pi_id, "object": "payment_intent", "amount": amount,
            "amount_capturable": 0, "amount_received": 0,
            "automatic_payment_methods": (
                {"enabled": True, "allow_redirects": redirects} if enabled else None),
            "canceled_at": None, "cancellation_reason": None, "capture_method": capture_method,
            "client_secret": f"{pi_id}_secret_{self._new_id('', 25)}",
            "confirmation_method": "automatic", "created": int(time.time()),
            "currency": currency, "customer": None,
            "description": _str(params, "description"), "last_payment_error": None,
            "latest_charge": None, "livemode": False, "metadata": _metadata(params),
            "next_action": None, "payment_method": payment_method,
            "payment_method_types": list(types) if isinstance(types, list) else ["card"],
            "receipt_email": _str(params, "receipt_email"),
            "status": "requires_confirmation" if payment_method else "requires_payment_method",
        }
        self.intents[pi_id] = intent
        self.counts[pi_id] = Counter()
        if _bool(params, "confirm"):
            return self._confirm(intent, params)
        return dict(intent)

    def _retrieve_intent(self, params: Params, intent: str) -> dict[str, Any]:
        _only(params, "expand", "client_secret")
        return dict(self._intent(intent))

    def _confirm_intent(self, params: Params, intent: str) -> dict[str, Any]:
        _only(params, "payment_method", "error_on_requires_action", "return_url",
              "receipt_email", "capture_method", "expand")
        pi = self._intent(intent)
        if pi["status"] not in _CONFIRMABLE:
            message = (
                "You cannot confirm this PaymentIntent because it has already succeeded "
                "after being previously confirmed." if pi["status"] == "succeeded" else
                "You cannot confirm this PaymentIntent because it has a status of "
                f"{pi['status']}.")
            raise invalid(message, code="payment_intent_unexpected_state",
                          payment_intent=dict(pi))
        payment_method = _str(params, "payment_method")
        if payment_method is not None:
            _payment_method_exists(payment_method)
            pi["payment_method"] = payment_method
        if "capture_method" in params:
            pi["capture_method"] = (_enum(params, "capture_method", _CAPTURE_METHODS)
                                    or pi["capture_method"])
        if "receipt_email" in params:
            pi["receipt_email"] = _str(params, "receipt_email")
        return self._confirm(pi, params)

    def _confirm(self, pi: dict[str, Any], params: Params) -> dict[str, Any]:
        """Charge the intent's card: hold (manual capture) or take the money, or decline."""
        if pi["payment_method"] is None:
            raise invalid(
                "You cannot confirm this PaymentIntent because it's missing a payment "
                "method. You can either update the PaymentIntent with a payment method and "
                "then confirm it again, or confirm it again directly with a payment method.",
                code="payment_intent_unexpected_state", payment_intent=dict(pi))
        auto = pi["automatic_payment_methods"]
        if auto and auto["allow_redirects"] != "never" and not params.get("return_url"):
            raise invalid(
                "This PaymentIntent is configured to accept payment methods enabled in your "
                "Dashboard. Because some of these payment methods might redirect your "
                "customer off of your page, you must provide a `return_url`. If you don't "
                "want to accept redirect-based payment methods, set "
                "`automatic_payment_methods[enabled]` to `true` and "
                "`automatic_payment_methods[allow_redirects]` to `never` when creating "
                "Setup Intents and Payment Intents.", param="return_url")
        charge_id = self._new_id("ch_")
        outcome = TEST_CARDS[pi["payment_method"]]
        if pi["payment_method"] == _NEEDS_AUTHENTICATION and not _bool(
                params, "error_on_requires_action"):
            pi.update(status="requires_action", next_action={"type": "use_stripe_sdk"})
            return dict(pi)
        pi["latest_charge"] = charge_id
        if outcome is not None:
            code, decline_code, message = outcome
            error = {"type": "card_error", "code": code, "decline_code": decline_code,
                     "message": message, "charge": charge_id,
                     "payment_method": {"id": pi["payment_method"], "object": "payment_method",
                                        "type": "card"}}
            self.charges[charge_id] = self._charge(charge_id, pi, status="failed")
            pi.update(status="requires_payment_method", payment_method=None,
                      last_payment_error=error)
            raise StripeApiError(402, "card_error", message, code=code,
                                 decline_code=decline_code, charge=charge_id,
                                 payment_intent=dict(pi))
        manual = pi["capture_method"] == "manual"
        self.charges[charge_id] = self._charge(charge_id, pi, status="succeeded",
                                               captured=not manual)
        pi.update(status="requires_capture" if manual else "succeeded",
                  amount_capturable=pi["amount"] if manual else 0,
                  amount_received=0 if manual else pi["amount"],
                  last_payment_error=None, next_action=None)
        return dict(pi)

    def _capture_intent(self, params: Params, intent: str) -> dict[str, Any]:
        _only(params, "amount_to_capture", "metadata", "expand")
        pi = self._intent(intent)
        if pi["status"] != "requires_capture":
            raise invalid(
                "This PaymentIntent could not be captured because it has a status of "
                f"{pi['status']}. Only a PaymentIntent with one of the following statuses "
                "may be captured: requires_capture.", code="payment_intent_unexpected_state",
                payment_intent=dict(pi))
        amount = _int(params, "amount_to_capture")
        if amount is None:
            amount = pi["amount_capturable"]
        if amount < 1 or amount > pi["amount_capturable"]:
            raise invalid(
                f"The amount to capture ({amount}) must be between 1 and the amount "
                f"capturable ({pi['amount_capturable']}).", code="amount_too_large",
                param="amount_to_capture")
        pi["metadata"].update(_metadata(params))
        pi.update(status="succeeded", amount_received=amount, amount_capturable=0)
        self.charges[pi["latest_charge"]].update(captured=True, amount_captured=amount)
        self.counts[pi["id"]]["captures"] += 1
        return dict(pi)

    def _cancel_intent(self, params: Params, intent: str) -> dict[str, Any]:
        _only(params, "cancellation_reason", "expand")
        reason = _enum(params, "cancellation_reason", _CANCELLATION_REASONS)
        pi = self._intent(intent)
        if pi["status"] not in _CANCELABLE:
            raise invalid(
                "You cannot cancel this PaymentIntent because it has a status of "
                f"{pi['status']}. Only a PaymentIntent with one of the following statuses "
                f"may be canceled: {', '.join(_CANCELABLE)}.",
                code="payment_intent_unexpected_state", payment_intent=dict(pi))
        pi.update(status="canceled", canceled_at=int(time.time()), cancellation_reason=reason,
                  amount_capturable=0, next_action=None)
        self.counts[pi["id"]]["cancels"] += 1
        return dict(pi)

    def _intent(self, intent: str) -> dict[str, Any]:
        pi = self.intents.get(intent)
        if pi is None:
            raise invalid(f"No such payment_intent: '{intent}'", code="resource_missing",
                          param="intent", status=404)
        return pi

    def _charge(self, charge_id: str, pi: dict[str, Any], *, status: str,
                captured: bool = False) -> dict[str, Any]:
        return {"id": charge_id, "object": "charge", "amount": pi["amount"],
                "amount_captured": pi["amount"] if captured else 0, "amount_refunded": 0,
                "captured": captured, "currency": pi["currency"],
                "payment_intent": pi["id"], "status": status}

    # --- refunds ------------------------------------------------------------------------

    def _create_refund(self, params: Params) -> dict[str, Any]:
        _only(params, "payment_intent", "charge", "amount", "reason", "metadata", "expand")
        pi_id, charge_id = _str(params, "payment_intent"), _str(params, "charge")
        if pi_id is None and charge_id is None:
            raise _validation("One of the following params should be provided for this "
                              "request: payment_intent or charge.", "parameter_missing",
                              "payment_intent")
        if pi_id is None:
            charge = self.charges.get(charge_id or "")
            if charge is None:
                raise invalid(f"No such charge: '{charge_id}'", code="resource_missing",
                              param="charge")
            pi_id = charge["payment_intent"]
        pi = self.intents.get(pi_id or "")
        if pi is None:
            raise invalid(f"No such payment_intent: '{pi_id}'", code="resource_missing",
                          param="payment_intent")
        if pi["status"] != "succeeded":
            raise invalid("This PaymentIntent does not have a successful charge to refund.",
                          code="charge_not_refundable", param="payment_intent")
        charge = self.charges[pi["latest_charge"]]
        left = charge["amount_captured"] - charge["amount_refunded"]
        if left <= 0:
            raise invalid(f"Charge {charge['id']} has already been refunded.",
                          code="charge_already_refunded", param="payment_intent")
        amount = _int(params, "amount")
        if amount is None:
            amount = left
        if amount < 1:
            raise _validation("This value must be greater than or equal to 1.",
                              "parameter_invalid_integer", "amount")
        if amount > left:
            raise invalid(
                f"Refund amount ({amount} {pi['currency']}) is greater than unrefunded "
                f"amount on charge ({left} {pi['currency']})", code="amount_too_large",
                param="amount")
        charge["amount_refunded"] += amount
        refund_id = self._new_id("re_")
        refund = {
            "id": refund_id, "object": "refund", "amount": amount,
            "balance_transaction": self._new_id("txn_"), "charge": charge["id"],
            "created": int(time.time()), "currency": pi["currency"],
            "metadata": _metadata(params), "payment_intent": pi["id"],
            "reason": _enum(params, "reason", _REFUND_REASONS), "receipt_number": None,
            "source_transfer_reversal": None, "status": "succeeded",
            "transfer_reversal": None,
        }
        self.refunds[refund_id] = refund
        self.counts[pi["id"]]["refunds"] += 1
        return dict(refund)

    def _retrieve_refund(self, params: Params, refund: str) -> dict[str, Any]:
        _only(params, "expand")
        found = self.refunds.get(refund)
        if found is None:
            raise invalid(f"No such refund: '{refund}'", code="resource_missing", param="id",
                          status=404)
        return dict(found)


# --- form decoding and parameter checks -------------------------------------------------

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")


def decode_form(body: str) -> Params:
    """Stripe's bracket notation to nested data: ``metadata[a]=1&items[0][x]=2`` ->
    ``{"metadata": {"a": "1"}, "items": [{"x": "2"}]}``; ``a[]=1`` appends."""
    root: Params = {}
    for key, value in parse_qsl(body, keep_blank_values=True):
        match = _KEY.match(key)
        if match is None:
            raise _validation(f"Invalid parameter name: {key}", "parameter_unknown", key)
        parts = [match.group(1), *_PART.findall(match.group(2))]
        node = root
        for part in parts[:-1]:
            child = node.setdefault(part or str(len(node)), {})
            if not isinstance(child, dict):
                raise _validation(f"Invalid hash: {key}", "parameter_invalid_string", key)
            node = child
        last = parts[-1] or str(len(node))
        if isinstance(node.get(last), dict):
            raise _validation(f"Invalid hash: {key}", "parameter_invalid_string", key)
        node[last] = value
    result = _lists(root)
    assert isinstance(result, dict)
    return result


def _lists(node: Any) -> Any:
    if not isinstance(node, dict):
        return node
    if node and all(k.isdigit() for k in node):
        return [_lists(node[k]) for k in sorted(node, key=int)]
    return {k: _lists(v) for k, v in node.items()}


def _only(params: Params, *allowed: str) -> None:
    for name in params:
        if name not in allowed:
            raise _validation(f"Received unknown parameter: {name}", "parameter_unknown", name)


def _str(params: Params, name: str, *, required: bool = False) -> Any:
    value = params.get(name)
    if value is None or value == "":
        if required:
            raise _validation(f"Missing required param: {name}.", "parameter_missing", name)
        return None
    if not isinstance(value, str):
        raise _validation(f"Invalid string: {value!r}", "parameter_invalid_string", name)
    return value


def _int(params: Params, name: str, *, required: bool = False) -> Any:
    value = _str(params, name, required=required)
    if value is None:
        return None
    if not re.fullmatch(r"-?\d+", value):
        raise _validation(f"Invalid integer: {value}", "parameter_invalid_integer", name)
    return int(value)


def _bool(params: Params, name: str, *, param: str | None = None) -> bool:
    value = params.get(name)
    if value is None or value == "":
        return False
    if value not in ("true", "false"):
        raise _validation(f"Invalid boolean: {value}", "parameter_invalid_boolean",
                          param or name)
    return bool(value == "true")


def _enum(params: Params, name: str, allowed: tuple[str, ...], *,
          param: str | None = None) -> Any:
    value = _str(params, name)
    if value is not None and value not in allowed:
        raise _validation(f"Invalid {name}: must be one of {', '.join(allowed)}",
                          "parameter_invalid_string", param or name)
    return value


def _metadata(params: Params) -> dict[str, str]:
    value = params.get("metadata")
    if value is None or value == "":
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise _validation("Invalid hash", "parameter_invalid_string", "metadata")
    return {k: v for k, v in value.items() if v != ""}


def _payment_method_exists(payment_method: str) -> None:
    if payment_method not in TEST_CARDS:
        raise invalid(f"No such PaymentMethod: '{payment_method}'", code="resource_missing",
                      param="payment_method")


def _redact_key(key: str) -> str:
    """How Stripe echoes a wrong key: its prefix and last four characters only."""
    if len(key) <= 12:
        return "*" * len(key)
    prefix = key[:8] if key.startswith(("sk_", "rk_", "pk_")) else ""
    return prefix + "*" * (len(key) - len(prefix) - 4) + key[-4:]

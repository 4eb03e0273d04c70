"""HubSpot CRM connector: contacts, deals, associations and notes over the CRM v3/v4 API.

HubSpot has no idempotency header, so every write is made safe to repeat by a natural key:

```
operation          call                                          a repeat ...
upsert_contact     POST contacts/batch/upsert, idProperty=email  updates the same contact
create_deal        POST deals with hub_order_id (unique)         409 -> GET ?idProperty -> id
  + contact        PUT v4 deals/{id}/associations/default/...    is a no-op
update_deal_stage  PATCH deals/{id} dealstage                    sets the same value
mark_deal_lost     PATCH dealstage=closedlost + reason           same; a missing deal is done
add_note           POST notes with hub_idempotency_key (unique)  409 -> GET ?idProperty -> id
```
The portal needs two custom properties with ``hasUniqueValue: true``: ``hub_order_id`` on deals
and ``hub_idempotency_key`` on notes (names configurable). The note key is the step's
``ctx.idempotency_key``: one note per step of an execution, whatever the attempts.

Rate limits: HubSpot counts requests in a rolling window and says so on every answer
(``X-HubSpot-RateLimit-Max``, ``-Remaining``, ``-Interval-Milliseconds``, ``-Daily``,
``-Daily-Remaining``, ``-Secondly``, ``-Secondly-Remaining``). When a window is spent the
connector pauses every call until it has rolled over, instead of collecting 429s; a 429
without ``Retry-After`` pauses for its policy's interval (``TEN_SECONDLY_ROLLING``: the
window's interval, ``SECONDLY``: one second) before the base's retry goes out. A ``DAILY``
429 is not waited for: the retries run out and the engine reschedules the step.

Errors: HubSpot's definitive answers (4xx) come back to the operation, which reads its error
body (``category``, ``message``, ``errors[].code``) into a ``PermanentConnectorError`` naming
the operation; 404 and 409 mean "not found" and "already exists" to some operations.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar
from urllib.parse import quote

import httpx
import structlog
from pydantic import AnyHttpUrl, FilePath, PositiveFloat, SecretStr
from pydantic_settings import SettingsConfigDict

from connectors.base import (
    ConnectorConfigError,
    ConnectorSettings,
    HttpConnector,
    Sleep,
    Verdict,
    load_settings,
)
from hub import PermanentConnectorError, StepContext, provides

log = structlog.get_logger("connectors.hubspot")

NOTE_TO_DEAL = 214
"""HubSpot-defined association type id: note -> deal."""
NOTE_TO_CONTACT = 202
"""HubSpot-defined association type id: note -> contact."""

DEAL_PROPERTIES = ("dealname", "amount", "dealstage", "pipeline", "closedate",
                   "closed_lost_reason")
"""What ``find_deal`` asks for, besides the order id property."""

_RATE_POLICY_S = {"SECONDLY": 1.0}
_MESSAGE_CHARS = 300


class HubSpotSettings(ConnectorSettings):
    """``HUB_HUBSPOT_*``: a private app's access token and the portal's names."""

    model_config = SettingsConfigDict(env_prefix="HUB_HUBSPOT_", extra="ignore")

    required_secrets: ClassVar[tuple[str, ...]] = ("access_token",)

    base_url: AnyHttpUrl = AnyHttpUrl("https://api.hubapi.com")
    access_token: SecretStr | None = None
    access_token_file: FilePath | None = None
    deal_pipeline: str = "default"
    lost_stage: str = "closedlost"
    order_id_property: str = "hub_order_id"
    note_key_property: str = "hub_idempotency_key"
    rate_per_second: PositiveFloat = 10.0


class RateLimitGate:
    """Holds calls back while HubSpot says a rate-limit window is spent.

    ``observe`` reads each answer's headers and moves ``paused_until``; ``wait`` runs before
    every attempt. A ``Retry-After`` on the answer wins: the base's retry honours it.
    """

    def __init__(self, name: str, *, sleep: Sleep, clock: Callable[[], float]) -> None:
        self.name = name
        self._sleep = sleep
        self._clock = clock
        self.paused_until = 0.0

    async def wait(self) -> None:
        delay = self.paused_until - self._clock()
        if delay > 0:
            await self._sleep(delay)

    def observe(self, status: int, headers: Mapping[str, str], body: Any) -> None:
        if "retry-after" in headers:
            return
        interval = _interval_s(headers)
        pause: float | None = None
        reason = ""
        if status == 429:
            policy = str(body.get("policyName", "")) if isinstance(body, dict) else ""
            if policy == "DAILY":
                return
            reason = policy or "429"
            pause = _RATE_POLICY_S.get(policy, interval)
        elif headers.get("x-hubspot-ratelimit-remaining") == "0":
            reason, pause = "remaining_0", interval
        elif headers.get("x-hubspot-ratelimit-secondly-remaining") == "0":
            reason, pause = "secondly_remaining_0", 1.0
        if pause is None:
            return
        until = self._clock() + pause
        if until > self.paused_until:
            self.paused_until = until
            log.info("connector_rate_limit_paused", connector=self.name, delay_s=pause,
                     reason=reason)


def _interval_s(headers: Mapping[str, str]) -> float:
    value = headers.get("x-hubspot-ratelimit-interval-milliseconds", "")
    return int(value) / 1000 if value.isdigit() else 10.0


class HubSpotConnector(HttpConnector):
    """The CRM operations the workflows use; every one is safe to repeat (see module doc)."""

    idempotency_header: ClassVar[str | None] = None
    settings: HubSpotSettings

    def __init__(self, settings: HubSpotSettings, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Sleep = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if settings.access_token is None:
            raise ConnectorConfigError("HubSpotSettings: HUB_HUBSPOT_ACCESS_TOKEN or "
                                       "HUB_HUBSPOT_ACCESS_TOKEN_FILE is required")
        token = settings.access_token.get_secret_value()
        super().__init__("hubspot", settings, headers={"Authorization": f"Bearer {token}"},
                         transport=transport, sleep=sleep, clock=clock)
        self.gate = RateLimitGate(self.name, sleep=sleep, clock=clock)

    async def before_send(self, request: httpx.Request) -> None:
        await self.gate.wait()

    async def after_receive(self, response: httpx.Response) -> None:
        body: Any = None
        if response.status_code == 429:
            await response.aread()
            body = _json(response)
        self.gate.observe(response.status_code, response.headers, body)

    outside_id_fields: ClassVar[tuple[tuple[str | int, ...], ...]] = (
        ("id",), ("results", 0, "id"))
    """A deal's, note's or contact's id; a batch upsert's first result."""

    def classify(self, response: httpx.Response) -> Verdict:
        """Retryable answers stay errors at the base; HubSpot's refusals come back to the
        operation, which knows whether a 404 or 409 is an answer and words the error."""
        verdict = super().classify(response)
        return "success" if verdict == "permanent" else verdict

    # --- contacts -----------------------------------------------------------------------

    async def upsert_contact(self, ctx: StepContext, *, email: str,
                             properties: dict[str, str]) -> str:
        """Create or update the contact with ``email``; its id. Never search-then-create:
        HubSpot's search index lags, so a search can miss a contact made a second ago."""
        body = {"inputs": [{"idProperty": "email", "id": email, "properties": properties}]}
        response = await self._call("upsert_contact", "POST",
                                    "/crm/v3/objects/contacts/batch/upsert", ctx, json=body)
        results = _json(response).get("results") or []
        if not results:
            raise self._refusal("upsert_contact", response)
        return str(results[0]["id"])

    # --- deals --------------------------------------------------------------------------

    async def create_deal(self, ctx: StepContext, *, order_id: str, name: str,
                          amount: str | float, stage: str,
                          contact_id: str | None = None) -> str:
        """The deal of ``order_id`` (made now or by an earlier attempt or execution), with
        ``contact_id`` associated; its id. One order never gets two deals."""
        settings = self.settings
        properties = {"dealname": name, "amount": str(amount), "dealstage": stage,
                      "pipeline": settings.deal_pipeline,
                      settings.order_id_property: order_id}
        response = await self._call("create_deal", "POST", "/crm/v3/objects/deals", ctx,
                                    json={"properties": properties}, accept=(201, 200, 409))
        if response.status_code == 409:
            existing = await self._read_deal(ctx, order_id, properties=())
            if existing is None:
                raise self._refusal("create_deal", response)
            deal_id = str(existing["id"])
            log.info("crm_deal_exists", connector=self.name, order_id=order_id,
                     deal_id=deal_id)
        else:
            deal_id = str(_json(response)["id"])
        if contact_id is not None:
            await self._call(
                "create_deal", "PUT",
                f"/crm/v4/objects/deals/{_seg(deal_id)}/associations/default/contacts/"
                f"{_seg(contact_id)}", ctx)
        return deal_id

    async def update_deal_stage(self, ctx: StepContext, deal_id: str, stage: str) -> None:
        await self._call("update_deal_stage", "PATCH", f"/crm/v3/objects/deals/{_seg(deal_id)}",
                         ctx, json={"properties": {"dealstage": stage}})

    async def mark_deal_lost(self, ctx: StepContext, deal_id: str, *, reason: str) -> None:
        """Compensation of ``create_deal``: idempotent, and a deal that no longer exists
        (deleted in HubSpot) counts as done, since it cannot be won either."""
        properties = {"dealstage": self.settings.lost_stage, "closed_lost_reason": reason}
        response = await self._call("mark_deal_lost", "PATCH",
                                    f"/crm/v3/objects/deals/{_seg(deal_id)}", ctx,
                                    json={"properties": properties}, accept=(200, 404))
        if response.status_code == 404:
            log.warning("crm_deal_missing_on_mark_lost", connector=self.name, deal_id=deal_id)

    async def find_deal(self, ctx: StepContext | None, order_id: str) -> dict[str, Any] | None:
        """The deal of ``order_id`` in HubSpot's shape (``id``, ``properties``,
        ``associations.contacts``), or None."""
        return await self._read_deal(ctx, order_id, properties=DEAL_PROPERTIES)

    async def _read_deal(self, ctx: StepContext | None, order_id: str, *,
                         properties: tuple[str, ...]) -> dict[str, Any] | None:
        prop = self.settings.order_id_property
        params = {"idProperty": prop, "properties": ",".join((*properties, prop)),
                  "associations": "contacts"}
        response = await self._call("find_deal", "GET", f"/crm/v3/objects/deals/{_seg(order_id)}",
                                    ctx, params=params, accept=(200, 404))
        return None if response.status_code == 404 else _json(response)

    # --- notes --------------------------------------------------------------------------

    async def add_note(self, ctx: StepContext, *, body: str, deal_id: str | None = None,
                       contact_id: str | None = None) -> str:
        """A note on the deal and/or contact; its id. The note carries the step's
        idempotency key in a unique property, so a repeat finds the first note (409)."""
        key_prop = self.settings.note_key_property
        associations = [
            {"to": {"id": to_id}, "types": [{"associationCategory": "HUBSPOT_DEFINED",
                                             "associationTypeId": type_id}]}
            for to_id, type_id in ((deal_id, NOTE_TO_DEAL), (contact_id, NOTE_TO_CONTACT))
            if to_id is not None]
        properties = {"hs_note_body": body, "hs_timestamp": _timestamp(),
                      key_prop: ctx.idempotency_key}
        response = await self._call(
            "add_note", "POST", "/crm/v3/objects/notes", ctx,
            json={"properties": properties, "associations": associations},
            accept=(201, 200, 409))
        if response.status_code != 409:
            return str(_json(response)["id"])
        existing = await self._call(
            "add_note", "GET", f"/crm/v3/objects/notes/{_seg(ctx.idempotency_key)}", ctx,
            params={"idProperty": key_prop}, accept=(200, 404))
        if existing.status_code == 404:
            raise self._refusal("add_note", response)
        return str(_json(existing)["id"])

    # --- plumbing -----------------------------------------------------------------------

    async def _call(self, operation: str, method: str, path: str, ctx: StepContext | None, *,
                    json: Any = None, params: Mapping[str, Any] | None = None,
                    accept: tuple[int, ...] = (200,)) -> httpx.Response:
        response = await self.request(method, path, ctx=ctx, json=json, params=params,
                                      operation=operation)
        if response.status_code not in accept:
            raise self._refusal(operation, response)
        return response

    def _refusal(self, operation: str, response: httpx.Response) -> PermanentConnectorError:
        """HubSpot said no: name the operation, HubSpot's category, message and codes."""
        body = _json(response)
        category = body.get("category") or body.get("errorType") or "no category"
        message = str(body.get("message") or " ".join(response.text.split()) or "(empty body)")
        codes = sorted({str(e["code"]) for e in body.get("errors") or []
                        if isinstance(e, dict) and e.get("code")})
        detail = f"{category}: {message}" + (f" ({', '.join(codes)})" if codes else "")
        return PermanentConnectorError(
            f"connector {self.name!r}: {operation} refused by HubSpot with "
            f"{response.status_code} {self.redact(detail)[:_MESSAGE_CHARS]}")


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _seg(value: str) -> str:
    """One path segment: order ids and keys may hold ``/`` or ``:``."""
    return quote(value, safe="")


def _timestamp() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@provides("crm")
def _build() -> HubSpotConnector:
    return HubSpotConnector(load_settings(HubSpotSettings))

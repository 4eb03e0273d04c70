"""HubSpot CRM sandbox: the subset of the CRM v3/v4 API the hub's CRM connector uses.

The point is HubSpot's rules, not its breadth: contacts are keyed by email (a create on an
existing email answers 409 ``CONFLICT`` with ``Existing ID``), deals and notes by custom
properties with ``hasUniqueValue`` (``hub_order_id``, ``hub_idempotency_key``: a second create
answers 409), unknown properties are refused with 400 ``VALIDATION_ERROR``, and every response
carries ``X-HubSpot-RateLimit-*`` headers computed from a real sliding window: past ``Max``
requests in ``Interval-Milliseconds`` the sandbox answers 429 ``TEN_SECONDLY_ROLLING``, as
HubSpot does, without ``Retry-After``.

```
POST  /crm/v3/objects/{type}/batch/upsert     by a unique idProperty (email for contacts)
POST  /crm/v3/objects/{type}                  create, optional v4 ``associations``
GET   /crm/v3/objects/{type}/{id}             ?idProperty= &properties= &associations=
PATCH /crm/v3/objects/{type}/{id}             ?idProperty=
PUT   /crm/v4/objects/{from}/{id}/associations/default/{to}/{toId}
```
``{type}`` is ``contacts``, ``deals`` or ``notes`` (or ``0-1``, ``0-3``, ``0-46``). Objects
come back in HubSpot's shape (``id``, ``properties`` as strings with ``hs_object_id`` and the
create/modify dates, ``createdAt``, ``updatedAt``, ``archived``); a GET returns the type's
default properties unless ``properties`` names others. Authentication is a private app token
(``Authorization: Bearer``); anything else is 401 ``INVALID_AUTHENTICATION``.

Seeded: contacts ``ada.lovelace@example.com`` and ``grace.hopper@example.com``, and a won
deal for order ``ORD-1000`` associated with Ada; the ``default`` pipeline with HubSpot's
standard stages (``appointmentscheduled`` ... ``closedwon``, ``closedlost``). Ids come from
one counter across types, so an id of the wrong type is a 404 here.

Left out: search, list and batch read/create/update endpoints, archiving, merges, owners,
pipelines and properties APIs (the schema is fixed below), association labels and the v3
associations API, 207 multi-status batch answers (a bad input refuses the whole batch), the
daily limit's reset at midnight (it counts from start or reset), and the ``Secondly`` policy.
"""

from __future__ import annotations

import json
import math
import random
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, ClassVar

from fastapi import APIRouter, FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.sandbox.system import CONTROL_PREFIX, SandboxSystem, json_error, read_json

SANDBOX_TOKEN = "pat-na1-5a9d2b1e-sandbox-4c0f-9e7a-hubspot000001"
"""The private app token the sandbox accepts (``connector_env`` hands it out)."""

ORDER_ID_PROPERTY = "hub_order_id"
NOTE_KEY_PROPERTY = "hub_idempotency_key"

_AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and "
    "you can find more details at https://developers.hubspot.com/docs/methods/auth/oauth-overview")

DEFAULT_STAGES = ("appointmentscheduled", "qualifiedtobuy", "presentationscheduled",
                  "decisionmakerboughtin", "contractsent", "closedwon", "closedlost")
"""The stage ids of HubSpot's default sales pipeline, the only pipeline seeded."""


@dataclass(frozen=True)
class _Kind:
    """One CRM object type: which properties it has, which are unique, what GET returns."""

    name: str
    label: str
    type_id: str
    writable: frozenset[str]
    unique: tuple[str, ...]
    defaults: tuple[str, ...]
    created: str
    modified: str

    @property
    def read_only(self) -> frozenset[str]:
        return frozenset({"hs_object_id", self.created, self.modified})


CONTACTS = _Kind(
    "contacts", "contact", "0-1",
    frozenset({"email", "firstname", "lastname", "phone", "mobilephone", "company", "website",
               "jobtitle", "address", "city", "state", "zip", "country", "lifecyclestage",
               "hs_language", "hubspot_owner_id"}),
    unique=("email",),
    defaults=("createdate", "email", "firstname", "hs_object_id", "lastmodifieddate",
              "lastname"),
    created="createdate", modified="lastmodifieddate")
DEALS = _Kind(
    "deals", "deal", "0-3",
    frozenset({"dealname", "amount", "dealstage", "pipeline", "closedate", "dealtype",
               "description", "closed_lost_reason", "closed_won_reason", "hubspot_owner_id",
               "deal_currency_code", ORDER_ID_PROPERTY}),
    unique=(ORDER_ID_PROPERTY,),
    defaults=("amount", "closedate", "createdate", "dealname", "dealstage",
              "hs_lastmodifieddate", "hs_object_id", "pipeline"),
    created="createdate", modified="hs_lastmodifieddate")
NOTES = _Kind(
    "notes", "note", "0-46",
    frozenset({"hs_note_body", "hs_timestamp", "hubspot_owner_id", "hs_attachment_ids",
               NOTE_KEY_PROPERTY}),
    unique=(NOTE_KEY_PROPERTY,),
    defaults=("hs_createdate", "hs_lastmodifieddate", "hs_object_id"),
    created="hs_createdate", modified="hs_lastmodifieddate")

_KINDS = {k.name: k for k in (CONTACTS, DEALS, NOTES)}
_ALIASES = {**_KINDS, **{k.type_id: k for k in _KINDS.values()},
            **{k.label: k for k in _KINDS.values()}}

ASSOCIATION_TYPES: dict[int, tuple[str, str]] = {
    3: ("deals", "contacts"), 4: ("contacts", "deals"),
    201: ("contacts", "notes"), 202: ("notes", "contacts"),
    213: ("deals", "notes"), 214: ("notes", "deals"),
}
"""HubSpot-defined default association type ids (v4) between the types the sandbox has."""
_DEFAULT_TYPE = {pair: type_id for type_id, pair in ASSOCIATION_TYPES.items()}


@dataclass
class _Record:
    id: str
    kind: _Kind
    properties: dict[str, str]
    created_at: str
    updated_at: str = ""

    def natural_key(self) -> str | None:
        for prop in self.kind.unique:
            if self.properties.get(prop):
                return self.properties[prop]
        return None


class HubSpotError(Exception):
    """An answer in HubSpot's error format, raised from deep inside a handler."""

    def __init__(self, status: int, category: str, message: str,
                 errors: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.status, self.category, self.errors = status, category, errors


@dataclass
class _Window:
    """HubSpot's rolling burst window (``Max`` requests per ``Interval``) and daily count."""

    max: int
    interval_ms: int
    daily: int
    hits: deque[float] = field(default_factory=deque)
    used_today: int = 0

    def _prune(self, now: float) -> None:
        while self.hits and now - self.hits[0] >= self.interval_ms / 1000:
            self.hits.popleft()

    def admit(self) -> str | None:
        """Count one request; the name of the policy it breaks, or None if admitted."""
        now = time.monotonic()
        self._prune(now)
        if self.used_today >= self.daily:
            return "DAILY"
        if len(self.hits) >= self.max:
            return "TEN_SECONDLY_ROLLING"
        self.hits.append(now)
        self.used_today += 1
        return None

    def headers(self) -> dict[str, str]:
        self._prune(time.monotonic())
        return {
            "X-HubSpot-RateLimit-Max": str(self.max),
            "X-HubSpot-RateLimit-Remaining": str(max(0, self.max - len(self.hits))),
            "X-HubSpot-RateLimit-Interval-Milliseconds": str(self.interval_ms),
            "X-HubSpot-RateLimit-Daily": str(self.daily),
            "X-HubSpot-RateLimit-Daily-Remaining": str(max(0, self.daily - self.used_today)),
        }

    def clear(self) -> None:
        self.hits.clear()
        self.used_today = 0


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _as_text(value: Any) -> str:
    """HubSpot stores every property value as a string."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class HubSpotSandbox(SandboxSystem):
    """HubSpot's CRM API on loopback; see the module docstring for the subset."""

    name: ClassVar[str] = "hubspot"
    default_port: ClassVar[int] = 8903

    def __init__(self, *, seed: int | None = None, access_token: str = SANDBOX_TOKEN,
                 rate_limit_max: int = 190, rate_limit_interval_ms: int = 10_000,
                 daily_limit: int = 500_000) -> None:
        self.access_token = access_token
        self.window = _Window(rate_limit_max, rate_limit_interval_ms, daily_limit)
        self._random = random.Random(seed)
        self._seed()
        super().__init__(seed=seed)

    # --- state --------------------------------------------------------------------------

    def _seed(self) -> None:
        self.objects: dict[str, dict[str, _Record]] = {name: {} for name in _KINDS}
        self.links: set[tuple[str, str, str, str]] = set()
        self.creates: dict[str, Counter[str]] = {name: Counter() for name in _KINDS}
        self.conflicts: Counter[str] = Counter()
        self.rate_limited = 0
        self._next_id = 1001
        ada = self._insert(CONTACTS, {"email": "ada.lovelace@example.com",
                                      "firstname": "Ada", "lastname": "Lovelace",
                                      "lifecyclestage": "customer"})
        self._insert(CONTACTS, {"email": "grace.hopper@example.com", "firstname": "Grace",
                                "lastname": "Hopper", "lifecyclestage": "lead"})
        deal = self._insert(DEALS, {"dealname": "Order ORD-1000", "amount": "129.90",
                                    "dealstage": "closedwon", "pipeline": "default",
                                    ORDER_ID_PROPERTY: "ORD-1000"})
        self._link(DEALS, deal.id, CONTACTS, ada.id)
        for counter in self.creates.values():
            counter.clear()

    def reset(self) -> None:
        self._seed()
        self.window.clear()

    def _insert(self, kind: _Kind, properties: dict[str, str]) -> _Record:
        rid = str(self._next_id)
        self._next_id += 1
        stamp = _now()
        record = _Record(rid, kind, dict(properties), stamp, stamp)
        if kind is CONTACTS and "email" in record.properties:
            record.properties["email"] = record.properties["email"].lower()
        self.objects[kind.name][rid] = record
        self.creates[kind.name][record.natural_key() or f"id:{rid}"] += 1
        return record

    def _link(self, a: _Kind, a_id: str, b: _Kind, b_id: str) -> None:
        self.links.add((a.name, a_id, b.name, b_id))
        self.links.add((b.name, b_id, a.name, a_id))

    def _linked(self, kind: _Kind, rid: str, other: _Kind) -> list[str]:
        return sorted(to for (f, fid, t, to) in self.links
                      if f == kind.name and fid == rid and t == other.name)

    def inspect(self) -> dict[str, Any]:
        contacts = {r.properties.get("email", f"id:{r.id}"): {
            "id": r.id, "properties": dict(r.properties),
            "deals": self._linked(CONTACTS, r.id, DEALS)}
            for r in self.objects["contacts"].values()}
        deals = {r.natural_key() or f"id:{r.id}": {
            "id": r.id, "name": r.properties.get("dealname"),
            "stage": r.properties.get("dealstage"), "amount": r.properties.get("amount"),
            "pipeline": r.properties.get("pipeline"),
            "closed_lost_reason": r.properties.get("closed_lost_reason"),
            "contacts": self._linked(DEALS, r.id, CONTACTS),
            "notes": self._linked(DEALS, r.id, NOTES)}
            for r in self.objects["deals"].values()}
        notes = [{"id": r.id, "body": r.properties.get("hs_note_body"),
                  "key": r.properties.get(NOTE_KEY_PROPERTY),
                  "deals": self._linked(NOTES, r.id, DEALS),
                  "contacts": self._linked(NOTES, r.id, CONTACTS)}
                 for r in self.objects["notes"].values()]
        return {"contacts": contacts, "deals": deals, "notes": notes,
                "creates": {name: dict(c) for name, c in self.creates.items()},
                "conflicts": dict(self.conflicts), "rate_limited": self.rate_limited}

    # --- HubSpot's answers --------------------------------------------------------------

    def _correlation_id(self) -> str:
        return str(uuid.UUID(int=self._random.getrandbits(128), version=4))

    def _error(self, status: int, category: str, message: str,
               errors: list[dict[str, Any]] | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:
        body: dict[str, Any] = {"status": "error", "message": message,
                                "correlationId": self._correlation_id(), "category": category}
        if errors:
            body["errors"] = errors
        return json_error(status, body, {**self.window.headers(), **(headers or {})})

    def _rate_limit_error(self, policy: str, headers: dict[str, str]) -> JSONResponse:
        body = {"status": "error", "message": f"You have reached your {policy.lower()} limit.",
                "errorType": "RATE_LIMIT", "correlationId": self._correlation_id(),
                "policyName": policy}
        return json_error(429, body, headers)

    def error_response(self, status: int, *, retry_after_s: float | None = None) -> Response:
        headers = self.window.headers()
        if status == 429:
            if retry_after_s is not None:
                headers["Retry-After"] = str(math.ceil(retry_after_s))
            return self._rate_limit_error("SECONDLY", headers)
        message = "internal error" if status == 500 else HTTPStatus(status).phrase
        return self._error(status, "INTERNAL_ERROR", message)

    def connector_env(self, base_url: str) -> dict[str, str]:
        return {"HUB_HUBSPOT_BASE_URL": base_url, "HUB_HUBSPOT_ACCESS_TOKEN": self.access_token}

    def install(self, app: FastAPI) -> None:
        app.add_exception_handler(HubSpotError, self._on_hubspot_error)
        app.add_exception_handler(StarletteHTTPException, self._on_http_error)
        app.add_exception_handler(RequestValidationError, self._on_request_invalid)
        app.add_middleware(_Gateway, system=self)

    async def _on_hubspot_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HubSpotError)
        return self._error(exc.status, exc.category, str(exc), exc.errors)

    async def _on_http_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            return self._error(404, "OBJECT_NOT_FOUND", "resource not found")
        return self._error(exc.status_code, "VALIDATION_ERROR", str(exc.detail))

    async def _on_request_invalid(self, request: Request, exc: Exception) -> Response:
        return self._error(400, "VALIDATION_ERROR", "Invalid input: " + str(exc))

    # --- validation ---------------------------------------------------------------------

    def _kind(self, object_type: str) -> _Kind:
        kind = _ALIASES.get(object_type)
        if kind is None:
            raise HubSpotError(400, "VALIDATION_ERROR",
                               f"Unable to infer object type from: {object_type}")
        return kind

    def _properties(self, kind: _Kind, body: Any, record: _Record | None = None,
                    ) -> dict[str, str]:
        """The ``properties`` of a create or update, validated the way HubSpot does."""
        raw = body.get("properties") if isinstance(body, dict) else None
        if not isinstance(raw, dict):
            raise HubSpotError(400, "VALIDATION_ERROR",
                               "Invalid input JSON: expected an object with \"properties\"")
        props = {str(name): _as_text(value) for name, value in raw.items()}
        problems: list[dict[str, Any]] = []
        for name, value in props.items():
            if name in kind.read_only:
                problems.append(_invalid(name, "READ_ONLY_VALUE",
                                         f"{name} is a read only property; its value cannot "
                                         "be set."))
            elif name not in kind.writable:
                problems.append(_invalid(name, "PROPERTY_DOESNT_EXIST",
                                         f"Property \"{name}\" does not exist"))
            elif name == "email" and value and not _looks_like_email(value):
                problems.append(_invalid(name, "INVALID_EMAIL",
                                         f"Email address {value} is invalid"))
        if kind is DEALS:
            problems += _stage_problems(props, record)
        if problems:
            raise HubSpotError(
                400, "VALIDATION_ERROR", "Property values were not valid: " + json.dumps(
                    [p["detail"] for p in problems], separators=(",", ":")),
                [p["error"] for p in problems])
        return props

    def _check_unique(self, kind: _Kind, props: dict[str, str], own_id: str | None) -> None:
        for prop in kind.unique:
            value = props.get(prop)
            if not value:
                continue
            existing = self._find(kind, prop, value)
            if existing is None or existing.id == own_id:
                continue
            self.conflicts[kind.name] += 1
            if kind is CONTACTS:
                message = f"Contact already exists. Existing ID: {existing.id}"
            else:
                message = (f"A {kind.label} with {prop} \"{value}\" already exists: {prop} "
                           f"already has that value. Existing ID: {existing.id}")
            raise HubSpotError(409, "CONFLICT", message)

    def _find(self, kind: _Kind, prop: str, value: str) -> _Record | None:
        if prop == "hs_object_id":
            return self.objects[kind.name].get(value)
        if prop == "email":
            value = value.lower()
        return next((r for r in self.objects[kind.name].values()
                     if r.properties.get(prop) == value), None)

    def _lookup(self, kind: _Kind, object_id: str, id_property: str | None) -> _Record:
        prop = id_property or "hs_object_id"
        if prop != "hs_object_id" and prop not in kind.unique:
            raise HubSpotError(400, "VALIDATION_ERROR",
                               f"{prop} is not a unique identifier property for {kind.name}")
        record = self._find(kind, prop, object_id)
        if record is None:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", "resource not found")
        return record

    def _associations(self, kind: _Kind, body: Any) -> list[tuple[_Kind, str]]:
        """Validate the v4 ``associations`` of a create: (target type, target id) pairs."""
        raw = body.get("associations") if isinstance(body, dict) else None
        out: list[tuple[_Kind, str]] = []
        for item in raw or []:
            try:
                to_id = str(item["to"]["id"])
                type_ids = [int(t["associationTypeId"]) for t in item["types"]]
            except (KeyError, TypeError, ValueError):
                raise HubSpotError(400, "VALIDATION_ERROR",
                                   "Invalid input JSON: each association needs to.id and "
                                   "types[].associationTypeId") from None
            for type_id in type_ids:
                pair = ASSOCIATION_TYPES.get(type_id)
                if pair is None or pair[0] != kind.name:
                    raise HubSpotError(400, "VALIDATION_ERROR",
                                       f"{type_id} is not a valid association type id from "
                                       f"{kind.name}")
                target = _KINDS[pair[1]]
                if to_id not in self.objects[target.name]:
                    raise HubSpotError(
                        400, "VALIDATION_ERROR", "One or more associations are invalid",
                        [{"message": f"No {target.label} with id {to_id}",
                          "in": "associations"}])
                out.append((target, to_id))
        return out

    # --- rendering ----------------------------------------------------------------------

    def _render(self, record: _Record, names: list[str] | None = None,
                associations: list[_Kind] | None = None) -> dict[str, Any]:
        props = {**record.properties, "hs_object_id": record.id,
                 record.kind.created: record.created_at,
                 record.kind.modified: record.updated_at}
        shown = names if names is not None else list(props)
        body: dict[str, Any] = {"id": record.id,
                                "properties": {n: props.get(n) for n in shown},
                                "createdAt": record.created_at,
                                "updatedAt": record.updated_at, "archived": False}
        linked: dict[str, Any] = {}
        for other in associations or []:
            ids = self._linked(record.kind, record.id, other)
            if ids:
                linked[other.name] = {"results": [
                    {"id": i, "type": f"{record.kind.label}_to_{other.label}"} for i in ids]}
        if linked:
            body["associations"] = linked
        return body

    # --- routes -------------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = APIRouter()

        @router.post("/crm/v3/objects/{object_type}/batch/upsert")
        async def batch_upsert(object_type: str, request: Request) -> Response:
            kind = self._kind(object_type)
            body = await _body(request)
            inputs = body.get("inputs") if isinstance(body, dict) else None
            if not isinstance(inputs, list) or not inputs:
                raise HubSpotError(400, "VALIDATION_ERROR",
                                   "Invalid input JSON: \"inputs\" must be a non-empty list")
            started = _now()
            plan: list[tuple[str, str, dict[str, str]]] = []
            for item in inputs:
                if not isinstance(item, dict) or not item.get("id"):
                    raise HubSpotError(400, "VALIDATION_ERROR",
                                       "Invalid input JSON: each input needs an id")
                prop = str(item.get("idProperty") or "")
                if prop not in kind.unique:
                    raise HubSpotError(400, "VALIDATION_ERROR",
                                       f"idProperty {prop or '(missing)'} is not a unique "
                                       f"identifier property for {kind.name}")
                plan.append((prop, str(item["id"]), self._properties(kind, item)))
            results = []
            for prop, key, props in plan:
                record = self._find(kind, prop, key)
                new = record is None
                if record is None:
                    record = self._insert(kind, {**props, prop: key})
                else:
                    record.properties.update(props)
                    record.updated_at = _now()
                shown = sorted({*props, prop, "hs_object_id", kind.created, kind.modified})
                results.append({**self._render(record, shown), "new": new})
            return JSONResponse({"status": "COMPLETE", "results": results,
                                 "startedAt": started, "completedAt": _now()})

        @router.post("/crm/v3/objects/{object_type}")
        async def create(object_type: str, request: Request) -> Response:
            kind = self._kind(object_type)
            body = await _body(request)
            props = self._properties(kind, body)
            links = self._associations(kind, body)
            self._check_unique(kind, props, None)
            record = self._insert(kind, props)
            for target, to_id in links:
                self._link(kind, record.id, target, to_id)
            shown = sorted({*record.properties, "hs_object_id", kind.created, kind.modified})
            return JSONResponse(self._render(record, shown), status_code=201)

        @router.get("/crm/v3/objects/{object_type}/{object_id}")
        async def read(object_type: str, object_id: str, request: Request) -> Response:
            kind = self._kind(object_type)
            query = request.query_params
            record = self._lookup(kind, object_id, query.get("idProperty"))
            names = _listed(query.getlist("properties")) or list(kind.defaults)
            assoc = [self._kind(a) for a in _listed(query.getlist("associations"))]
            return JSONResponse(self._render(record, names, assoc))

        @router.patch("/crm/v3/objects/{object_type}/{object_id}")
        async def update(object_type: str, object_id: str, request: Request) -> Response:
            kind = self._kind(object_type)
            record = self._lookup(kind, object_id, request.query_params.get("idProperty"))
            props = self._properties(kind, await _body(request), record)
            self._check_unique(kind, props, record.id)
            record.properties.update(props)
            record.updated_at = _now()
            shown = sorted({*record.properties, "hs_object_id", kind.created, kind.modified})
            return JSONResponse(self._render(record, shown))

        @router.put("/crm/v4/objects/{from_type}/{from_id}/associations/default/"
                    "{to_type}/{to_id}")
        async def associate(from_type: str, from_id: str, to_type: str,
                            to_id: str) -> Response:
            source, target = self._kind(from_type), self._kind(to_type)
            type_id = _DEFAULT_TYPE.get((source.name, target.name))
            if type_id is None:
                raise HubSpotError(400, "VALIDATION_ERROR",
                                   f"No default association from {source.name} to "
                                   f"{target.name}")
            for kind, rid in ((source, from_id), (target, to_id)):
                if rid not in self.objects[kind.name]:
                    raise HubSpotError(404, "OBJECT_NOT_FOUND",
                                       f"No {kind.label} with id {rid}")
            started = _now()
            self._link(source, from_id, target, to_id)
            back = _DEFAULT_TYPE[(target.name, source.name)]
            results = [_spec(from_id, to_id, type_id), _spec(to_id, from_id, back)]
            return JSONResponse({"status": "COMPLETE", "results": results,
                                 "startedAt": started, "completedAt": _now()})

        return router


class _Gateway:
    """What stands in front of HubSpot's API: the bearer token, then the rate-limit window;
    every admitted answer gets the ``X-HubSpot-RateLimit-*`` headers."""

    def __init__(self, app: ASGIApp, system: HubSpotSandbox) -> None:
        self.app = app
        self.system = system

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        system = self.system
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        if headers.get("authorization", "") != f"Bearer {system.access_token}":
            body = {"status": "error", "message": _AUTH_MESSAGE,
                    "correlationId": system._correlation_id(),
                    "category": "INVALID_AUTHENTICATION"}
            await json_error(401, body)(scope, receive, send)
            return
        policy = system.window.admit()
        if policy is not None:
            system.rate_limited += 1
            await system._rate_limit_error(policy, system.window.headers())(
                scope, receive, send)
            return

        async def send_with_limits(message: Message) -> None:
            if message["type"] == "http.response.start":
                extra = [(k.encode("latin-1"), v.encode("latin-1"))
                         for k, v in system.window.headers().items()]
                message = {**message, "headers": [
                    *[(k, v) for k, v in message.get("headers", [])
                      if not k.lower().startswith(b"x-hubspot-ratelimit")], *extra]}
            await send(message)

        await self.app(scope, receive, send_with_limits)


def _invalid(name: str, code: str, message: str) -> dict[str, Any]:
    """One property problem, as HubSpot reports it twice: in the message and in ``errors``."""
    return {"detail": {"isValid": False, "message": message, "error": code, "name": name,
                       "localizedErrorMessage": message},
            "error": {"message": message, "code": code, "context": {"propertyName": [name]}}}


def _stage_problems(props: dict[str, str], record: _Record | None) -> list[dict[str, Any]]:
    pipeline = props.get("pipeline") or (record.properties.get("pipeline") if record else None)
    if pipeline not in (None, "", "default"):
        return [_invalid("pipeline", "INVALID_OPTION",
                         f"{pipeline} was not one of the allowed options: [default]")]
    stage = props.get("dealstage")
    if stage and stage not in DEFAULT_STAGES:
        options = ", ".join(DEFAULT_STAGES)
        return [_invalid("dealstage", "INVALID_OPTION",
                         f"{stage} was not one of the allowed options: [{options}]")]
    return []


def _looks_like_email(value: str) -> bool:
    local, _, domain = value.partition("@")
    return bool(local) and "." in domain and not domain.startswith(".") and " " not in value


def _listed(values: list[str]) -> list[str]:
    """``?properties=a,b&properties=c`` -> ``[a, b, c]``."""
    return [part.strip() for value in values for part in value.split(",") if part.strip()]


def _spec(from_id: str, to_id: str, type_id: int) -> dict[str, Any]:
    return {"from": {"id": from_id}, "to": {"id": to_id},
            "associationSpec": {"associationCategory": "HUBSPOT_DEFINED",
                                "associationTypeId": type_id}}


async def _body(request: Request) -> Any:
    body = await read_json(request)
    if body is None:
        raise HubSpotError(400, "VALIDATION_ERROR", "Invalid input JSON: the body must be a "
                                                    "JSON object")
    return body

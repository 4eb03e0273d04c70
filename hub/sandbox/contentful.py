"""Contentful sandbox: the slice of the Content Management API (CMA) the CMS connector uses.

One space (``hubsandbox``), environment ``master``, locale ``en-US`` and content type
``product`` (fields ``name`` Symbol, ``description`` Text, ``price`` Number, ``stock`` Integer,
``sku`` Symbol; ``name`` and ``sku`` required). Versions behave as in Contentful, because the
connector's optimistic locking is only tested if they do:

```
PUT    .../entries/{id}            no X-Contentful-Version, new id  -> 201, version 1
                                   no or stale version, existing id -> 409 VersionMismatch
                                   current version                  -> 200, version + 1
PUT    .../entries/{id}/published  current version -> 200, publishedVersion = version,
                                   version + 1, publishedCounter + 1 (stale: 409)
DELETE .../entries/{id}/published  published -> 200, version + 1; not published -> 400
GET    .../entries/{id}            404 NotFound when missing
GET    .../entries?content_type=&limit=&skip=    {"sys":{"type":"Array"},"total","skip",...}
```
Errors use Contentful's body ``{"sys":{"type":"Error","id":...},"message",...,"requestId"}``:
401 ``AccessTokenInvalid`` (Bearer token), 404 ``NotFound``, 409 ``VersionMismatch``, 422
``InvalidEntry`` with ``details.errors`` (unknown field or locale, wrong type, too long) on a
write and ``ValidationFailed`` (required fields missing) on publish, 429 ``RateLimitExceeded``
with ``X-Contentful-RateLimit-Reset``, 5xx ``ServerError``. Every answer carries
``X-Contentful-Request-Id`` and ``X-Contentful-RateLimit-Second-Limit|-Remaining`` (counted
per wall-clock second but never enforced: 429s come only from fault injection).

Left out: assets, content types and locales as resources (they are fixed), archiving,
deleting entries, PATCH, search filters other than ``content_type``, ``order`` (items come in
creation order), tags/metadata (always empty), the Delivery and Preview APIs, and the real
API's check of the request's ``Content-Type``. Where Contentful's exact answer is not
documented the sandbox picks a plausible one: a missing ``X-Contentful-Content-Type`` on create
and a malformed id or body are 400 ``BadRequest``; a versioned PUT of a missing entry is 404.

Seed data, at version 2 and published (publishedVersion 1), so the nightly stock
reconciliation has something to compare with the ERP sandbox's ``SKU-001``..``SKU-008``
and ``SKU-OOS`` (the CMS has no entry for ``SKU-007``, ``SKU-008``, ``SKU-OOS``):

```
entry id          sku      name                       price   stock
product-SKU-001   SKU-001  Trail Running Shoe         129.00   42
product-SKU-002   SKU-002  Merino Wool Socks           19.90  150
product-SKU-003   SKU-003  Waterproof Shell Jacket    249.00   12
product-SKU-004   SKU-004  Insulated Water Bottle      34.50   80
product-SKU-005   SKU-005  Ultralight Daypack          89.00    0
product-SKU-006   SKU-006  Rechargeable Headlamp       45.00   25
```
The stock figures were picked without knowing the ERP's: drift in the reconciliation is
expected for some of them, which is what the nightly report is meant to show.
"""

from __future__ import annotations

import math
import re
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI
from fastapi.exception_handlers import (
    http_exception_handler,
    request_validation_exception_handler,
)
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from hub.sandbox.system import CONTROL_PREFIX, SandboxSystem, json_error, read_json

SPACE_ID = "hubsandbox"
ENVIRONMENT = "master"
LOCALE = "en-US"
CONTENT_TYPE = "product"
ACCESS_TOKEN = "CFPAT-hubsandbox-0123456789abcdef"
"""The only CMA token the sandbox accepts (a sandbox credential, not a secret)."""
SECOND_LIMIT = 7
"""Contentful's default CMA limit, in requests per second, reported in the headers."""
USER_ID = "1hubsandboxuser"
SEED_TIME = "2024-01-15T09:00:00.000Z"

FieldType = Literal["Symbol", "Text", "Number", "Integer"]

PRODUCT_FIELDS: dict[str, FieldType] = {
    "name": "Symbol", "description": "Text", "price": "Number", "stock": "Integer",
    "sku": "Symbol"}
REQUIRED_FIELDS = ("name", "sku")
MAX_LENGTH: dict[FieldType, int] = {"Symbol": 256, "Text": 50_000}

_ID_RE = re.compile(r"^[a-zA-Z0-9._-]{1,64}$")
_MAX_LIMIT = 1000

_SEED = (
    ("SKU-001", "Trail Running Shoe", "Cushioned trail shoe with a grippy outsole.", 129.0, 42),
    ("SKU-002", "Merino Wool Socks", "Breathable merino socks for long days out.", 19.9, 150),
    ("SKU-003", "Waterproof Shell Jacket", "Three-layer shell, taped seams.", 249.0, 12),
    ("SKU-004", "Insulated Water Bottle", "Keeps drinks cold for 24 hours.", 34.5, 80),
    ("SKU-005", "Ultralight Daypack", "A 20 litre pack that weighs 400 g.", 89.0, 0),
    ("SKU-006", "Rechargeable Headlamp", "400 lumen headlamp, USB-C charging.", 45.0, 25),
)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _link(link_type: str, id_: str) -> dict[str, Any]:
    return {"sys": {"type": "Link", "linkType": link_type, "id": id_}}


class ContentfulError(Exception):
    """An answer in Contentful's error format; raised by routes, rendered by ``install``."""

    def __init__(self, status: int, error_id: str, message: str, *,
                 details: dict[str, Any] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.error_id = error_id
        self.message = message
        self.details = details
        self.headers = headers or {}


def error_body(error_id: str, message: str, request_id: str,
               details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"sys": {"type": "Error", "id": error_id}, "message": message}
    if details is not None:
        body["details"] = details
    body["requestId"] = request_id
    return body


@dataclass
class Entry:
    """One entry's state; ``fields`` is localized (``{"name": {"en-US": "..."}}``)."""

    id: str
    content_type: str
    fields: dict[str, dict[str, Any]]
    created_at: str
    updated_at: str
    version: int = 1
    published_version: int | None = None
    published_at: str | None = None
    first_published_at: str | None = None
    published_counter: int = 0
    writes: int = 0
    publishes: int = 0
    unpublishes: int = 0
    conflicts: int = 0

    @property
    def status(self) -> str:
        """Contentful's web app wording: draft, published, or changed since published."""
        if self.published_version is None:
            return "draft"
        return "published" if self.version == self.published_version + 1 else "changed"


class ContentfulSandbox(SandboxSystem):
    name = "contentful"
    default_port = 8904

    def __init__(self, *, seed: int | None = None) -> None:
        self.entries: dict[str, Entry] = {}
        self._window = 0
        self._window_count = 0
        self._seed_entries()
        super().__init__(seed=seed)

    # --- SandboxSystem ------------------------------------------------------------------

    def router(self) -> APIRouter:
        router = APIRouter(prefix="/spaces/{space_id}/environments/{environment_id}",
                           dependencies=[Depends(self._authorize)])

        @router.get("/entries")
        async def list_entries(space_id: str, environment_id: str,
                               request: Request) -> dict[str, Any]:
            self._environment(space_id, environment_id)
            return self._list(request)

        @router.get("/entries/{entry_id}")
        async def get_entry(space_id: str, environment_id: str, entry_id: str,
                            ) -> dict[str, Any]:
            self._environment(space_id, environment_id)
            return self._render(self._entry(entry_id))

        @router.put("/entries/{entry_id}")
        async def put_entry(space_id: str, environment_id: str, entry_id: str,
                            request: Request) -> JSONResponse:
            self._environment(space_id, environment_id)
            return await self._put(entry_id, request)

        @router.put("/entries/{entry_id}/published")
        async def publish(space_id: str, environment_id: str, entry_id: str,
                          request: Request) -> dict[str, Any]:
            self._environment(space_id, environment_id)
            return self._publish(entry_id, request)

        @router.delete("/entries/{entry_id}/published")
        async def unpublish(space_id: str, environment_id: str, entry_id: str,
                            request: Request) -> dict[str, Any]:
            self._environment(space_id, environment_id)
            return self._unpublish(entry_id, request)

        return router

    def install(self, app: FastAPI) -> None:
        app.add_middleware(_RateLimitHeaders, sandbox=self)

        @app.exception_handler(ContentfulError)
        async def contentful_error(request: Request, exc: ContentfulError) -> Response:
            return self._error(exc.status, exc.error_id, exc.message, details=exc.details,
                               headers=exc.headers)

        @app.exception_handler(StarletteHTTPException)
        async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
            if request.url.path.startswith(CONTROL_PREFIX):
                return await http_exception_handler(request, exc)
            if exc.status_code == 404:
                return self._error(404, "NotFound", "The resource could not be found.",
                                   details={"type": "Route", "path": request.url.path})
            return self._error(exc.status_code, "BadRequest", str(exc.detail))

        @app.exception_handler(RequestValidationError)
        async def validation_error(request: Request, exc: RequestValidationError) -> Response:
            if request.url.path.startswith(CONTROL_PREFIX):
                return await request_validation_exception_handler(request, exc)
            return self._error(400, "BadRequest", "The request was malformed.")

    def inspect(self) -> dict[str, Any]:
        return {
            "space": SPACE_ID,
            "environment": ENVIRONMENT,
            "entries": {e.id: {
                "contentType": e.content_type,
                "version": e.version,
                "publishedVersion": e.published_version,
                "publishedCounter": e.published_counter,
                "status": e.status,
                "fields": e.fields,
                "writes": e.writes,
                "publishes": e.publishes,
                "unpublishes": e.unpublishes,
                "conflicts": e.conflicts,
            } for e in self.entries.values()},
        }

    def reset(self) -> None:
        self._seed_entries()

    def error_response(self, status: int, *, retry_after_s: float | None = None) -> Response:
        if status == 429:
            reset = str(math.ceil(retry_after_s if retry_after_s is not None else 1))
            return self._error(
                429, "RateLimitExceeded",
                "You have exceeded the rate limit of the Organization this Space belongs to "
                "by making too many API requests within a short timespan. Please wait a "
                "moment before trying the request again.",
                headers={"X-Contentful-RateLimit-Reset": reset,
                         "X-Contentful-RateLimit-Second-Limit": str(SECOND_LIMIT),
                         "X-Contentful-RateLimit-Second-Remaining": "0"})
        message = {502: "Bad gateway.", 503: "Service unavailable.",
                   504: "Gateway timeout."}.get(status, "Internal server error.")
        return self._error(status, "ServerError", message)

    def connector_env(self, base_url: str) -> dict[str, str]:
        return {
            "HUB_CONTENTFUL_BASE_URL": base_url,
            "HUB_CONTENTFUL_ACCESS_TOKEN": ACCESS_TOKEN,
            "HUB_CONTENTFUL_SPACE_ID": SPACE_ID,
            "HUB_CONTENTFUL_ENVIRONMENT": ENVIRONMENT,
        }

    # --- rate-limit bookkeeping ---------------------------------------------------------

    def rate_limit_headers(self) -> dict[str, str]:
        """Count this request in the current second; headers as on every CMA answer."""
        window = int(time.time())
        if window != self._window:
            self._window, self._window_count = window, 0
        self._window_count += 1
        return {"X-Contentful-RateLimit-Second-Limit": str(SECOND_LIMIT),
                "X-Contentful-RateLimit-Second-Remaining":
                    str(max(0, SECOND_LIMIT - self._window_count)),
                "X-Contentful-RateLimit-Reset": "0"}

    # --- checks -------------------------------------------------------------------------

    def _authorize(self, request: Request) -> None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != ACCESS_TOKEN:
            raise ContentfulError(
                401, "AccessTokenInvalid",
                "The access token you sent could not be found or is invalid.")

    def _environment(self, space_id: str, environment_id: str) -> None:
        if space_id != SPACE_ID:
            raise ContentfulError(404, "NotFound", "The resource could not be found.",
                                  details={"type": "Space", "id": space_id})
        if environment_id != ENVIRONMENT:
            raise ContentfulError(404, "NotFound", "The resource could not be found.",
                                  details={"type": "Environment", "id": environment_id,
                                           "space": space_id})

    def _entry(self, entry_id: str) -> Entry:
        entry = self.entries.get(entry_id)
        if entry is None:
            raise ContentfulError(404, "NotFound", "The resource could not be found.",
                                  details={"type": "Entry", "id": entry_id,
                                           "environment": ENVIRONMENT, "space": SPACE_ID})
        return entry

    def _check_version(self, entry: Entry, request: Request, *, required: bool) -> None:
        header = request.headers.get("x-contentful-version")
        if header is None and not required:
            return
        if header is None or not header.strip().isdigit() or int(header) != entry.version:
            entry.conflicts += 1
            raise ContentfulError(
                409, "VersionMismatch",
                "Version mismatch error. The version you specified was incorrect. "
                "This may be due to someone else editing the content.")

    # --- operations ---------------------------------------------------------------------

    def _list(self, request: Request) -> dict[str, Any]:
        query = request.query_params
        limit = _int_param(query.get("limit"), "limit", default=100)
        skip = _int_param(query.get("skip"), "skip", default=0)
        if limit > _MAX_LIMIT:
            raise ContentfulError(400, "InvalidQuery", "The query you sent was invalid.",
                                  details={"errors": [{
                                      "name": "max", "max": _MAX_LIMIT, "value": limit,
                                      "details": f"Limit must not exceed {_MAX_LIMIT}",
                                      "path": ["limit"]}]})
        content_type = query.get("content_type")
        matching = [e for e in self.entries.values()
                    if content_type is None or e.content_type == content_type]
        return {"sys": {"type": "Array"}, "total": len(matching), "skip": skip,
                "limit": limit, "items": [self._render(e) for e in matching[skip:skip + limit]]}

    async def _put(self, entry_id: str, request: Request) -> JSONResponse:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("fields", {}), dict):
            raise ContentfulError(400, "BadRequest",
                                  "The body must be a JSON object with an object 'fields'.")
        fields: dict[str, Any] = body.get("fields", {})
        entry = self.entries.get(entry_id)
        if entry is None:
            if request.headers.get("x-contentful-version") is not None:
                self._entry(entry_id)  # an update of nothing: 404
            if not _ID_RE.match(entry_id):
                raise ContentfulError(
                    400, "BadRequest", "Invalid resource id: use 1 to 64 characters from "
                    "a-z, A-Z, 0-9, '.', '-' and '_'.")
            content_type = request.headers.get("x-contentful-content-type")
            if not content_type:
                raise ContentfulError(400, "BadRequest",
                                      "Missing X-Contentful-Content-Type header.")
            if content_type != CONTENT_TYPE:
                raise _invalid_entry([{
                    "name": "notResolvable", "path": ["sys", "contentType", "sys", "id"],
                    "details": f"The content type {content_type!r} could not be found"}])
            _validate(fields)
            now = _now()
            entry = Entry(id=entry_id, content_type=content_type, fields=fields,
                          created_at=now, updated_at=now, writes=1)
            self.entries[entry_id] = entry
            return JSONResponse(self._render(entry), status_code=201)
        self._check_version(entry, request, required=True)
        _validate(fields)
        entry.fields = fields
        entry.version += 1
        entry.updated_at = _now()
        entry.writes += 1
        return JSONResponse(self._render(entry))

    def _publish(self, entry_id: str, request: Request) -> dict[str, Any]:
        entry = self._entry(entry_id)
        self._check_version(entry, request, required=True)
        missing = [name for name in REQUIRED_FIELDS
                   if entry.fields.get(name, {}).get(LOCALE) in (None, "")]
        if missing:
            raise ContentfulError(422, "ValidationFailed", "Validation error", details={
                "errors": [{"name": "required", "path": ["fields", name],
                            "details": "Required field is missing"} for name in missing]})
        now = _now()
        entry.published_version = entry.version
        entry.version += 1
        entry.published_counter += 1
        entry.published_at = entry.updated_at = now
        entry.first_published_at = entry.first_published_at or now
        entry.publishes += 1
        return self._render(entry)

    def _unpublish(self, entry_id: str, request: Request) -> dict[str, Any]:
        entry = self._entry(entry_id)
        self._check_version(entry, request, required=False)
        if entry.published_version is None:
            raise ContentfulError(400, "BadRequest", "Not published")
        entry.published_version = entry.published_at = None
        entry.version += 1
        entry.updated_at = _now()
        entry.unpublishes += 1
        return self._render(entry)

    # --- rendering ----------------------------------------------------------------------

    def _render(self, entry: Entry) -> dict[str, Any]:
        sys: dict[str, Any] = {
            "space": _link("Space", SPACE_ID),
            "id": entry.id,
            "type": "Entry",
            "createdAt": entry.created_at,
            "updatedAt": entry.updated_at,
            "environment": _link("Environment", ENVIRONMENT),
            "createdBy": _link("User", USER_ID),
            "updatedBy": _link("User", USER_ID),
            "publishedCounter": entry.published_counter,
            "version": entry.version,
            "automationTags": [],
            "contentType": _link("ContentType", entry.content_type),
        }
        if entry.published_version is not None:
            sys.update({"publishedVersion": entry.published_version,
                        "publishedAt": entry.published_at,
                        "publishedBy": _link("User", USER_ID)})
        if entry.first_published_at is not None:
            sys["firstPublishedAt"] = entry.first_published_at
        return {"metadata": {"tags": [], "concepts": []}, "sys": sys, "fields": entry.fields}

    def _error(self, status: int, error_id: str, message: str, *,
               details: dict[str, Any] | None = None,
               headers: dict[str, str] | None = None) -> JSONResponse:
        request_id = uuid.uuid4().hex
        return json_error(status, error_body(error_id, message, request_id, details),
                          {"X-Contentful-Request-Id": request_id, **(headers or {})})

    def _seed_entries(self) -> None:
        self.entries = {}
        for sku, name, description, price, stock in _SEED:
            entry = Entry(
                id=f"{CONTENT_TYPE}-{sku}", content_type=CONTENT_TYPE,
                fields={"name": {LOCALE: name}, "description": {LOCALE: description},
                        "price": {LOCALE: price}, "stock": {LOCALE: stock},
                        "sku": {LOCALE: sku}},
                created_at=SEED_TIME, updated_at=SEED_TIME, version=2, published_version=1,
                published_at=SEED_TIME, first_published_at=SEED_TIME, published_counter=1)
            self.entries[entry.id] = entry


def _int_param(value: str | None, name: str, *, default: int) -> int:
    if value is None:
        return default
    if not value.isdigit():
        raise ContentfulError(400, "InvalidQuery", "The query you sent was invalid.",
                              details={"errors": [{
                                  "name": "type", "type": "Integer", "value": value,
                                  "details": f"{name} must be a non-negative integer",
                                  "path": [name]}]})
    return int(value)


def _invalid_entry(errors: list[dict[str, Any]]) -> ContentfulError:
    return ContentfulError(422, "InvalidEntry", "Validation error",
                           details={"errors": errors})


def _validate(fields: dict[str, Any]) -> None:
    """Contentful checks shape and types on every save, required fields only on publish."""
    errors: list[dict[str, Any]] = []
    for name, localized in fields.items():
        kind = PRODUCT_FIELDS.get(name)
        if kind is None:
            errors.append({"name": "unknown", "path": ["fields", name],
                           "details": f'The property "{name}" is not expected'})
            continue
        if not isinstance(localized, dict):
            errors.append({"name": "type", "type": "Object", "value": localized,
                           "path": ["fields", name],
                           "details": 'The type of "value" is incorrect, expected type: '
                                      "Object"})
            continue
        for locale, value in localized.items():
            path = ["fields", name, locale]
            if locale != LOCALE:
                errors.append({"name": "unknown", "path": path,
                               "details": f'The property "{locale}" is not expected'})
            elif value is not None and not _has_type(value, kind):
                errors.append({"name": "type", "type": kind, "value": value, "path": path,
                               "details": 'The type of "value" is incorrect, expected type: '
                                          f"{kind}"})
            elif isinstance(value, str) and len(value) > MAX_LENGTH[kind]:
                errors.append({"name": "size", "max": MAX_LENGTH[kind], "path": path,
                               "details": f"Size must be at most {MAX_LENGTH[kind]}"})
    if errors:
        raise _invalid_entry(errors)


def _has_type(value: Any, kind: FieldType) -> bool:
    if kind in ("Symbol", "Text"):
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    return kind == "Number" or float(value).is_integer()


class _RateLimitHeaders:
    """Adds the CMA's request id and per-second rate-limit headers to every API answer."""

    def __init__(self, app: ASGIApp, sandbox: ContentfulSandbox) -> None:
        self.app = app
        self.sandbox = sandbox

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        extra = self.sandbox.rate_limit_headers()

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                if b"x-contentful-request-id" not in present:
                    headers.append((b"x-contentful-request-id", uuid.uuid4().hex.encode()))
                for key, value in extra.items():
                    if key.lower().encode() not in present:
                        headers.append((key.lower().encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

"""Contentful connector: product entries through the Content Management API (CMA).

Contentful's SDKs are synchronous, so this is a thin layer over ``HttpConnector``. It uses
the CMA's entry routes only (``/spaces/{space}/environments/{env}/entries``): read, list,
create or update by ``PUT``, publish and unpublish. Assets, content types, locales, tags and
the Delivery API are left out.

Contentful has no idempotency keys; a re-run step has one effect because of natural ids and
optimistic locking instead:

- the entry id is derived from the SKU (``product-SKU-001``), so a create is a ``PUT`` on a
  known id, and a second create answers 409 instead of making a duplicate;
- every write first reads the entry and compares: unchanged fields write nothing, an entry
  already published at its current version is not published again;
- updates and publishes carry ``X-Contentful-Version``; a 409 ``VersionMismatch`` (someone
  edited in between, or our own earlier attempt landed) re-reads and tries again, a bounded
  number of times, then gives up as a transient error so the engine retries the step later.

A 429 waits ``X-Contentful-RateLimit-Reset`` seconds (copied to ``Retry-After``, which the
base honours); the per-second budget headers are kept in ``rate_limit`` for logs and metrics,
and our own limiter paces calls at the CMA's default of 7 per second.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar

import httpx
import structlog
from pydantic import AnyHttpUrl, FilePath, NonNegativeInt, PositiveFloat, SecretStr
from pydantic import StringConstraints as Constraints
from pydantic_settings import SettingsConfigDict

from connectors.base import (
    ConnectorConfigError,
    ConnectorSettings,
    HttpConnector,
    Sleep,
    Verdict,
    load_settings,
)
from hub import PermanentConnectorError, StepContext, TransientConnectorError, provides

log = structlog.get_logger("connectors.contentful")

MEDIA_TYPE = "application/vnd.contentful.management.v1+json"
PAGE_SIZE = 100
_SAFE_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
_MAX_ID = 64
_DETAIL_CHARS = 300

ResourceId = Annotated[str, Constraints(pattern=r"^[a-zA-Z0-9._-]{1,64}$")]
"""Contentful's rule for ids of spaces, environments, content types and entries."""


class ContentfulSettings(ConnectorSettings):
    """``HUB_CONTENTFUL_*``: ``ACCESS_TOKEN`` (or ``ACCESS_TOKEN_FILE``, a CMA personal
    access token) and ``SPACE_ID`` are required; ``BASE_URL``, ``ENVIRONMENT``,
    ``CONTENT_TYPE`` and ``LOCALE`` default to Contentful's usual values, and
    ``RATE_PER_SECOND`` to the CMA's default limit (raise it on plans that allow more)."""

    model_config = SettingsConfigDict(env_prefix="HUB_CONTENTFUL_", extra="ignore")
    required_secrets: ClassVar[tuple[str, ...]] = ("access_token",)

    base_url: AnyHttpUrl = AnyHttpUrl("https://api.contentful.com")
    access_token: SecretStr | None = None
    access_token_file: FilePath | None = None
    space_id: ResourceId
    environment: ResourceId = "master"
    content_type: ResourceId = "product"
    locale: Annotated[str, Constraints(min_length=2)] = "en-US"
    rate_per_second: PositiveFloat = 7.0
    max_version_conflicts: NonNegativeInt = 3
    """How often one write re-reads after a 409 before leaving it to the engine's retry."""


@dataclass(frozen=True)
class RateLimit:
    """The CMA's budget as its last answer reported it (``None``: header absent)."""

    second_limit: int | None = None
    second_remaining: int | None = None
    reset_s: float | None = None


def entry_id_for(sku: str, content_type: str = "product") -> str:
    """The entry id of a SKU: ``<content type>-<SKU>``, distinct SKUs never sharing one.

    Characters outside ``[a-zA-Z0-9.-]`` (``_`` included) become ``_`` plus two hex digits
    per UTF-8 byte, so the mapping is one-to-one; an id over Contentful's 64 characters
    becomes ``<content type>-_h<sha256>`` (``_h`` never comes out of the escaping).
    """
    if not sku:
        raise PermanentConnectorError("contentful: a product needs a non-empty SKU")
    escaped = "".join(ch if ch in _SAFE_ID_CHARS else
                      "".join(f"_{byte:02x}" for byte in ch.encode()) for ch in sku)
    entry_id = f"{content_type}-{escaped}"
    if len(entry_id) <= _MAX_ID:
        return entry_id
    digest = hashlib.sha256(sku.encode()).hexdigest()
    return f"{content_type}-_h{digest}"[:_MAX_ID]


class ContentfulConnector(HttpConnector):
    """Product content in one Contentful space and environment; registered as ``"cms"``."""

    idempotency_header: ClassVar[str | None] = None
    settings: ContentfulSettings

    def __init__(self, settings: ContentfulSettings, *,
                 transport: httpx.AsyncBaseTransport | None = None,
                 sleep: Sleep = asyncio.sleep,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if settings.access_token is None:
            raise ConnectorConfigError("ContentfulSettings: HUB_CONTENTFUL_ACCESS_TOKEN or "
                                       "HUB_CONTENTFUL_ACCESS_TOKEN_FILE is required")
        token = settings.access_token.get_secret_value()
        super().__init__("contentful", settings, headers={"Authorization": f"Bearer {token}"},
                         transport=transport, sleep=sleep, clock=clock)
        self.rate_limit = RateLimit()
        self._entries = (f"/spaces/{settings.space_id}/environments/"
                         f"{settings.environment}/entries")

    # --- operations ---------------------------------------------------------------------

    async def upsert_product(self, ctx: StepContext | None, *, sku: str,
                             fields: Mapping[str, Any]) -> dict[str, Any]:
        """Create or update the SKU's entry with ``fields`` (plain values) and publish it.

        Only the given fields (and ``sku``) are set, in the configured locale; other fields
        and locales keep their values. Returns ``{"id", "version", "published_version"}``.
        """
        entry_id = self.entry_id(sku)
        wanted = {**fields, "sku": sku}
        for attempt in range(1 + self.settings.max_version_conflicts):
            entry = await self._read(ctx, entry_id)
            if entry is None:
                entry = await self._write(ctx, "create product", entry_id,
                                          self._merge({}, wanted), version=None)
            else:
                desired = self._merge(entry["fields"], wanted)
                if desired != entry["fields"]:
                    entry = await self._write(ctx, "update product", entry_id, desired,
                                              version=entry["sys"]["version"])
            if entry is not None and not _published_current(entry):
                entry = await self._publish(ctx, entry_id, entry["sys"]["version"])
            if entry is not None:
                sys = entry["sys"]
                return {"id": entry_id, "version": sys["version"],
                        "published_version": sys.get("publishedVersion")}
            log.info("contentful_version_conflict", entry_id=entry_id, attempt=attempt + 1)
        raise self._conflicts_exhausted("upsert product", entry_id)

    async def get_product(self, ctx: StepContext | None, sku: str) -> dict[str, Any] | None:
        """The SKU's entry as ``{"id", "version", "published_version", "status", "fields"}``
        (plain values in the configured locale), or ``None`` if it has none."""
        entry = await self._read(ctx, self.entry_id(sku))
        return None if entry is None else self._plain(entry)

    async def list_products(self, ctx: StepContext | None) -> list[dict[str, Any]]:
        """Every entry of the product content type, page by page, as ``get_product`` shows
        them: what the nightly stock reconciliation compares with the ERP."""
        products: list[dict[str, Any]] = []
        skip = 0
        while True:
            response = await self._call(
                "list products", "GET", self._entries, ctx=ctx,
                params={"content_type": self.settings.content_type, "limit": PAGE_SIZE,
                        "skip": skip})
            page = response.json()
            items = page.get("items", [])
            products.extend(self._plain(item) for item in items)
            skip += len(items)
            if not items or skip >= int(page.get("total", 0)):
                return products

    async def unpublish_product(self, ctx: StepContext | None, sku: str) -> None:
        """Take the SKU's entry off the Delivery API; a missing or unpublished entry is
        already in that state, so this is safe as a compensation and on every re-run."""
        entry_id = self.entry_id(sku)
        for attempt in range(1 + self.settings.max_version_conflicts):
            entry = await self._read(ctx, entry_id)
            if entry is None or entry["sys"].get("publishedVersion") is None:
                return
            response = await self._call(
                "unpublish product", "DELETE", f"{self._entries}/{entry_id}/published",
                ctx=ctx, entry_id=entry_id, expect=frozenset({400, 409}),
                headers={"X-Contentful-Version": str(entry["sys"]["version"])})
            if response.status_code < 400:
                return
            if response.status_code == 400:  # "Not published": re-read decides
                again = await self._read(ctx, entry_id)
                if again is None or again["sys"].get("publishedVersion") is None:
                    return
                raise PermanentConnectorError(self._describe("unpublish product", entry_id,
                                                             response))
            log.info("contentful_version_conflict", entry_id=entry_id, attempt=attempt + 1)
        raise self._conflicts_exhausted("unpublish product", entry_id)

    def entry_id(self, sku: str) -> str:
        return entry_id_for(sku, self.settings.content_type)

    # --- HTTP ---------------------------------------------------------------------------

    outside_id_fields: ClassVar[tuple[tuple[str | int, ...], ...]] = (("sys", "id"),)
    """The entry's id."""

    def classify(self, response: httpx.Response) -> Verdict:
        """Refusals come back to ``_call``, which knows the operation and reads Contentful's
        error id; retryable answers stay with the base."""
        verdict = super().classify(response)
        return "success" if verdict == "permanent" else verdict

    async def _call(self, operation: str, method: str, path: str, *,
                    ctx: StepContext | None, entry_id: str | None = None,
                    expect: frozenset[int] = frozenset(), json: Any = None,
                    params: Mapping[str, Any] | None = None,
                    headers: Mapping[str, str] | None = None) -> httpx.Response:
        """One request; a refusal not in ``expect`` becomes ``PermanentConnectorError``."""
        response = await self.request(method, path, ctx=ctx, json=json, params=params,
                                      headers=headers, operation=operation.replace(" ", "_"))
        if response.status_code < 400 or response.status_code in expect:
            return response
        raise PermanentConnectorError(self._describe(operation, entry_id, response))

    async def _read(self, ctx: StepContext | None, entry_id: str) -> dict[str, Any] | None:
        response = await self._call("get product", "GET", f"{self._entries}/{entry_id}",
                                    ctx=ctx, entry_id=entry_id, expect=frozenset({404}))
        if response.status_code == 404:
            details = _error(response).get("details") or {}
            if details.get("type", "Entry") != "Entry":  # the space or environment is wrong
                raise PermanentConnectorError(self._describe("get product", entry_id,
                                                             response))
            return None
        entry: dict[str, Any] = response.json()
        return entry

    async def _write(self, ctx: StepContext | None, operation: str, entry_id: str,
                     fields: dict[str, Any], *, version: int | None,
                     ) -> dict[str, Any] | None:
        """``PUT`` the entry; ``None`` on 409 (it exists already, or moved on)."""
        headers = {"Content-Type": MEDIA_TYPE}
        if version is None:
            headers["X-Contentful-Content-Type"] = self.settings.content_type
        else:
            headers["X-Contentful-Version"] = str(version)
        response = await self._call(operation, "PUT", f"{self._entries}/{entry_id}", ctx=ctx,
                                    entry_id=entry_id, expect=frozenset({409}),
                                    json={"fields": fields}, headers=headers)
        return None if response.status_code == 409 else _json_object(response)

    async def _publish(self, ctx: StepContext | None, entry_id: str, version: int,
                       ) -> dict[str, Any] | None:
        response = await self._call(
            "publish product", "PUT", f"{self._entries}/{entry_id}/published", ctx=ctx,
            entry_id=entry_id, expect=frozenset({409}),
            headers={"X-Contentful-Version": str(version)})
        return None if response.status_code == 409 else _json_object(response)

    async def after_receive(self, response: httpx.Response) -> None:
        """Keep the budget the CMA reports; on a 429 turn its reset into ``Retry-After``."""
        headers = response.headers
        self.rate_limit = RateLimit(
            second_limit=_number(headers.get("x-contentful-ratelimit-second-limit")),
            second_remaining=_number(headers.get("x-contentful-ratelimit-second-remaining")),
            reset_s=_number(headers.get("x-contentful-ratelimit-reset")))
        reset = headers.get("x-contentful-ratelimit-reset")
        if response.status_code == 429 and reset is not None and "retry-after" not in headers:
            response.headers["Retry-After"] = reset.strip()

    # --- shapes and messages ------------------------------------------------------------

    def _merge(self, current: Mapping[str, Any], plain: Mapping[str, Any]) -> dict[str, Any]:
        """``current`` (localized) with ``plain`` set in our locale; ``None`` clears."""
        locale = self.settings.locale
        merged = {name: dict(values) for name, values in current.items()}
        for name, value in plain.items():
            values = merged.setdefault(name, {})
            if value is None:
                values.pop(locale, None)
                if not values:
                    del merged[name]
            else:
                values[locale] = value
        return merged

    def _plain(self, entry: Mapping[str, Any]) -> dict[str, Any]:
        sys = entry["sys"]
        locale = self.settings.locale
        published = sys.get("publishedVersion")
        return {
            "id": sys["id"],
            "version": sys["version"],
            "published_version": published,
            "status": ("draft" if published is None else
                       "published" if _published_current(entry) else "changed"),
            "fields": {name: values[locale] for name, values in entry.get("fields", {}).items()
                       if isinstance(values, dict) and locale in values},
        }

    def _describe(self, operation: str, entry_id: str | None,
                  response: httpx.Response) -> str:
        """``contentful: <operation> <entry>: <status> <error id>: <message> (details)``,
        with a hint at the setting to check when the answer points at one."""
        error = _error(response)
        error_id = (error.get("sys") or {}).get("id", "Error")
        message = error.get("message") or self._excerpt(response)
        problems = [
            f"{'.'.join(str(p) for p in item.get('path', []))}: {item.get('details', '')}"
            for item in (error.get("details") or {}).get("errors", [])
            if isinstance(item, dict)]
        target = f" {entry_id!r}" if entry_id else ""
        text = (f"contentful: {operation}{target} failed: {response.status_code} {error_id}: "
                f"{message}")
        if problems:
            text += " (" + "; ".join(problems)[:_DETAIL_CHARS] + ")"
        if response.status_code == 401:
            text += "; check HUB_CONTENTFUL_ACCESS_TOKEN"
        elif (error.get("details") or {}).get("type") in ("Space", "Environment"):
            text += "; check HUB_CONTENTFUL_SPACE_ID and HUB_CONTENTFUL_ENVIRONMENT"
        return self.redact(text)

    def _conflicts_exhausted(self, operation: str, entry_id: str) -> TransientConnectorError:
        return TransientConnectorError(
            f"contentful: {operation} {entry_id!r}: VersionMismatch on "
            f"{1 + self.settings.max_version_conflicts} attempts in a row (someone keeps "
            "editing the entry); the step will be retried")


def _published_current(entry: Mapping[str, Any]) -> bool:
    """Published, with nothing changed since: publishing bumps the version once more."""
    sys = entry["sys"]
    published = sys.get("publishedVersion")
    return published is not None and sys["version"] == published + 1


def _error(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}


def _json_object(response: httpx.Response) -> dict[str, Any]:
    body = response.json()
    if not isinstance(body, dict) or not isinstance(body.get("sys"), dict):
        raise PermanentConnectorError(
            f"contentful: {response.request.method} {response.request.url.path} answered "
            f"{response.status_code} without an entry in the body")
    return body


def _number(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        return int(float(value))
    except ValueError:
        return None


@provides("cms")
def _build() -> ContentfulConnector:
    return ContentfulConnector(load_settings(ContentfulSettings))

"""A client of a Confluent-compatible schema registry (Confluent, Apicurio's ``ccompat`` API).

Schemas are immutable by id, so each id is fetched once per process: kept in a bounded LRU
cache, and concurrent lookups of one id share one request (a batch of a thousand records of a
new schema asks once). What the registry answers is split the way the consumer must act:

    RegistryError
      RegistryUnavailable   network, 5xx, 429, refused credentials: worth a retry, the
                            record is good (the batch is retried, never dead-lettered)
      SchemaUnusable        the registry said no for this id (unknown, too large, not a
                            schema): the record can never be decoded, dead-letter it
        SchemaNotFound      404: no such id (or subject)
"""

from __future__ import annotations

import asyncio
import json
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

import httpx

from hub.errors import HubError
from hub.settings import KafkaSettings, mask_dsn

SchemaType = Literal["AVRO", "JSON", "PROTOBUF"]
_SCHEMA_TYPES: tuple[SchemaType, ...] = ("AVRO", "JSON", "PROTOBUF")
CONTENT_TYPE = "application/vnd.schemaregistry.v1+json"


class RegistryError(HubError):
    """Something about the schema registry; see the subclasses."""


class RegistryUnavailable(RegistryError):
    """The registry could not answer now (or refused our credentials): transient."""

    retryable = True


class SchemaUnusable(RegistryError):
    """The registry answered, and the answer makes this schema id unusable: permanent."""

    retryable = False


class SchemaNotFound(SchemaUnusable):
    """The registry does not know the id or subject asked for (404)."""


@dataclass(frozen=True)
class RegisteredSchema:
    """One schema as the registry holds it under its id."""

    id: int
    schema_type: SchemaType
    text: str


@dataclass(frozen=True)
class Compatibility:
    """The registry's verdict on a candidate schema for a subject."""

    subject: str
    compatible: bool
    messages: tuple[str, ...] = ()
    new_subject: bool = False
    """The subject has no version yet: anything is compatible with nothing."""


class SchemaRegistry:
    """Bounded, deduplicating lookups by id; registration and compatibility for producers."""

    def __init__(self, url: str, *, username: str | None = None, password: str | None = None,
                 timeout_s: float = 10.0, cache_size: int = 1000,
                 max_schema_bytes: int = 1_048_576,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        self.url = url.rstrip("/")
        self.cache_size = cache_size
        self.max_schema_bytes = max_schema_bytes
        auth = httpx.BasicAuth(username, password or "") if username else None
        self._http = httpx.AsyncClient(base_url=self.url, auth=auth, timeout=timeout_s,
                                       transport=transport,
                                       headers={"Accept": CONTENT_TYPE})
        self._by_id: OrderedDict[int, RegisteredSchema] = OrderedDict()
        self._inflight: dict[int, asyncio.Future[RegisteredSchema]] = {}
        self._ids: OrderedDict[tuple[str, str], int] = OrderedDict()
        self.fetches = 0
        """Requests made for schemas by id (for the cache's tests and metrics)."""

    @classmethod
    def from_settings(cls, settings: KafkaSettings) -> SchemaRegistry | None:
        """The registry of ``HUB_SCHEMA_REGISTRY_URL``, or None when it is not set."""
        if not settings.schema_registry_url:
            return None
        password = settings.schema_registry_password
        return cls(settings.schema_registry_url,
                   username=settings.schema_registry_username,
                   password=password.get_secret_value() if password is not None else None,
                   timeout_s=settings.schema_registry_timeout_s,
                   cache_size=settings.schema_registry_cache_size)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def schema(self, schema_id: int) -> RegisteredSchema:
        """The schema of ``schema_id`` (cached; one request for concurrent askers)."""
        cached = self._by_id.get(schema_id)
        if cached is not None:
            self._by_id.move_to_end(schema_id)
            return cached
        pending = self._inflight.get(schema_id)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if pending.cancelled():  # the asker we waited on was cancelled, not us
                    return await self.schema(schema_id)
                raise
        future: asyncio.Future[RegisteredSchema] = asyncio.get_running_loop().create_future()
        self._inflight[schema_id] = future
        try:
            found = await self._fetch(schema_id)
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning without waiters
            raise
        else:
            future.set_result(found)
            self._remember(schema_id, found)
            return found
        finally:
            del self._inflight[schema_id]

    def _remember(self, schema_id: int, found: RegisteredSchema) -> None:
        self._by_id[schema_id] = found
        while len(self._by_id) > self.cache_size:
            self._by_id.popitem(last=False)

    async def _fetch(self, schema_id: int) -> RegisteredSchema:
        self.fetches += 1
        body = await self._get_bounded(f"/schemas/ids/{schema_id}", f"schema id {schema_id}")
        text = body.get("schema")
        if not isinstance(text, str):
            raise SchemaUnusable(f"the registry's answer for schema id {schema_id} holds no "
                                 "schema text")
        _self_contained(body, f"schema id {schema_id}")
        return RegisteredSchema(schema_id, _schema_type(body, f"schema id {schema_id}"), text)

    async def _get_bounded(self, path: str, what: str) -> dict[str, Any]:
        """GET ``path`` reading at most ``max_schema_bytes``: a registry (or something posing
        as one) that answers with a huge body costs a bounded read, not the worker's memory."""
        try:
            async with self._http.stream("GET", path) as reply:
                if reply.status_code == 404:
                    raise SchemaNotFound(f"{what} is not known to the registry at "
                                         f"{mask_dsn(self.url)} (404)")
                _raise_for_status(reply, self.url, what)
                chunks: list[bytes] = []
                size = 0
                async for chunk in reply.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_schema_bytes:
                        raise SchemaUnusable(
                            f"{what}: the registry's answer is larger than "
                            f"{self.max_schema_bytes} bytes; refused")
                    chunks.append(chunk)
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(
                f"schema registry at {mask_dsn(self.url)} unreachable while fetching {what}: "
                f"{type(exc).__name__}: {exc}") from exc
        return _json_object(b"".join(chunks), what)

    async def latest(self, subject: str) -> RegisteredSchema | None:
        """The latest schema of ``subject``, or None when it has no version yet."""
        what = f"the latest version of subject {subject!r}"
        try:
            body = await self._get_bounded(
                f"/subjects/{quote(subject, safe='')}/versions/latest", what)
        except SchemaNotFound:
            return None
        text, schema_id = body.get("schema"), body.get("id")
        if not isinstance(text, str) or not isinstance(schema_id, int):
            raise SchemaUnusable(f"{what}: the registry's answer holds no schema and id")
        _self_contained(body, what)
        found = RegisteredSchema(schema_id, _schema_type(body, what), text)
        self._remember(schema_id, found)
        return found

    async def register(self, subject: str, text: str, schema_type: SchemaType) -> int:
        """The id of ``text`` under ``subject``, registering it if new (idempotent in the
        registry: the same schema gets the same id)."""
        key = (subject, text)
        if key in self._ids:
            return self._ids[key]
        body = await self._post(f"/subjects/{quote(subject, safe='')}/versions",
                                _candidate(text, schema_type), f"registering under {subject!r}")
        schema_id = body.get("id")
        if not isinstance(schema_id, int):
            raise SchemaUnusable(f"registering under {subject!r}: the answer holds no id")
        self._ids[key] = schema_id
        while len(self._ids) > self.cache_size:
            self._ids.popitem(last=False)
        self._remember(schema_id, RegisteredSchema(schema_id, schema_type, text))
        return schema_id

    async def check_compatibility(self, subject: str, text: str,
                                  schema_type: SchemaType) -> Compatibility:
        """The registry's compatibility rules applied to ``text`` against the latest version."""
        path = (f"/compatibility/subjects/{quote(subject, safe='')}/versions/latest"
                "?verbose=true")
        try:
            body = await self._post(path, _candidate(text, schema_type),
                                    f"checking compatibility of {subject!r}")
        except SchemaNotFound:
            return Compatibility(subject, True, new_subject=True)
        messages = body.get("messages") or []
        return Compatibility(subject, bool(body.get("is_compatible")),
                             tuple(str(m) for m in messages if m))

    async def _post(self, path: str, payload: dict[str, Any], what: str) -> dict[str, Any]:
        try:
            reply = await self._http.post(path, content=json.dumps(payload),
                                          headers={"Content-Type": CONTENT_TYPE})
        except httpx.HTTPError as exc:
            raise RegistryUnavailable(
                f"schema registry at {mask_dsn(self.url)} unreachable while {what}: "
                f"{type(exc).__name__}: {exc}") from exc
        if reply.status_code == 404:
            raise SchemaNotFound(f"{what}: not found (404)")
        if reply.status_code in (409, 422):
            raise SchemaUnusable(f"{what}: the registry refused the schema "
                                 f"({reply.status_code}): {reply.text[:500]}")
        _raise_for_status(reply, self.url, what)
        return _json_object(reply.content[:self.max_schema_bytes], what)


def _schema_type(body: dict[str, Any], what: str) -> SchemaType:
    kind = body.get("schemaType") or "AVRO"  # Confluent leaves it out for Avro
    for known in _SCHEMA_TYPES:
        if kind == known:
            return known
    raise SchemaUnusable(f"{what} has an unknown schema type {str(kind)[:40]!r}")


def _self_contained(body: dict[str, Any], what: str) -> None:
    """Refuse a schema that names others by reference (Confluent's and Apicurio's
    ``references``: subject and version of each imported or named type): the hub resolves no
    references, so such a schema would fail later with a parser's "unknown type" instead of
    this reason."""
    refs = body.get("references")
    if not refs:
        return
    if not isinstance(refs, list):
        raise SchemaUnusable(f"{what}: the registry's 'references' is not a list")
    named = []
    for ref in refs[:5]:
        if isinstance(ref, dict):
            named.append(f"{str(ref.get('name'))[:100]!r} (subject "
                         f"{str(ref.get('subject'))[:100]!r} version "
                         f"{str(ref.get('version'))[:20]})")
        else:
            named.append(repr(str(ref)[:100]))
    more = f" and {len(refs) - 5} more" if len(refs) > 5 else ""
    raise SchemaUnusable(f"{what} references other schemas: {', '.join(named)}{more}; the hub "
                         "decodes self-contained schemas only (register it with its types "
                         "inlined)")


def _candidate(text: str, schema_type: SchemaType) -> dict[str, Any]:
    return {"schema": text, **({"schemaType": schema_type} if schema_type != "AVRO" else {})}


def _raise_for_status(reply: httpx.Response, url: str, what: str) -> None:
    if reply.status_code < 400:
        return
    # 401/403: fix the credentials and the records go through; never dead-letter them
    raise RegistryUnavailable(f"schema registry at {mask_dsn(url)} answered "
                              f"{reply.status_code} while {what}")


def _json_object(raw: bytes, what: str) -> dict[str, Any]:
    try:
        body = json.loads(raw)
    except ValueError:
        raise SchemaUnusable(f"{what}: the registry's answer is not JSON") from None
    if not isinstance(body, dict):
        raise SchemaUnusable(f"{what}: the registry's answer is not a JSON object")
    return body

"""API keys: created once with their plaintext shown once, stored only as a hash.

A token is ``hub_<prefix>_<secret>``: 6 random bytes of public prefix (hex) that find the
row and name the key in lists and logs, and 32 random bytes of secret. Only sha256 of the
whole token is stored: the token is high-entropy, so a slow password hash would add cost per
request and no safety. The hash is compared in constant time. Scopes are few and coarse:

| scope     | allows                                                         |
|-----------|----------------------------------------------------------------|
| `read`    | every GET: workflows, executions, metrics, the AsyncAPI file   |
| `run`     | starting runs, completing async steps                          |
| `operate` | retry, compensate, cancel                                      |

A key holds any set of them; none implies another.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hub.api.models import ApiKeyOut, CreatedApiKey
from hub.errors import HubError
from hub.store.store import Store

TOKEN_PREFIX = "hub_"
_TOKEN_RE = re.compile(r"^hub_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")


class Scope(StrEnum):
    READ = "read"
    RUN = "run"
    OPERATE = "operate"
    RAW = "raw"  # with read: payloads as stored, secret fields unredacted


ALL_SCOPES: tuple[Scope, ...] = tuple(Scope)


class InvalidApiKey(HubError):
    """The presented key is missing, malformed, unknown or revoked (HTTP 401).

    Messages never contain the presented token: only a known key's name and prefix, and
    only once its hash matched.
    """


@dataclass(frozen=True)
class ApiKey:
    """The authenticated caller of a request."""

    id: str
    name: str
    prefix: str
    scopes: frozenset[str]

    def has(self, scope: str) -> bool:
        return scope in self.scopes

    @property
    def label(self) -> str:
        """How messages and logs name the key: its name and public prefix."""
        return f"{self.name!r} ({TOKEN_PREFIX}{self.prefix})"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _new_token() -> tuple[str, str]:
    prefix = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).rstrip(b"=").decode()
    return prefix, f"{TOKEN_PREFIX}{prefix}_{secret}"


def _key_out(row: dict[str, Any]) -> ApiKeyOut:
    return ApiKeyOut(id=str(row["id"]), name=row["name"], prefix=TOKEN_PREFIX + row["prefix"],
                     scopes=list(row["scopes"]), created_at=row["created_at"],
                     revoked_at=row["revoked_at"], last_used_at=row["last_used_at"])


def check_scopes(scopes: Iterable[str]) -> list[str]:
    """The scopes, deduplicated in canonical order; refuses unknown ones by name."""
    given = list(scopes)
    unknown = [s for s in given if s not in {x.value for x in Scope}]
    if unknown or not given:
        problem = (f"unknown scope(s) {', '.join(map(repr, unknown))}" if unknown
                   else "a key needs at least one scope")
        raise HubError(f"{problem}; choose from {', '.join(s.value for s in Scope)}")
    return [s.value for s in Scope if s.value in given]


async def create_key(store: Store, name: str, scopes: Iterable[str]) -> CreatedApiKey:
    """Create a key; the returned ``token`` is the only copy of the secret anywhere."""
    name = name.strip()
    if not name or len(name) > 100 or "\x00" in name:
        raise HubError("a key name is 1 to 100 characters, e.g. the system that will use it")
    canonical = check_scopes(scopes)
    prefix, token = _new_token()
    row = await store.api_key_insert(uuid.uuid4(), name, prefix, hash_token(token), canonical)
    return CreatedApiKey(**_key_out(row).model_dump(), token=token)


async def revoke_key(store: Store, ref: str) -> ApiKeyOut | None:
    """Revoke by id or by prefix (``hub_1a2b3c4d5e6f``); None if no key matches."""
    ref = ref.strip()
    key_id: uuid.UUID | None = None
    with contextlib.suppress(ValueError):
        key_id = uuid.UUID(ref)
    prefix = ref.removeprefix(TOKEN_PREFIX) if key_id is None else None
    row = await store.api_key_revoke(key_id, prefix)
    return _key_out(row) if row is not None else None


async def list_keys(store: Store) -> list[ApiKeyOut]:
    return [_key_out(r) for r in await store.api_key_list()]


async def authenticate(store: Store, token: str, *, touch_every_s: float = 60.0) -> ApiKey:
    """The key a bearer token belongs to; ``InvalidApiKey`` says why not."""
    m = _TOKEN_RE.match(token)
    if m is None:
        raise InvalidApiKey(
            f"malformed API key: expected {TOKEN_PREFIX}<prefix>_<secret> as created by "
            "`hub keys create`")
    presented = hash_token(token)
    row = await store.api_key_authenticate(m.group(1), presented, touch_every_s)
    if row is None or not hmac.compare_digest(row["hash"].encode(), presented.encode()):
        raise InvalidApiKey("unknown API key")
    key = ApiKey(id=str(row["id"]), name=row["name"], prefix=row["prefix"],
                 scopes=frozenset(row["scopes"]))
    if row["revoked_at"] is not None:
        raise InvalidApiKey(f"API key {key.label} was revoked at "
                            f"{row['revoked_at'].isoformat()}")
    return key

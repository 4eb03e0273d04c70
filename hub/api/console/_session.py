"""Who is looking: a server-side session, opened with an API key, held by a random cookie.

The login page takes an API key once. If it authenticates and has ``read``, a session row is
opened (``console_session``) and the browser gets a random 32-byte token in an HttpOnly,
SameSite=Strict cookie scoped to the console's path, ``Secure`` when the browser came over
https (directly, or by the word of a proxy in ``HUB_TRUSTED_PROXIES``, see
``hub.api.proxies``). The key never leaves that login request: a stolen cookie is worth one
session, which ends at logout, after ``HUB_CONSOLE_IDLE_MINUTES`` unused, after
``HUB_CONSOLE_SESSION_HOURS`` in any case, or when its key is revoked.

Only the sha256 of the token is stored and the row is found by that hash: comparing hashes
leaks nothing about the token (a timing difference on the hash of a guess tells nothing
about the hash of the real one), so no constant-time compare is needed, and a copy of the
table opens no session. Each request looks the session up joined with its key, in one round
trip: the key's scopes are the session's and its revocation ends the session. last_seen_at
(which moves the idle deadline) is written at most every ``HUB_API_KEY_TOUCH_SECONDS``, and
at least four times per idle window, so reads do not become a write each.

CSRF: each session has its own random token, stored in its row and put in every form. We
chose a stored value over an HMAC of the session id: there is no secret to configure or
rotate across replicas, and the token says nothing about the cookie. A page from another
site can read neither; SameSite=Strict already keeps the cookie off cross-site requests,
the token is the second lock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import Request

from hub.api.keys import ApiKey, Scope
from hub.api.service import HubService
from hub.settings import ApiSettings

COOKIE = "hub_console"
LOGIN_COOKIE = "hub_console_login"
"""A random value the login form echoes (double submit): a login cannot be forged either."""

_USER_AGENT_MAX = 300


@dataclass(frozen=True)
class Session:
    """A live console session: the key it speaks for and its forms' CSRF token."""

    id: str
    key: ApiKey
    csrf: str

    def can(self, scope: str) -> bool:
        return self.key.has(scope)

    @property
    def can_operate(self) -> bool:
        return self.key.has(Scope.OPERATE)

    @property
    def can_run(self) -> bool:
        return self.key.has(Scope.RUN)


class LoginRequired(Exception):
    """No usable session: the browser is sent to the login page (HTTP 401 for htmx)."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "log in with an API key")
        self.reason = reason


class Forbidden(Exception):
    """A known key without the scope (HTTP 403), or a form without its CSRF token."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _idle_s(settings: ApiSettings) -> float:
    return settings.console_idle_minutes * 60.0


def _touch_every_s(settings: ApiSettings) -> float:
    return min(settings.key_touch_seconds, _idle_s(settings) / 4)


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


async def open_session(service: HubService, settings: ApiSettings, key: ApiKey,
                       user_agent: str | None, remote_addr: str | None) -> str:
    """Open a session for an authenticated key; returns the cookie's token (its only copy)."""
    token = secrets.token_urlsafe(32)
    await service.hub.store.console_session_open(
        uuid.uuid4(), _hash(token), uuid.UUID(key.id), secrets.token_urlsafe(32),
        settings.console_session_hours * 3600.0, _idle_s(settings),
        (user_agent or "")[:_USER_AGENT_MAX] or None, remote_addr)
    return token


async def close_session(service: HubService, token: str) -> None:
    """Revoke the session of ``token`` (logout): its cookie opens nothing from now on."""
    await service.hub.store.console_session_revoke(_hash(token))


async def current_session(request: Request, service: HubService,
                          settings: ApiSettings) -> Session:
    """The request's live session, whatever its scopes; raises LoginRequired saying why."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise LoginRequired()
    row = await service.hub.store.console_session_find(_hash(token), _idle_s(settings),
                                                       _touch_every_s(settings))
    if row is None:
        raise LoginRequired("unknown session")
    key = ApiKey(id=str(row["api_key_id"]), name=row["name"], prefix=row["prefix"],
                 scopes=frozenset(row["scopes"]))
    if row["revoked_at"] is not None:
        raise LoginRequired("logged out")
    if row["key_revoked_at"] is not None:
        raise LoginRequired(f"API key {key.label} was revoked")
    if row["expired"] or row["idle"]:
        raise LoginRequired("session expired")
    return Session(id=str(row["id"]), key=key, csrf=row["csrf"])


async def session_of(request: Request, service: HubService, settings: ApiSettings,
                     scope: Scope) -> Session:
    """The request's session, requiring ``scope``; raises LoginRequired or Forbidden."""
    session = await current_session(request, service, settings)
    key = session.key
    if not key.has(scope):
        has = ", ".join(sorted(key.scopes)) or "none"
        raise Forbidden(f"API key {key.label} lacks the {scope.value!r} scope this needs "
                        f"(it has: {has}); log in with a key created with "
                        f"--scope {scope.value}")
    return session


def safe_next(value: str | None, base: str) -> str:
    """Where to go after logging in: only a path of the console (no open redirect)."""
    if value and value.startswith(base + "/") and not value.startswith("//") \
            and "\\" not in value and "\n" not in value and "\r" not in value:
        return value
    return base + "/"


def login_url(request: Request, base: str) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{base}/login?next={quote(here, safe='')}"

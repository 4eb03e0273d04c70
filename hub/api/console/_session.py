"""Who is looking: the API key a browser presents, kept in a cookie.

Browsers do not send ``Authorization: Bearer`` by themselves, so the login page takes the key
once and keeps it in an HttpOnly, SameSite=Strict cookie (Secure over https) scoped to the
console's path. Every request authenticates that key with the same store and scopes as the
JSON API: revoking the key logs the browser out at its next request, and there is no second
kind of credential to manage.

Forms that act carry a CSRF token derived from the key (HMAC-SHA256 of a constant under the
key): a page from another site can read neither the cookie nor the token, every replica
computes the same token, and nothing is stored. SameSite=Strict already keeps the cookie off
cross-site requests; the token is the second lock.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import quote

from fastapi import Request

from hub.api.keys import ApiKey, InvalidApiKey, Scope, authenticate
from hub.api.service import HubService
from hub.settings import ApiSettings

COOKIE = "hub_console"
LOGIN_COOKIE = "hub_console_login"
"""A random value the login form echoes (double submit): a login cannot be forged either."""


@dataclass(frozen=True)
class Session:
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
    """No usable key: the browser is sent to the login page (HTTP 401 for the API)."""

    def __init__(self, reason: str | None = None) -> None:
        super().__init__(reason or "log in with an API key")
        self.reason = reason


class Forbidden(Exception):
    """A known key without the scope (HTTP 403), or a form without its CSRF token."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def csrf_token(token: str) -> str:
    return hmac.new(token.encode(), b"hub-console-csrf-v1", hashlib.sha256).hexdigest()


def new_login_nonce() -> str:
    return secrets.token_urlsafe(24)


def same(a: str | None, b: str | None) -> bool:
    return bool(a) and bool(b) and hmac.compare_digest(str(a).encode(), str(b).encode())


def secure(request: Request) -> bool:
    return request.url.scheme == "https"


async def session_of(request: Request, service: HubService, settings: ApiSettings,
                     scope: Scope) -> Session:
    """The request's session, requiring ``scope``; raises LoginRequired or Forbidden."""
    token = request.cookies.get(COOKIE)
    if not token:
        raise LoginRequired()
    try:
        key = await authenticate(service.hub.store, token,
                                 touch_every_s=settings.key_touch_seconds)
    except InvalidApiKey as exc:
        raise LoginRequired(str(exc)) from None
    if not key.has(scope):
        has = ", ".join(sorted(key.scopes)) or "none"
        raise Forbidden(f"API key {key.label} lacks the {scope.value!r} scope this needs "
                        f"(it has: {has}); log in with a key created with "
                        f"--scope {scope.value}")
    return Session(key=key, csrf=csrf_token(token))


def safe_next(value: str | None, base: str) -> str:
    """Where to go after logging in: only a path of the console (no open redirect)."""
    if value and value.startswith(base + "/") and not value.startswith("//") \
            and "\\" not in value and "\n" not in value and "\r" not in value:
        return value
    return base + "/"


def login_url(request: Request, base: str) -> str:
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{base}/login?next={quote(here, safe='')}"

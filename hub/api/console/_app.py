"""The console's pages and actions: a FastAPI app of its own, mounted under ``/ui``.

Every page reads through ``HubService`` (the JSON API's service layer): the console formats,
it never queries. Pages are rendered on the server with Jinja2; htmx (committed under
``static/``, nothing is fetched at run time) refreshes the live parts. Actions are POST forms
behind a confirmation dialog, carrying the session's CSRF token; each lands in the same
audited service method as its JSON API route.

Errors are pages: no session sends the browser to the login page (HTTP 401 for htmx, which
follows ``HX-Redirect``), a key without the scope gets a 403 page naming it, a refused
operation (say, retrying a run that ended) a 409 page naming why.
"""

from __future__ import annotations

import contextlib
import json
import secrets
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qs, urlencode

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.exceptions import HTTPException as StarletteHTTPException

from hub.api.console._chart import RUN_STATUSES, render_series
from hub.api.console._graph import STEP_STATES, render_graph
from hub.api.console._lag import by_topic
from hub.api.console._session import (
    COOKIE,
    LOGIN_COOKIE,
    Forbidden,
    LoginRequired,
    Session,
    close_session,
    current_session,
    login_url,
    new_login_nonce,
    open_session,
    safe_next,
    same,
    session_of,
)
from hub.api.console._trace import trace_url
from hub.api.keys import InvalidApiKey, Scope, authenticate
from hub.api.proxies import TrustedProxies
from hub.api.service import Actor, HubService, InvalidArgument
from hub.engine.run import RunStatus
from hub.errors import (
    HubError,
    StoreError,
)
from hub.settings import ApiSettings

WINDOWS: dict[str, tuple[timedelta, int]] = {
    "1h": (timedelta(hours=1), 12),
    "24h": (timedelta(hours=24), 24),
    "7d": (timedelta(days=7), 28),
}
"""The overview chart's windows: span and number of bars."""

TRIGGER_KINDS = ("event", "schedule", "api")

def _time(value: Any) -> Markup:
    """A time for people: ``<time>`` with the ISO value (UTC) as ``datetime`` and tooltip;
    the page's script rewrites the text in the viewer's timezone."""
    if value is None:
        return Markup('<span class="muted">—</span>')
    if isinstance(value, int | float):
        value = datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return Markup(escape(value))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    iso = value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return Markup(f'<time datetime="{iso}" title="{iso}">'
                  f'{value.astimezone(UTC):%Y-%m-%d %H:%M:%S} UTC</time>')


def _pretty(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, default=str)


def _duration(ms: float | None) -> str:
    if ms is None:
        return ""
    if ms < 1000:
        return f"{ms:.0f} ms" if ms >= 10 else f"{ms:.1f} ms"
    return f"{ms / 1000:.2f} s" if ms < 60_000 else f"{ms / 60_000:.1f} min"


REASON_CHARS = 160
"""How much of a dead letter's reason its row shows; the whole of it is a click away."""


def _first_line(text: str | None, width: int = REASON_CHARS) -> str:
    """The first line of ``text``, cut at a word, ``…`` when anything was left out: a
    pydantic message spans many lines and a stack of them would hide the list's rows."""
    lines = [line for line in (text or "").splitlines() if line.strip()]
    if not lines:
        return ""
    first = " ".join(lines[0].split())
    if len(first) > width:
        cut = first[:width - 1]
        first = cut.rsplit(" ", 1)[0] if " " in cut else cut
    elif len(lines) == 1:
        return first
    return first + "…"


def _status_badge(status: str) -> Markup:
    style = RUN_STATUSES.get(status)
    if style is None:
        return Markup(f'<span class="badge">{escape(status)}</span>')
    return Markup(f'<span class="badge status-{escape(status)}">'
                  f'<span aria-hidden="true">{style.icon}</span> {escape(style.label)}</span>')


def _state_badge(state: str) -> Markup:
    style = STEP_STATES.get(state)
    if style is None:
        return Markup(f'<span class="badge">{escape(state)}</span>')
    return Markup(f'<span class="badge state" style="--fill:{style.fill};'
                  f'--stroke:{style.stroke}"><span aria-hidden="true">{style.icon}</span> '
                  f'{escape(style.label)}</span>')


def _environment() -> Environment:
    env = Environment(loader=PackageLoader("hub.api.console", "templates"),
                      autoescape=select_autoescape(["html"]), trim_blocks=True,
                      lstrip_blocks=True)
    env.filters.update(time=_time, pretty=_pretty, duration=_duration,
                       status_badge=_status_badge, state_badge=_state_badge,
                       first_line=_first_line)
    env.globals.update(RUN_STATUSES=RUN_STATUSES, STEP_STATES=STEP_STATES,
                       TRIGGER_KINDS=TRIGGER_KINDS, WINDOWS=WINDOWS, render_graph=render_graph,
                       render_series=render_series)
    return env


def _form(body: bytes) -> dict[str, list[str]]:
    try:
        return parse_qs(body.decode("utf-8"), keep_blank_values=True, max_num_fields=2000)
    except (UnicodeDecodeError, ValueError):
        raise InvalidArgument(("body",), "not a form this console sent") from None


def _one(form: dict[str, list[str]], name: str) -> str:
    values = form.get(name) or [""]
    return values[0].strip()


def _local_time(text: str, tz_minutes: str, loc: str) -> datetime | None:
    """A ``datetime-local`` field (the viewer's wall clock) as an aware time; the page
    sends the viewer's UTC offset in minutes (none: UTC)."""
    if not text:
        return None
    try:
        naive = datetime.fromisoformat(text)
        offset = int(tz_minutes) if tz_minutes else 0
        if not -1440 < offset < 1440:
            raise ValueError(offset)
    except ValueError:
        raise InvalidArgument(("query", loc), "not a date and time (YYYY-MM-DDTHH:MM)") from None
    if naive.tzinfo is not None:
        return naive
    return naive.replace(tzinfo=timezone(timedelta(minutes=offset)))


def create_console(service: HubService, settings: ApiSettings) -> FastAPI:
    """The console app; ``create_app`` mounts it at ``/ui``."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
    app.mount("/static", StaticFiles(packages=[("hub.api.console", "static")]), name="static")
    env = _environment()
    proxies = TrustedProxies.of(settings.trusted_proxies)

    def secure(request: Request) -> bool:
        """Cookies are ``Secure`` when the browser came over https (see hub.api.proxies)."""
        return proxies.is_https(request)

    def base_of(request: Request) -> str:
        return str(request.scope.get("root_path", "")).rstrip("/")

    def render(request: Request, template: str, status: int = 200,
               session: Session | None = None, **ctx: Any) -> HTMLResponse:
        nonce = secrets.token_urlsafe(16)
        html = env.get_template(template).render(
            request=request, base=base_of(request), session=session, nonce=nonce, **ctx)
        response = HTMLResponse(html, status_code=status)
        response.headers.update({
            "Content-Security-Policy": (
                f"default-src 'self'; script-src 'self' 'nonce-{nonce}'; "
                "style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
                "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                "base-uri 'none'; object-src 'none'"),
            "Cache-Control": "no-store",
            "Referrer-Policy": "same-origin",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        })
        return response

    async def need(request: Request, scope: Scope) -> Session:
        return await session_of(request, service, settings, scope)

    async def acting(request: Request, scope: Scope) -> tuple[Session, dict[str, list[str]]]:
        """An action's session (with ``scope``) and form, whose CSRF token must match."""
        session = await need(request, scope)
        form = _form(await request.body())
        if not same(_one(form, "csrf"), session.csrf):
            raise Forbidden("this form expired or did not come from the console; reload the "
                            "page and try again")
        return session, form

    def actor(session: Session) -> Actor:
        return Actor.of_key(session.key, "console")

    def back(request: Request, path: str, **flash: str) -> RedirectResponse:
        query = f"?{urlencode(flash)}" if flash else ""
        return RedirectResponse(f"{base_of(request)}{path}{query}", status_code=303)

    # -- errors --------------------------------------------------------------------------
    async def on_login_required(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, LoginRequired)
        target = login_url(request, base_of(request))
        if request.headers.get("hx-request"):
            return Response(status_code=401, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)

    async def on_forbidden(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, Forbidden)
        session = None
        with contextlib.suppress(LoginRequired, Forbidden):
            session = await need(request, Scope.READ)
        return render(request, "error.html", 403, session, title="Forbidden (403)",
                      detail=exc.detail)

    async def on_hub_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HubError)
        status = exc.api_status  # the API's mapping too
        titles = {401: "Refused", 404: "Not found", 409: "Not possible now", 413: "Too large",
                  422: "Not accepted", 500: "Failed", 503: "Unavailable", 400: "Not accepted"}
        session = None
        if status != 503:
            with contextlib.suppress(LoginRequired, Forbidden):
                session = await need(request, Scope.READ)
        return render(request, "error.html", status, session,
                      title=f"{titles.get(status, 'Error')} ({status})", detail=str(exc))

    async def on_http(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        return render(request, "error.html", exc.status_code, None,
                      title=f"Error ({exc.status_code})", detail=str(exc.detail))

    app.add_exception_handler(LoginRequired, on_login_required)
    app.add_exception_handler(Forbidden, on_forbidden)
    app.add_exception_handler(HubError, on_hub_error)
    app.add_exception_handler(StarletteHTTPException, on_http)

    # -- login -----------------------------------------------------------------------------
    @app.get("/login", response_class=HTMLResponse)
    async def login_page(request: Request, next: str | None = None) -> Response:
        nonce = new_login_nonce()
        response = render(request, "login.html", 200, None, login_nonce=nonce,
                          next=safe_next(next, base_of(request)), error=None)
        response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict",
                            secure=secure(request), path=base_of(request) + "/login")
        return response

    @app.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        form = _form(await request.body())
        base = base_of(request)
        target = safe_next(_one(form, "next"), base)
        token = _one(form, "api_key")
        error = None
        if not same(_one(form, "login_nonce"), request.cookies.get(LOGIN_COOKIE)):
            error = "The login form expired; please paste the key again."
        else:
            try:
                key = await authenticate(service.hub.store, token,
                                         touch_every_s=settings.key_touch_seconds)
            except InvalidApiKey as exc:
                error = f"That key does not work: {exc}."
            else:
                if not key.has(Scope.READ):
                    error = (f"API key {key.label} lacks the 'read' scope the console needs "
                             f"to show anything; use a key created with --scope read.")
        if error is not None:
            nonce = new_login_nonce()
            page = render(request, "login.html", 401, None, login_nonce=nonce, next=target,
                          error=error)
            page.set_cookie(LOGIN_COOKIE, nonce, httponly=True, samesite="strict",
                            secure=secure(request), path=base + "/login")
            return page
        old = request.cookies.get(COOKIE)
        if old:  # the browser's previous session ends here, not at its expiry
            await close_session(service, old)
        session_token = await open_session(service, settings, key,
                                           request.headers.get("user-agent"),
                                           proxies.client_address(request))
        redirect = RedirectResponse(target, status_code=303)
        redirect.set_cookie(COOKIE, session_token, httponly=True, samesite="strict",
                            secure=secure(request), path=base or "/")
        redirect.delete_cookie(LOGIN_COOKIE, path=base + "/login")
        return redirect

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        """Revokes the session row, so a copy of the cookie opens nothing afterwards. A
        session that has ended already just loses its cookie."""
        form = _form(await request.body())
        token = request.cookies.get(COOKIE) or ""
        session = None
        with contextlib.suppress(LoginRequired):
            session = await current_session(request, service, settings)
        if session is not None:
            if not same(_one(form, "csrf"), session.csrf):
                raise Forbidden("this form expired or did not come from the console")
            await close_session(service, token)
        response = RedirectResponse(f"{base_of(request)}/login", status_code=303)
        response.delete_cookie(COOKIE, path=base_of(request) or "/", httponly=True,
                               samesite="strict", secure=secure(request))
        return response

    # -- overview --------------------------------------------------------------------------
    async def overview_ctx(window: str) -> dict[str, Any]:
        span, bars = WINDOWS.get(window, WINDOWS["1h"])
        chart = await service.status_chart(span, bars)
        snapshot = await service.metrics_snapshot()
        return {"window": window if window in WINDOWS else "1h", "chart": chart,
                "outbox_unsent": snapshot.outbox_unsent,
                "outbox_failed": snapshot.outbox_failed,
                "outbox_age": snapshot.outbox_oldest_age_s, "jobs": await service.jobs(),
                "breakers": service.breakers(), "now": datetime.now(UTC)}

    @app.get("/", response_class=HTMLResponse)
    async def overview(request: Request, window: str = "1h") -> Response:
        session = await need(request, Scope.READ)
        return render(request, "overview.html", session=session, **await overview_ctx(window))

    @app.get("/fragments/overview", response_class=HTMLResponse)
    async def overview_live(request: Request, window: str = "1h") -> Response:
        session = await need(request, Scope.READ)
        return render(request, "_overview_live.html", session=session,
                      **await overview_ctx(window))

    @app.get("/fragments/kafka", response_class=HTMLResponse)
    async def kafka_live(request: Request) -> Response:
        session = await need(request, Scope.READ)
        lag = await service.consumer_lag()
        return render(request, "_kafka.html", session=session, lag=lag,
                      lag_topics=by_topic(lag.value or []),
                      dead=await service.dead_letter_count())

    # -- executions ------------------------------------------------------------------------
    @app.get("/executions", response_class=HTMLResponse)
    async def executions(request: Request) -> Response:
        session = await need(request, Scope.READ)
        q = request.query_params
        filters = {name: (q.get(name) or "").strip()
                   for name in ("workflow", "status", "after", "before", "tz", "trigger",
                                "tx", "key")}
        status = filters["status"]
        if status and status not in {s.value for s in RunStatus}:
            raise InvalidArgument(("query", "status"), f"unknown status {status!r}")
        trigger = filters["trigger"]
        page = await service.executions(
            workflow=filters["workflow"] or None, status=status or None,
            created_after=_local_time(filters["after"], filters["tz"], "after"),
            created_before=_local_time(filters["before"], filters["tz"], "before"),
            trigger_kind=trigger or None, transaction_id=filters["tx"] or None,
            key=filters["key"] or None, cursor=q.get("cursor") or None, limit=50)
        kept = {k: v for k, v in filters.items() if v}
        next_url = (f"{base_of(request)}/executions?"
                    f"{urlencode({**kept, 'cursor': page.next})}" if page.next else None)
        first_url = (f"{base_of(request)}/executions?{urlencode(kept)}"
                     if q.get("cursor") else None)
        return render(request, "executions.html", session=session, page=page,
                      filters=filters, workflows=[w.name for w in service.workflows()],
                      statuses=[s.value for s in RunStatus], next_url=next_url,
                      first_url=first_url, filtered=bool(kept))

    async def execution_ctx(ref: str, workflow: str | None) -> dict[str, Any]:
        view = await service.execution_view(ref, workflow=workflow)
        states = {s.out.id: s.out.state for s in view.steps}
        fanouts = {f.step: f for f in view.detail.fanouts}
        return {"view": view, "d": view.detail, "states": states, "fanouts": fanouts}

    @app.get("/executions/{ref}/steps/{step}/items", response_class=HTMLResponse)
    async def fanout_items(request: Request, ref: str, step: str,
                           start: int = 0) -> Response:
        """A map step's items, a page at a time, each with its key, state and outcome."""
        session = await need(request, Scope.READ)
        page = await service.fanout_items(ref, step, start=max(0, start), limit=100)
        detail = await service.execution(ref)
        return render(request, "fanout_items.html", session=session, d=detail, page=page)

    @app.get("/executions/{ref}", response_class=HTMLResponse)
    async def execution(request: Request, ref: str, workflow: str | None = None,
                        done: str | None = None) -> Response:
        session = await need(request, Scope.READ)
        ctx = await execution_ctx(ref, workflow)
        return render(request, "execution.html", session=session, done=done,
                      trace_url=trace_url(settings.trace_ui_url, ctx["d"].trigger), **ctx)

    @app.get("/fragments/executions/{ref}", response_class=HTMLResponse)
    async def execution_live(request: Request, ref: str, workflow: str | None = None,
                             done: str | None = None) -> Response:
        """The live part of an execution's page; ``done``: it follows an action taken from
        the page, so it polls every second until the execution settles."""
        session = await need(request, Scope.READ)
        return render(request, "_execution_live.html", session=session, done=done,
                      **await execution_ctx(ref, workflow))

    @app.get("/fragments/executions/{ref}/event", response_class=HTMLResponse)
    async def execution_event(request: Request, ref: str) -> Response:
        session = await need(request, Scope.READ)
        return render(request, "_event.html", session=session,
                      record=await service.event_record(ref))

    @app.post("/executions/{ref}/retry")
    async def retry(request: Request, ref: str) -> Response:
        session, _ = await acting(request, Scope.OPERATE)
        accepted = await service.retry(ref, actor=actor(session))
        return back(request, f"/executions/{accepted.execution_id}", done="retry")

    async def stop(request: Request, ref: str, kind: Any) -> Response:
        session, form = await acting(request, Scope.OPERATE)
        reason = _one(form, "reason")[:1000] or None
        outcome = await service.stop(ref, kind, reason=reason, wait=False,
                                     actor=actor(session))
        return back(request, f"/executions/{outcome.run.id}", done=kind)

    @app.post("/executions/{ref}/compensate")
    async def compensate(request: Request, ref: str) -> Response:
        return await stop(request, ref, "compensate")

    @app.post("/executions/{ref}/cancel")
    async def cancel(request: Request, ref: str) -> Response:
        return await stop(request, ref, "cancel")

    @app.post("/executions/{ref}/steps/{step}/success")
    async def step_success(request: Request, ref: str, step: str) -> Response:
        session, form = await acting(request, Scope.RUN)
        text = _one(form, "output")
        try:
            output = json.loads(text) if text else None
        except ValueError as exc:
            raise InvalidArgument(("body", "output"), f"not JSON: {exc}") from None
        accepted = await service.complete_step(ref, step, success=True, output=output,
                                               actor=actor(session))
        return back(request, f"/executions/{accepted.execution_id}", done="complete_step")

    @app.post("/executions/{ref}/steps/{step}/failure")
    async def step_failure(request: Request, ref: str, step: str) -> Response:
        session, form = await acting(request, Scope.RUN)
        error = _one(form, "error")[:4000] or "failed by an operator"
        accepted = await service.complete_step(ref, step, success=False, error=error,
                                               actor=actor(session))
        return back(request, f"/executions/{accepted.execution_id}", done="fail_step")

    @app.post("/executions/{ref}/steps/{step}/wake")
    async def step_wake(request: Request, ref: str, step: str) -> Response:
        session, _ = await acting(request, Scope.OPERATE)
        accepted = await service.wake(ref, step, actor=actor(session))
        return back(request, f"/executions/{accepted.execution_id}", done="wake")

    # -- workflows ---------------------------------------------------------------------------
    @app.get("/workflows", response_class=HTMLResponse)
    async def workflows(request: Request) -> Response:
        session = await need(request, Scope.READ)
        return render(request, "workflows.html", session=session,
                      workflows=[service.workflow(w.name) for w in service.workflows()])

    @app.get("/workflows/{name}", response_class=HTMLResponse)
    async def workflow(request: Request, name: str) -> Response:
        session = await need(request, Scope.READ)
        definition = service.workflow(name)
        recent = await service.executions(workflow=name, limit=20)
        versions: dict[str, int] = {}
        for item in recent.items:
            versions[item.version] = versions.get(item.version, 0) + 1
        return render(request, "workflow.html", session=session, w=definition,
                      recent=recent, versions=versions)

    # -- dead letters ------------------------------------------------------------------------
    @app.get("/dead-letters", response_class=HTMLResponse)
    async def dead_letters(request: Request, topic: str | None = None,
                           cursor: str | None = None, done: str | None = None) -> Response:
        """A page of one dead-letter topic (50 letters, bounded in bytes too), with a link to
        the next: a topic of any size costs one page."""
        session = await need(request, Scope.READ)
        page, error = None, None
        try:
            page = await service.dead_letters(topic or None, cursor=cursor or None, limit=50)
        except HubError as exc:
            if isinstance(exc, StoreError):
                raise
            error = str(exc)
        return render(request, "dead_letters.html", session=session, page=page,
                      letters=page.items if page else [], error=error, done=done)

    @app.post("/dead-letters/redrive")
    async def redrive(request: Request) -> Response:
        session, form = await acting(request, Scope.OPERATE)
        refs = [r.strip() for r in form.get("ref", []) if r.strip()]
        done = await service.redrive(refs, to_subscriber=_one(form, "to") == "subscriber",
                                     actor=actor(session))
        return back(request, "/dead-letters", done=str(len(done)))

    # -- outbox ------------------------------------------------------------------------------
    @app.get("/outbox", response_class=HTMLResponse)
    async def outbox(request: Request, state: str | None = None, cursor: str | None = None,
                     done: str | None = None) -> Response:
        session = await need(request, Scope.READ)
        if state not in (None, "", "pending", "retrying", "failed"):
            raise InvalidArgument(("query", "state"), f"unknown state {state!r}")
        chosen: Any = state or None
        page = await service.outbox(state=chosen, cursor=cursor or None, limit=50)
        query = {"state": state} if state else {}
        next_url = (f"{base_of(request)}/outbox?{urlencode({**query, 'cursor': page.next})}"
                    if page.next else None)
        return render(request, "outbox.html", session=session, page=page, state=state,
                      next_url=next_url, done=done)

    @app.post("/outbox/{event_id}/retry")
    async def outbox_retry(request: Request, event_id: str) -> Response:
        session, _ = await acting(request, Scope.OPERATE)
        done = await service.retry_outbox([event_id], actor=actor(session))
        return back(request, "/outbox", done=str(len(done.ids)))

    return app


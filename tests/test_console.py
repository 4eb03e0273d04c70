"""The web console end to end: a real Chromium (Debian's package, driven by Playwright)
against a live hub, its embedded Postgres and broker, over HTTP on loopback.

The workflows are this module's own, so the console is tested apart from the project's.
Each browser test takes screenshots of the pages it visits; with HUB_UPDATE_SCREENSHOTS=1
they replace the pictures of docs/console.md in docs/console/.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import re
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from playwright.async_api import Browser, Page, async_playwright, expect
from pydantic import BaseModel

from hub import (
    Hub,
    StepContext,
    StepResponse,
    SubscriberContext,
    WorkflowResponse,
    create_step,
    create_workflow,
    subscriber,
)
from hub.api import ApiSettings, create_app, create_key, revoke_key
from hub.runtime.service import KafkaRuntime
from hub.runtime.subscriber import SubscriberRegistry
from hub.runtime.topics import load_topics
from hub.settings import KafkaSettings
from tests.support.console import CHROMIUM_ARGS, Shots, ensure_chromium, serve
from tests.support.polling import until

SECRET = "sk_live_do-not-show-me"


# -- the workflows of these tests ------------------------------------------------------
class Order(BaseModel):
    id: str
    amount: int
    fail: bool = False
    api_token: str = SECRET


async def _reserve(inp: Order, ctx: StepContext) -> StepResponse[Any]:
    await asyncio.sleep(0.3)  # long enough for the page to see the run before it ends
    return StepResponse({"reservation": f"r-{inp.id}", "password": "hunter2"},
                        {"reservation": f"r-{inp.id}"})


def _release(comp: Any, ctx: StepContext) -> None:
    return None


async def _charge(inp: Order, ctx: StepContext) -> StepResponse[Any]:
    await asyncio.sleep(0.3)
    return StepResponse({"charge": f"ch-{inp.id}", "amount": inp.amount})


def _refund(comp: Any, ctx: StepContext) -> None:
    return None


def _confirm(inp: Order, ctx: StepContext) -> dict[str, Any]:
    if inp.fail:
        raise RuntimeError(f"carrier refused order {inp.id}")
    return {"confirmed": inp.id}


reserve = create_step("reserve-stock", _reserve, compensate=_release)
charge = create_step("charge-payment", _charge, compensate=_refund)
confirm = create_step("confirm-order", _confirm)


@create_workflow("console-order")
def console_order(inp: Order) -> WorkflowResponse:
    reserve(inp)
    charge(inp)
    return WorkflowResponse(confirm(inp))


class Approval(BaseModel):
    id: str


async def _ask(inp: Approval, ctx: StepContext) -> StepResponse[Any]:
    return StepResponse({"asked": inp.id})


approve = create_step("await-approval", _ask, is_async=True)
ship = create_step("ship", lambda a, c: {"shipped_by": (a or {}).get("by", "nobody")})


@create_workflow("console-approval")
def console_approval(inp: Approval) -> WorkflowResponse:
    return WorkflowResponse(ship(approve(inp)))


class OrderEvent(BaseModel):
    id: str
    amount: int


BROKEN: set[str] = set()
"""Event ids the subscriber refuses (until a test repairs it)."""
REASONS: dict[str, str] = {}
"""The message the subscriber refuses an event of ``BROKEN`` with, by event id."""


# -- fixtures --------------------------------------------------------------------------
@pytest.fixture(scope="session")
def chromium() -> str:
    return ensure_chromium()


@pytest.fixture(scope="session")
async def browser(chromium: str) -> AsyncIterator[Browser]:
    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            await b.close()


@pytest.fixture(scope="session")
def shots() -> Shots:
    return Shots()


@dataclass
class Console:
    hub: Hub
    url: str
    keys: dict[str, str]
    browser: Browser

    async def page(self, who: str = "ops", *, width: int = 1280, height: int = 900,
                   bypass_csp: bool = False) -> Page:
        """A fresh browser context logged in with the key of ``who``."""
        context = await self.browser.new_context(
            viewport={"width": width, "height": height}, timezone_id="Europe/Berlin",
            locale="en-GB", bypass_csp=bypass_csp)
        page = await context.new_page()
        await page.goto(f"{self.url}/ui/login")
        await page.get_by_label("API key").fill(self.keys[who])
        await page.get_by_role("button", name="Log in").click()
        await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
        return page


async def _keys(hub: Hub) -> dict[str, str]:
    return {
        "ops": (await create_key(hub.store, "ops-alice", ["read", "run", "operate"])).token,
        "viewer": (await create_key(hub.store, "viewer-bob", ["read"])).token,
    }


@pytest.fixture
async def console(hub: Hub, browser: Browser) -> AsyncIterator[Console]:
    """The console of a hub with no broker configured."""
    app = create_app(hub, settings=ApiSettings(), kafka=KafkaSettings(
        bootstrap=None, topics_file=Path("/nonexistent/topics.yaml")),
        subscribers=SubscriberRegistry())
    async with serve(app) as url:
        yield Console(hub, url, await _keys(hub), browser)


def _topics_file(tmp_path: Path, prefix: str) -> Path:
    path = tmp_path / "topics.yaml"
    path.write_text(f"""
topics:
  {prefix}.orders:
    partitions: 1
    event: tests.test_console:OrderEvent
    dead_letter: {prefix}.orders.dlq
  {prefix}.orders.dlq:
    partitions: 1
""")
    return path


@pytest.fixture
async def kafka_console(hub: Hub, browser: Browser, kafka_bootstrap: str, prefix: str,
                        tmp_path: Path) -> AsyncIterator[Console]:
    """The console of a hub whose subscriber consumes ``<prefix>.orders`` in-process."""
    registry = SubscriberRegistry()

    @subscriber(f"{prefix}.orders", registry=registry, max_retries=0, retry_backoff=0.01)
    async def on_order(event: OrderEvent, ctx: SubscriberContext) -> None:
        if event.id in BROKEN:
            raise RuntimeError(REASONS.get(event.id)
                               or f"inventory service rejected order {event.id}")
        await console_order(ctx.hub).run(input={"id": event.id, "amount": event.amount},
                                         transaction_id=f"order:{event.id}", wait=False)

    topics_file = _topics_file(tmp_path, prefix)
    settings = KafkaSettings(bootstrap=kafka_bootstrap, group=f"{prefix}-hub",
                             topics_file=topics_file, fetch_max_wait_ms=20,
                             session_timeout_ms=6000)
    runtime = KafkaRuntime(hub, settings, subscribers=registry, topics=load_topics(topics_file))
    await runtime.start()
    try:
        assert runtime.consumer is not None
        await asyncio.wait_for(runtime.consumer.ready.wait(), 30)
        app = create_app(hub, settings=ApiSettings(), kafka=settings, subscribers=registry)
        async with serve(app) as url:
            yield Console(hub, url, await _keys(hub), browser)
    finally:
        await runtime.stop()




async def _status(page: Page, status: str, timeout: float = 20_000) -> None:
    await expect(page.locator("#run-status")).to_have_attribute("data-status", status,
                                                                timeout=timeout)


def nav(page: Page, name: str) -> Any:
    return page.get_by_role("navigation", name="Console").get_by_role("link", name=name)


# -- tests -----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.browser
async def test_an_order_flows_and_the_page_shows_it_succeed(console: Console,
                                                            shots: Shots) -> None:
    run = await console.hub.start("console-order", {"id": "A-1", "amount": 4200},
                                  transaction_id="order:A-1", wait=False)
    page = await console.page()
    await page.goto(f"{console.url}/ui/executions/{run.id}")
    await expect(page.get_by_role("heading", level=1)).to_contain_text("console-order")
    await _status(page, "succeeded")
    graph = page.locator("svg.graph")
    await expect(graph.locator("a.state-done")).to_have_count(3)
    await expect(graph).to_contain_text("✓ charge-payment")
    steps = page.locator("table.steps")
    await expect(steps).to_contain_text(f"{run.id}:reserve-stock")  # the idempotency key
    html = await page.content()
    assert SECRET not in html and "hunter2" not in html, "secrets are redacted"
    assert '"api_token": "***"' in html and '"password": "***"' in html
    when = page.locator("header.exec-head time").first
    iso = await when.get_attribute("datetime")
    assert iso is not None and iso.endswith("Z")
    assert await when.get_attribute("title") == iso
    assert "UTC" not in await when.inner_text(), "shown in the viewer's timezone"
    await shots.take(page, "execution-succeeded")

    for i, fail in enumerate([False, True, False]):
        await console.hub.start("console-order", {"id": f"A-{i + 2}", "amount": 100 * i,
                                                  "fail": fail},
                                transaction_id=f"order:A-{i + 2}", wait=False)
    await console.hub.start("console-approval", {"id": "A-9"}, transaction_id="approval:A-9",
                            wait=True)
    await console.hub.run_until_idle()
    await nav(page, "Executions").click()
    rows = page.locator("table.list > tbody > tr")
    await expect(rows).to_have_count(5)
    await shots.take(page, "executions")
    await page.get_by_label("Workflow").select_option("console-order")
    await page.get_by_label("Status").select_option("compensated")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("order:A-3")
    await page.get_by_role("link", name="Clear").click()
    await page.get_by_label("Transaction id").fill("order:A-1")
    await page.keyboard.press("Enter")
    await expect(rows).to_have_count(1)
    await expect(rows.first).to_contain_text("order:A-1")

    await nav(page, "Workflows").click()
    await expect(page.get_by_role("heading", name="console-order")).to_be_visible()
    await page.get_by_role("link", name="console-order").first.click()
    await expect(page.get_by_role("heading", name="Recent executions")).to_be_visible()
    await expect(page.locator("main")).to_contain_text("order:A-1")
    await shots.take(page, "workflow")

    await nav(page, "Overview").click()
    chart = page.get_by_role("figure", name=re.compile("console-order"))
    await expect(chart).to_contain_text("4 started", timeout=15_000)  # cached 2.5 s
    await expect(chart.get_by_role("table")).to_contain_text("compensated")
    await expect(page.locator("#overview-live")).to_contain_text("event(s) not yet published")


@pytest.mark.slow
@pytest.mark.browser
async def test_a_failing_order_shows_its_compensations_in_the_timeline(console: Console,
                                                                       shots: Shots) -> None:
    run = await console.hub.start("console-order", {"id": "B-2", "amount": 10, "fail": True},
                                  transaction_id="order:B-2", wait=False)
    page = await console.page()
    await page.goto(f"{console.url}/ui/executions/{run.id}")
    await _status(page, "compensated")
    timeline = page.locator("ol.timeline")
    await expect(timeline).to_contain_text("carrier refused order B-2")
    items = [t.strip() for t in await timeline.locator("li").all_inner_texts()]
    compensations = [t for t in items if "compensated (attempt 1)" in t]
    assert len(compensations) == 2, items
    assert "charge-payment" in compensations[0] and "reserve-stock" in compensations[1], \
        "compensated in reverse order of completion"
    failed = next(i for i, t in enumerate(items) if "confirm-order" in t and "failed" in t)
    assert failed < items.index(compensations[0])
    graph = page.locator("svg.graph")
    await expect(graph.locator("a.state-reverted")).to_have_count(2)
    await expect(graph.locator("a.state-permanent_failure")).to_have_count(1)
    await expect(graph).to_contain_text("compensated")
    await expect(page.locator("#steps-h + div")).to_contain_text(
        f"{run.id}:charge-payment:compensate")
    await shots.take(page, "execution-compensated")


@pytest.mark.slow
@pytest.mark.browser
async def test_an_async_step_is_completed_from_the_page(console: Console, shots: Shots) -> None:
    run = await console.hub.start("console-approval", {"id": "C-3"},
                                  transaction_id="approval:C-3", wait=True)
    assert run.status == "waiting"
    page = await console.page()
    await page.goto(f"{console.url}/ui/executions/{run.id}")
    await _status(page, "waiting")
    await shots.take(page, "execution-waiting")
    await page.get_by_role("button", name="Complete await-approval…").click()
    dialog = page.get_by_role("dialog", name="Complete step await-approval?")
    await expect(dialog).to_be_visible()
    await dialog.get_by_label("Output (JSON, optional)").fill('{"by": "alice"}')
    await dialog.get_by_role("button", name="Complete").click()
    await expect(page.get_by_role("status")).to_contain_text("Step completion recorded")
    await _status(page, "succeeded")
    await expect(page.locator("#result-h + pre")).to_contain_text('"shipped_by": "alice"')
    audit = page.locator("#audit-h ~ table")
    await expect(audit).to_contain_text("ops-alice")
    await expect(audit).to_contain_text("complete step await-approval")
    await expect(audit).to_contain_text("console")
    await expect(page.locator("ol.timeline")).to_contain_text("by ops-alice (console)")


@pytest.mark.slow
@pytest.mark.browser
async def test_after_an_action_the_page_follows_the_execution_until_it_settles_without_a_reload(
        dsn: str, schema: str, browser: Browser) -> None:
    def worker() -> Hub:
        return Hub(dsn, schema=schema, lease_seconds=2.0, poll_interval=0.5)

    async with worker() as h:
        run = await h.start("console-approval", {"id": "R-1"}, transaction_id="approval:R-1",
                            wait=True)
    assert run.status == "waiting"
    # the console's process runs no executions: the cancel waits until a worker comes
    async with Hub(dsn, schema=schema, execute=False) as api, serve(create_app(
            api, settings=ApiSettings(), kafka=KafkaSettings(bootstrap=None),
            subscribers=SubscriberRegistry())) as url:
        console = Console(api, url, await _keys(api), browser)
        page = await console.page()
        await page.goto(f"{url}/ui/executions/{run.id}")
        await _status(page, "waiting")
        live = page.locator("#execution-live")
        await expect(live).to_have_attribute("data-settled", "yes")
        assert await live.get_attribute("hx-trigger") is None, "a settled page is not polled"

        await page.get_by_role("button", name="Cancel…").click()
        dialog = page.get_by_role("dialog", name="Cancel this execution?")
        await dialog.get_by_label("Reason (recorded)").fill("customer asked")
        await dialog.get_by_role("button", name="Cancel", exact=True).click()
        await expect(page.get_by_role("status")).to_contain_text("Cancellation requested")
        await _status(page, "waiting")
        await expect(page.locator("#follow-note")).to_contain_text("waiting for a worker")
        await expect(live).to_have_attribute("hx-trigger", "every 1s")
        polls: list[str] = []
        page.on("request", lambda r: polls.append(r.url) if "/fragments/" in r.url else None)
        await page.evaluate("window.sameDocument = true")

        async def polled_twice() -> bool:
            return len(polls) >= 2

        await until(polled_twice)  # it keeps asking while the cancel waits for a worker

        async with worker():  # a worker applies the cancel; the test does not reload
            await _status(page, "cancelled")
        assert await page.evaluate("window.sameDocument") is True, "updated in place"
        await expect(live).to_have_attribute("data-settled", "yes")
        assert await live.get_attribute("hx-trigger") is None, "polling stopped"
        await expect(page.get_by_role("button", name="Cancel…")).to_have_count(0)
        await expect(page.locator("#follow-note")).to_have_count(0)
        await expect(page.locator("ol.timeline")).to_contain_text("by ops-alice (console)")
        await expect(page.locator("#audit-h ~ table")).to_contain_text("customer asked")


@pytest.mark.slow
@pytest.mark.browser
async def test_a_read_key_sees_no_action_buttons_and_gets_403_if_it_tries(
        console: Console, shots: Shots) -> None:
    run = await console.hub.start("console-approval", {"id": "D-4"},
                                  transaction_id="approval:D-4", wait=True)
    page = await console.page("viewer", bypass_csp=True)
    await page.goto(f"{console.url}/ui/executions/{run.id}")
    await _status(page, "waiting")
    await expect(page.get_by_role("heading", name="Timeline")).to_be_visible()
    assert await page.get_by_role("heading", name="Actions", exact=True).count() == 0
    assert await page.locator("button[data-opens], dialog").count() == 0
    csrf = await page.locator("form.who input[name=csrf]").get_attribute("value")
    assert csrf
    for path, scope in [(f"/ui/executions/{run.id}/cancel", "operate"),
                        (f"/ui/executions/{run.id}/retry", "operate"),
                        (f"/ui/executions/{run.id}/steps/await-approval/success", "run")]:
        r = await page.request.post(f"{console.url}{path}", form={"csrf": csrf})
        assert r.status == 403, (path, r.status)
        assert f"lacks the &#39;{scope}&#39; scope" in await r.text()
    # as a browser would send it: the 403 page
    await page.evaluate("""([action, csrf]) => {
        const f = document.createElement('form'); f.method = 'post'; f.action = action;
        const i = document.createElement('input'); i.type = 'hidden'; i.name = 'csrf';
        i.value = csrf; f.appendChild(i); document.body.appendChild(f); f.submit(); }""",
                        [f"{console.url}/ui/executions/{run.id}/cancel", csrf])
    await expect(page.get_by_role("heading", name="Forbidden (403)")).to_be_visible()
    await expect(page.get_by_role("alert")).to_contain_text("viewer-bob")
    await shots.take(page, "forbidden")
    assert (await console.hub.get_run(run.id)).status == "waiting", "nothing happened"


@pytest.mark.slow
@pytest.mark.browser
async def test_a_dead_letter_is_redriven_from_the_page_and_its_workflow_completes(
        kafka_console: Console, shots: Shots, kafka_bootstrap: str, prefix: str) -> None:
    console = kafka_console
    event_id = f"E-{uuid.uuid4().hex[:6]}"
    BROKEN.add(event_id)
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(f"{prefix}.orders",
                                     json.dumps({"id": event_id, "amount": 990}).encode(),
                                     key=event_id.encode(),
                                     headers=[("x-api-key", b"k-123"), ("source", b"shop")])
    finally:
        await producer.stop()
    page = await console.page()

    async def dead_lettered() -> bool:
        await page.goto(f"{console.url}/ui/dead-letters")
        return await page.locator("table.list > tbody > tr").count() == 1

    await until(dead_lettered, timeout=30)
    row = page.locator("table.list > tbody > tr").first
    await expect(row).to_contain_text(f"inventory service rejected order {event_id}")
    await expect(row).to_contain_text(f"{prefix}.orders")
    await row.get_by_text("payload and headers").click()
    await expect(row).to_contain_text('"amount": 990')
    await expect(row).to_contain_text("***")  # the x-api-key header
    await shots.take(page, "dead-letters")

    BROKEN.discard(event_id)  # the cause is repaired: send the event back
    await row.get_by_role("button", name="Redrive…").click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    await dialog.get_by_role("button", name="Redrive").click()
    await expect(page.get_by_role("status")).to_contain_text("Redriven: 1")
    await expect(page.locator("table.list > tbody > tr").first).to_contain_text("by ops-alice")

    async def succeeded() -> Any:
        try:
            run = await console.hub.get_run(f"order:{event_id}")
        except Exception:
            return None
        return run if run.status == "succeeded" else None

    run = await until(succeeded, timeout=30)
    await page.goto(f"{console.url}/ui/executions/{run.id}")
    await _status(page, "succeeded")
    lineage = page.locator("#lineage-h ~ dl.facts").first
    await expect(lineage).to_contain_text(f"{prefix}.orders")
    await page.get_by_role("button", name=re.compile("Read the record")).click()
    await expect(page.locator("#event-record")).to_contain_text("hub.redriven.from")
    await expect(page.locator("#event-record")).to_contain_text("by ops-alice (console)")
    await expect(page.locator("#event-record")).to_contain_text("***")
    await shots.take(page, "execution-lineage")

    await page.goto(f"{console.url}/ui/")
    await expect(page.locator("#kafka")).to_contain_text(f"{prefix}.orders", timeout=20_000)
    await expect(page.locator("#kafka")).to_contain_text("0 not redriven")
    await expect(page.locator("figure.chart-card")).to_contain_text(
        "console-order", timeout=15_000)  # the chart is cached 2.5 s; the page polls every 5 s
    await shots.take(page, "overview")


async def _produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def _no_sideways_scroll(page: Page) -> None:
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 0, f"the page scrolls sideways by {overflow} px"


LONG_FIRST_LINE = "carrier refused the shipment: " + " ".join(f"reason{i}" for i in range(60))
HOSTILE_REASON = (f"{LONG_FIRST_LINE}\naddress.line1\n"
                  "  <script>document.body.dataset.pwned = '1'</script>\n"
                  "  Input should be a valid string [type=string_type, input_value=42]")
LONG_KEY = "customer-" + "k" * 120
"""A key with no place to break: it must wrap anyway."""


async def _dead_letters(console: Console, bootstrap: str, prefix: str, page: Page) -> Any:
    """Two dead letters (one with a long multi-line reason carrying ``<script>`` and a long
    key, one plain), and ``page`` on the dead-letters page once both are listed."""
    hostile, plain = f"H-{uuid.uuid4().hex[:6]}", f"P-{uuid.uuid4().hex[:6]}"
    BROKEN.update({hostile, plain})
    REASONS[hostile] = HOSTILE_REASON
    await _produce(bootstrap, f"{prefix}.orders", [
        (LONG_KEY.encode(), json.dumps({"id": hostile, "amount": 1}).encode()),
        (plain.encode(), json.dumps({"id": plain, "amount": 2}).encode())])
    rows = page.locator("table.list > tbody > tr")

    async def listed() -> bool:
        await page.goto(f"{console.url}/ui/dead-letters")
        return await rows.count() == 2

    await until(listed, timeout=30)
    return rows


@pytest.mark.slow
@pytest.mark.browser
async def test_a_dead_letter_s_reason_is_one_line_in_the_list_and_whole_on_demand_as_text(
        kafka_console: Console, shots: Shots, kafka_bootstrap: str, prefix: str) -> None:
    page = await kafka_console.page(width=390, height=844)
    rows = await _dead_letters(kafka_console, kafka_bootstrap, prefix, page)
    row = rows.filter(has_text="carrier refused the shipment")
    shown = await row.locator(".reason-line").inner_text()
    assert shown.endswith("…") and "\n" not in shown and len(shown) <= 160, shown
    assert LONG_FIRST_LINE.startswith(shown[:-1].rstrip()), "the first line, cut at a word"
    whole = row.locator("details.whole-reason pre")
    await expect(whole).to_be_hidden()
    await row.get_by_text("whole reason").click()
    await expect(whole).to_be_visible()
    assert await whole.inner_text() == HOSTILE_REASON, "all of it, as text"
    assert await row.locator("script").count() == 0, "escaped, never HTML"
    assert await page.evaluate("document.body.dataset.pwned") is None
    plain = rows.filter(has_text="inventory service rejected order P-")
    await expect(plain.locator(".reason-line")).to_have_text(re.compile(r"order P-\w+$"))
    await expect(plain.locator("details.whole-reason")).to_have_count(0)
    await page.evaluate("window.scrollTo(0, 0)")
    await shots.take(page, "dead-letters-narrow", full_page=False)


@pytest.mark.slow
@pytest.mark.browser
async def test_the_dead_letters_page_fits_a_phone_with_every_redrive_button_in_view(
        kafka_console: Console, kafka_bootstrap: str, prefix: str) -> None:
    page = await kafka_console.page(width=390, height=844)
    rows = await _dead_letters(kafka_console, kafka_bootstrap, prefix, page)
    await _no_sideways_scroll(page)
    for row in await rows.all():  # opened, the details must fit too
        for summary in await row.locator("summary").all():
            await summary.click()
    await _no_sideways_scroll(page)
    buttons = page.get_by_role("button", name="Redrive…", exact=True)
    await expect(buttons).to_have_count(2)
    for button in await buttons.all():
        await button.scroll_into_view_if_needed()
        box = await button.bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
        await button.click(trial=True)  # visible, enabled, not covered: clickable
    await buttons.last.click()
    dialog = page.get_by_role("dialog")
    await expect(dialog).to_be_visible()
    box = await dialog.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    await dialog.get_by_role("button", name="Not now").click()
    await expect(dialog).to_be_hidden()

    await page.goto(f"{kafka_console.url}/ui/")
    await expect(page.locator("#kafka")).to_contain_text(f"{prefix}.orders", timeout=20_000)
    await _no_sideways_scroll(page)


@pytest.mark.slow
@pytest.mark.browser
async def test_the_login_page_guards_every_page(console: Console, shots: Shots) -> None:
    context = await console.browser.new_context(viewport={"width": 1280, "height": 700})
    page = await context.new_page()
    await page.goto(f"{console.url}/ui/executions?status=waiting")
    assert "/ui/login?next=" in page.url
    await page.get_by_label("API key").fill("hub_0123456789ab_" + "A" * 43)
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("alert")).to_contain_text("unknown API key")
    await shots.take(page, "login")
    await page.get_by_label("API key").fill(console.keys["viewer"])
    await page.get_by_role("button", name="Log in").click()
    await expect(page.get_by_role("heading", name="Executions")).to_be_visible()
    assert page.url.endswith("/ui/executions?status=waiting"), "back where it was going"
    cookie = next(c for c in await context.cookies() if c["name"] == "hub_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/ui"
    assert console.keys["viewer"] not in cookie["value"], "a session token, not the key"
    await page.get_by_role("button", name="Log out").click()
    await expect(page.get_by_role("heading", name="Log in to the console")).to_be_visible()
    await page.goto(f"{console.url}/ui/")
    assert "/ui/login" in page.url


@pytest.mark.slow
@pytest.mark.browser
async def test_the_execution_page_reads_well_in_a_narrow_window(console: Console,
                                                               shots: Shots) -> None:
    run = await console.hub.start("console-order", {"id": "F-6", "amount": 1, "fail": True},
                                  transaction_id="order:F-6", wait=True, raise_on_error=False)
    page = await console.page(width=390, height=844)
    await page.goto(f"{console.url}/ui/executions/{run.id}")
    await _status(page, "compensated")
    overflow = await page.evaluate(
        "document.documentElement.scrollWidth - document.documentElement.clientWidth")
    assert overflow <= 1, "no sideways scrolling of the page (tables scroll in their box)"
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await shots.take(page, "execution-narrow", full_page=False)


# -- the same service method, audited, from the JSON API ---------------------------------
@pytest.mark.slow
async def test_actions_through_the_json_api_are_audited_and_shown_on_the_page(
        hub: Hub) -> None:
    keys = await _keys(hub)
    run = await hub.start("console-approval", {"id": "G-7"}, transaction_id="approval:G-7",
                          wait=True)
    app = create_app(hub, settings=ApiSettings(), kafka=KafkaSettings(bootstrap=None),
                     subscribers=SubscriberRegistry())
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        r = await client.post(f"/executions/{run.id}/cancel", json={"reason": "customer asked"},
                              headers={"Authorization": f"Bearer {keys['ops']}"},
                              params={"wait": True})
        assert r.status_code == 200 and r.json()["status"] == "cancelled"
        login = await client.get("/ui/login")
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', login.text)
        assert nonce is not None
        r = await client.post("/ui/login", data={"api_key": keys["viewer"],
                                                 "login_nonce": nonce.group(1),
                                                 "next": f"/ui/executions/{run.id}"})
        assert r.status_code == 303
        page = await client.get(r.headers["location"])
        assert page.status_code == 200
        assert "ops-alice" in page.text and "customer asked" in page.text
        assert re.search(r"<td>api</td>\s*<td>cancel", page.text)
        assert page.headers["content-security-policy"].startswith("default-src 'self'")
        listed = await client.get("/executions", params={"key": "G-"},
                                  headers={"Authorization": f"Bearer {keys['viewer']}"})
        assert listed.status_code == 200 and listed.json()["items"] == []
        by_tx = await client.get("/executions", params={"transaction_id": "approval:G-7"},
                                 headers={"Authorization": f"Bearer {keys['viewer']}"})
        assert [i["id"] for i in by_tx.json()["items"]] == [run.id]


# -- drawing and redaction, without a browser ------------------------------------------
def test_the_graph_is_drawn_in_layers_with_parallel_steps_side_by_side() -> None:
    from hub.api.console._graph import render_graph

    def step(sid: str, *after: str) -> dict[str, Any]:
        return {"id": sid, "step": sid, "kind": "step", "after": list(after), "when": [],
                "reads": [], "options": {}, "compensates": False}

    graph = {"steps": [step("reserve"), step("charge", "reserve"), step("invoice", "reserve"),
                       step("ship", "charge", "invoice")], "transforms": [], "conditions": []}
    svg = str(render_graph(graph, {"reserve": "done", "charge": "done",
                                   "invoice": "permanent_failure", "ship": "not_started"}))
    ys = {sid: float(y) for sid, y in re.findall(
        r'href="#step-([a-z]+)"><title>[^<]*</title><rect x="[0-9.]+" y="([0-9.]+)"', svg)}
    assert ys["reserve"] < ys["charge"] == ys["invoice"] < ys["ship"]
    assert svg.count('class="edge"') == 4
    assert "✗ invoice" in svg and "failed" in svg, "state told in an icon and a word too"


def test_a_fan_out_is_drawn_as_one_node_saying_what_runs_per_item() -> None:
    from hub.api.console._graph import render_graph
    from tests.workflows.fanout_flows import fx_map

    svg = str(render_graph(fx_map.graph.to_dict(), None))
    assert svg.count("each-fx-apply") >= 1 and "each: fx-apply, 3 at once" in svg
    assert "fx-apply[" not in svg, "no node per item: the list is known only at run time"


@pytest.mark.parametrize(("status", "step", "parked", "unapplied", "settled"), [
    ("running", "invoking", None, False, False),
    ("pending", "not_started", None, False, False),
    ("waiting", "waiting", None, False, True),
    ("waiting", "waiting", None, True, False),  # a cancel or an outcome not applied yet
    ("pending", "not_started", "version abc is not registered here", False, True),
    ("succeeded", "done", None, False, True),
    ("succeeded", "done", None, True, True),  # ended for good: no signal changes it
    ("compensation_failed", "failed", None, False, True),
    ("compensation_failed", "failed", None, True, False),  # a retry not applied yet
])
def test_an_execution_settles_when_it_ended_or_waits_with_every_action_applied(
        status: str, step: str, parked: str | None, unapplied: bool, settled: bool) -> None:
    from hub.api.models import ExecutionDetail, StepOut
    from hub.api.service import ExecutionView

    detail = ExecutionDetail.model_validate({
        "id": str(uuid.uuid4()), "workflow": "w", "version": "v", "transaction_id": "t",
        "status": status, "state": status, "phase": "forward", "parked": parked,
        "steps": [StepOut.model_validate({"id": "s", "state": step, "attempts": 1})]})
    view = ExecutionView(detail=detail, steps=[], graph=None, graph_note=None, timeline=[],
                         audit=[], unapplied_signal=unapplied)
    assert view.settled is settled


# -- the outbox page, over plain HTTP ----------------------------------------------------
@pytest.mark.slow
async def test_the_outbox_page_lists_a_failed_event_with_its_reason_and_retries_it(
        hub: Hub) -> None:
    keys = await _keys(hub)
    event_id = uuid.uuid4()
    await hub.store.pool.execute(
        f"INSERT INTO {hub.store.schema}.outbox (id, topic, key, payload, attempts, failed_at,"
        " last_error) VALUES ($1, 'order.confirmed', 'order-5', '{}'::jsonb, 1, now(), "
        "'MessageSizeTooLargeError: the record is too large')", event_id)
    app = create_app(hub, settings=ApiSettings(), kafka=KafkaSettings(bootstrap=None),
                     subscribers=SubscriberRegistry())
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        login = await client.get("/ui/login")
        nonce = re.search(r'name="login_nonce" value="([^"]+)"', login.text)
        assert nonce is not None
        r = await client.post("/ui/login", data={"api_key": keys["ops"],
                                                 "login_nonce": nonce.group(1),
                                                 "next": "/ui/outbox?state=failed"})
        page = await client.get(r.headers["location"])
        assert page.status_code == 200
        assert str(event_id) in page.text and "order-5" in page.text
        assert "MessageSizeTooLargeError: the record is too large" in page.text
        assert re.search(r'<tr data-state="failed">', page.text)
        assert "Retry…" in page.text and "<dialog" in page.text
        overview = await client.get("/ui/fragments/overview")
        assert re.search(r">1</strong> failed", overview.text)
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        forged = await client.post(f"/ui/outbox/{event_id}/retry", data={"csrf": "forged"})
        assert forged.status_code == 403
        done = await client.post(f"/ui/outbox/{event_id}/retry",
                                 data={"csrf": csrf.group(1)})
        assert done.status_code == 303
        after = await client.get(done.headers["location"])
        assert "Retry requested: 1 event(s)" in after.text
        assert re.search(r'<tr data-state="pending">', after.text)
    [audit] = await hub.store.audit_for_targets([f"outbox:{event_id}"])
    assert audit["via"] == "console" and audit["actor_name"] == "ops-alice"


# -- the overview's consumer lag -------------------------------------------------------
def test_consumer_lag_is_summarised_per_topic_with_its_worst_partition() -> None:
    from hub.api.console._lag import by_topic

    def row(topic: str, partition: int, committed: int | None, end: int) -> dict[str, Any]:
        return {"topic": topic, "partition": partition, "committed": committed, "end": end,
                "lag": end - (committed or 0)}

    topics = by_topic([row("quiet", 0, 5, 5), row("busy", 2, 10, 17), row("busy", 0, None, 3),
                       row("busy", 1, 4, 11), row("also-quiet", 0, 1, 1)])
    assert [t.topic for t in topics] == ["busy", "also-quiet", "quiet"], "furthest behind first"
    busy = topics[0]
    assert busy.total == 17 and [p.partition for p in busy.partitions] == [0, 1, 2]
    assert busy.worst is not None and busy.worst.partition == 1, "7 behind, the lower of a tie"
    assert topics[1].total == 0 and topics[1].worst is None


@pytest.mark.slow
async def test_the_overview_shows_lag_per_topic_with_its_partitions_on_demand(
        hub: Hub, kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    from hub.runtime.admin import reconcile

    topic = f"{prefix}.orders"
    topics_file = tmp_path / "topics.yaml"
    topics_file.write_text(f"""
topics:
  {topic}:
    partitions: 3
    event: tests.test_console:OrderEvent
    dead_letter: {topic}.dlq
  {topic}.dlq:
    partitions: 1
""")
    settings = KafkaSettings(bootstrap=kafka_bootstrap, group=f"{prefix}-hub",
                             topics_file=topics_file)
    await reconcile(load_topics(topics_file), settings, kafka_bootstrap, create=True)
    registry = SubscriberRegistry()

    @subscriber(topic, registry=registry)
    async def on_order(event: OrderEvent, ctx: SubscriberContext) -> None:
        """Never runs: no consumer is started, so every record produced lags."""

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap)
    await producer.start()
    try:
        for partition, count in [(0, 1), (2, 3)]:
            for i in range(count):
                await producer.send_and_wait(topic, b'{"id": "L", "amount": 1}',
                                             key=f"<k{i}>".encode(), partition=partition)
    finally:
        await producer.stop()
    keys = await _keys(hub)
    app = create_app(hub, settings=ApiSettings(), kafka=settings, subscribers=registry)
    async with serve(app) as url, httpx.AsyncClient(base_url=url, timeout=30) as client:
        await _log_in(client, keys["viewer"])

        async def read() -> str | None:
            html = (await client.get("/ui/fragments/kafka")).text
            found = re.search(rf'<tr data-topic="{re.escape(topic)}">(.*?)</details></td></tr>',
                              html, re.S)
            return found.group(1) if found and "<strong>4</strong>" in found.group(1) else None

        line = await until(read, timeout=40)  # readings are cached 10 s
    summary, partitions = line.split("<details>", 1)
    assert re.search(r'class="num total"><strong>4</strong>', summary), "the total lag"
    assert re.search(r'class="worst">2 <span class="muted">\(lag 3\)', summary)
    assert "<summary>3 partitions</summary>" in partitions
    lags = re.findall(r'<tr><td class="num">(\d)</td>\s*<td class="num">([^<]*)</td>'
                      r'<td class="num">(\d+)</td>\s*<td class="num">(?:<strong>)?(\d+)',
                      partitions)
    assert lags == [("0", "—", "1", "1"), ("1", "—", "0", "0"), ("2", "—", "3", "3")], lags


# -- sessions, over plain HTTP -----------------------------------------------------------
@contextlib.asynccontextmanager
async def _plain(hub: Hub, settings: ApiSettings | None = None,
                 ) -> AsyncIterator[Callable[[], httpx.AsyncClient]]:
    """The console served on loopback; yields a factory of clients (each its own browser:
    its own cookie jar), closed at the end."""
    app = create_app(hub, settings=settings or ApiSettings(),
                     kafka=KafkaSettings(bootstrap=None), subscribers=SubscriberRegistry())
    clients: list[httpx.AsyncClient] = []

    def client() -> httpx.AsyncClient:
        clients.append(httpx.AsyncClient(base_url=url, timeout=30))
        return clients[-1]

    async with serve(app) as url:
        try:
            yield client
        finally:
            for c in clients:
                await c.aclose()


async def _log_in(client: httpx.AsyncClient, key: str, **headers: str) -> httpx.Response:
    login = await client.get("/ui/login", headers=headers)
    nonce = re.search(r'name="login_nonce" value="([^"]+)"', login.text)
    assert nonce is not None
    if "; secure" in _set_cookie(login, "hub_console_login").lower():
        # a browser sends a Secure cookie only over https, which the proxy would speak
        headers = {**headers, "Cookie": f"hub_console_login={nonce.group(1)}"}
    r = await client.post("/ui/login", headers=headers, data={
        "api_key": key, "login_nonce": nonce.group(1), "next": "/ui/"})
    assert r.status_code == 303, r.text
    return r


def _set_cookie(response: httpx.Response, name: str = "hub_console") -> str:
    return next(h for h in response.headers.get_list("set-cookie")
                if h.startswith(f"{name}="))


async def _csrf(client: httpx.AsyncClient) -> str:
    page = await client.get("/ui/")
    assert page.status_code == 200, "logged in"
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found is not None
    return found.group(1)


def _logged_out(r: httpx.Response) -> bool:
    return r.status_code == 303 and r.headers["location"].startswith("/ui/login")


async def _session_rows(hub: Hub) -> list[dict[str, Any]]:
    return [dict(r) for r in await hub.store.pool.fetch(
        f"SELECT * FROM {hub.store.schema}.console_session ORDER BY created_at")]


@pytest.mark.slow
async def test_the_console_cookie_holds_a_session_token_never_the_api_key(hub: Hub) -> None:
    keys = await _keys(hub)
    key = keys["ops"]
    async with _plain(hub) as browser:
        client = browser()
        await _log_in(client, key)
        cookie = client.cookies["hub_console"]
        assert key not in cookie and not cookie.startswith("hub_")
        assert key.split("_")[1] not in cookie, "not even the key's public prefix"
        assert not any(key[i:i + 8] in cookie for i in range(len(key) - 7)), \
            "no piece of the key"
        assert (await client.get("/ui/")).status_code == 200, "the session works"
    [row] = await _session_rows(hub)
    assert row["token_hash"] == hashlib.sha256(cookie.encode()).hexdigest()
    assert cookie not in json.dumps(row, default=str), "the token itself is not stored"


@pytest.mark.slow
async def test_logout_revokes_the_session_so_a_copied_cookie_no_longer_works(
        hub: Hub) -> None:
    keys = await _keys(hub)
    async with _plain(hub) as browser:
        client = browser()
        await _log_in(client, keys["viewer"])
        stolen = client.cookies["hub_console"]
        out = await client.post("/ui/logout", data={"csrf": await _csrf(client)})
        assert _logged_out(out) and "hub_console=" in out.headers["set-cookie"]
        thief = browser()
        thief.cookies.set("hub_console", stolen, path="/ui")
        assert _logged_out(await thief.get("/ui/executions"))
        refused = await thief.get("/ui/fragments/overview", headers={"HX-Request": "true"})
        assert refused.status_code == 401 and refused.headers["hx-redirect"].startswith(
            "/ui/login")
    [row] = await _session_rows(hub)
    assert row["revoked_at"] is not None


@pytest.mark.slow
@pytest.mark.parametrize("deadline", ["expires_at", "idle_expires_at"])
async def test_a_session_past_its_deadline_is_refused(hub: Hub, deadline: str) -> None:
    keys = await _keys(hub)
    async with _plain(hub) as browser:
        client = browser()
        await _log_in(client, keys["viewer"])
        assert (await client.get("/ui/")).status_code == 200
        await hub.store.pool.execute(
            f"UPDATE {hub.store.schema}.console_session "
            f"SET {deadline} = now() - interval '1 second'")
        assert _logged_out(await client.get("/ui/"))


@pytest.mark.slow
async def test_a_session_is_touched_at_most_once_per_interval_and_that_moves_its_idle_deadline(
        hub: Hub) -> None:
    keys = await _keys(hub)
    settings = ApiSettings(key_touch_seconds=60, console_idle_minutes=60)
    async with _plain(hub, settings) as browser:
        client = browser()
        await _log_in(client, keys["viewer"])
        [opened] = await _session_rows(hub)
        for _ in range(3):
            assert (await client.get("/ui/")).status_code == 200
        [after] = await _session_rows(hub)
        assert after["last_seen_at"] == opened["last_seen_at"], "no write per request"
        await hub.store.pool.execute(
            f"UPDATE {hub.store.schema}.console_session SET last_seen_at = now() - "
            "interval '2 minutes', idle_expires_at = now() + interval '1 minute'")
        assert (await client.get("/ui/")).status_code == 200
        moved = await hub.store.pool.fetchval(
            f"SELECT idle_expires_at - now() FROM {hub.store.schema}.console_session")
        assert moved.total_seconds() > 59 * 60, "seen: an hour of idle time again"


@pytest.mark.slow
async def test_revoking_the_api_key_ends_its_console_sessions(hub: Hub) -> None:
    keys = await _keys(hub)
    async with _plain(hub) as browser:
        client = browser()
        await _log_in(client, keys["ops"])
        assert (await client.get("/ui/")).status_code == 200
        assert await revoke_key(hub.store, keys["ops"][:len("hub_") + 12]) is not None
        assert _logged_out(await client.get("/ui/"))


@pytest.mark.slow
async def test_a_form_with_another_session_s_csrf_token_or_none_is_refused(hub: Hub) -> None:
    keys = await _keys(hub)
    async with _plain(hub) as browser:
        alice, mallory = browser(), browser()
        await _log_in(alice, keys["ops"])
        await _log_in(mallory, keys["ops"])
        theirs = await _csrf(mallory)
        assert theirs != await _csrf(alice), "one CSRF token per session, not per key"
        for forged in ("", "forged", theirs):
            r = await alice.post("/ui/outbox/00000000-0000-0000-0000-000000000000/retry",
                                 data={"csrf": forged})
            assert r.status_code == 403, forged
            out = await alice.post("/ui/logout", data={"csrf": forged})
            assert out.status_code == 403, "a forged logout is refused too"
        assert (await alice.get("/ui/")).status_code == 200, "still logged in"


@pytest.mark.slow
@pytest.mark.parametrize("header", [{"X-Forwarded-Proto": "https"},
                                    {"Forwarded": 'for=198.51.100.7;proto="https"'}])
async def test_a_trusted_proxy_s_word_that_the_browser_came_over_https_makes_cookies_secure(
        hub: Hub, header: dict[str, str]) -> None:
    keys = await _keys(hub)
    async with _plain(hub, ApiSettings(trusted_proxies=["10.0.0.0/8", "127.0.0.1"])) as browser:
        plain = await _log_in(browser(), keys["viewer"])
        assert "secure" not in _set_cookie(plain).lower(), "http without a proxy's word"
        behind = await _log_in(browser(), keys["viewer"], **header)
        assert "; secure" in _set_cookie(behind).lower()
        login = await browser().get("/ui/login", headers=header)
        assert "; secure" in _set_cookie(login, "hub_console_login").lower()


@pytest.mark.slow
@pytest.mark.parametrize("trusted", [[], ["10.0.0.0/8"]])
async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(
        hub: Hub, trusted: list[str]) -> None:
    keys = await _keys(hub)
    async with _plain(hub, ApiSettings(trusted_proxies=trusted)) as browser:
        r = await _log_in(browser(), keys["viewer"], **{
            "X-Forwarded-Proto": "https", "Forwarded": "proto=https",
            "X-Forwarded-For": "10.1.2.3"})
        assert "secure" not in _set_cookie(r).lower()
    [row] = await _session_rows(hub)
    assert row["remote_addr"] == "127.0.0.1", "the peer, not what it says it forwards"


@pytest.mark.slow
async def test_the_housekeeping_purge_removes_ended_console_sessions(hub: Hub) -> None:
    keys = await _keys(hub)
    async with _plain(hub) as browser:
        live, expired, left = browser(), browser(), browser()
        for client in (live, expired, left):
            await _log_in(client, keys["viewer"])
        await left.post("/ui/logout", data={"csrf": await _csrf(left)})
        await hub.store.pool.execute(
            f"UPDATE {hub.store.schema}.console_session SET expires_at = now() - "
            "interval '1 second' WHERE token_hash = $1",
            hashlib.sha256(expired.cookies["hub_console"].encode()).hexdigest())
        purged = await hub.store.purge_housekeeping(hub.settings.housekeeping())
        assert purged["console_sessions"] == 2
        [kept] = await _session_rows(hub)
        assert kept["token_hash"] == hashlib.sha256(
            live.cookies["hub_console"].encode()).hexdigest()
        assert (await live.get("/ui/")).status_code == 200


@pytest.mark.slow
async def test_the_console_and_the_api_answer_one_failure_with_one_status(hub: Hub) -> None:
    """Both read the status from the error (``HubError.api_status``): with no broker, a
    redrive from the page is 503 as the API's dead-letter read is, where the console once
    said 400."""
    keys = await _keys(hub)
    bearer = {"Authorization": f"Bearer {keys['ops']}"}
    async with _plain(hub) as browser:
        client = browser()
        await _log_in(client, keys["ops"])
        page = await client.post("/ui/dead-letters/redrive", data={
            "csrf": await _csrf(client), "ref": "orders.dlq/0/0"})
        api = await client.get("/dead-letters", headers=bearer)
        missing = await client.get("/ui/executions/00000000-0000-0000-0000-000000000000")
        api_missing = await client.get("/executions/00000000-0000-0000-0000-000000000000",
                                       headers=bearer)
    assert (page.status_code, api.status_code) == (503, 503), (page.text[-600:], api.text)
    assert api.json()["error"] == "unavailable" and "Unavailable (503)" in page.text
    assert "no broker configured" in page.text and "no broker configured" in api.text
    assert (missing.status_code, api_missing.status_code) == (404, 404)


async def test_a_map_step_shows_its_item_counts_and_opens_each_item(hub: Hub) -> None:
    from tests.workflows.fanout_flows import Ledger, fx_map

    hub.container.register("ledger", Ledger())
    items = [{"sku": f"S{i}"} for i in range(3)] + [{"sku": "S3", "fail": True}]
    run = await fx_map(hub).run(input={"items": items}, raise_on_error=False)
    assert run.status == "compensated"
    async with _plain(hub) as browser:
        client = browser()
        await _log_in(client, (await _keys(hub))["viewer"])
        page = await client.get(f"/ui/executions/{run.id}")
        assert page.status_code == 200
        assert '<span class="badge">map</span>' in page.text
        assert "Items (4)" in page.text
        link = f"/ui/executions/{run.id}/steps/each-fx-apply/items"
        assert f'href="{link}"' in page.text
        listing = await client.get(link)
        assert listing.status_code == 200
        for i in range(4):
            assert f"{run.id}:each-fx-apply[S{i}]" in listing.text
        assert "S3 is refused" in listing.text
        assert listing.text.count("↩</span> compensated") == 3, "three items undone"


async def test_parent_and_child_executions_link_to_each_other(hub: Hub) -> None:
    from tests.workflows.fanout_flows import Ledger, fx_parent

    hub.container.register("ledger", Ledger())
    run = await hub.wait((await fx_parent(hub).run(input={"child": {}})).id, timeout=30)
    assert run.status == "succeeded", run.error
    async with _plain(hub) as browser:
        client = browser()
        await _log_in(client, (await _keys(hub))["viewer"])
        parent = await client.get(f"/ui/executions/{run.id}")
        found = re.search(r'href="/ui/executions/([0-9a-f-]{36})"><code>', parent.text)
        assert found is not None, "the parent lists its child"
        child = await client.get(f"/ui/executions/{found.group(1)}")
        assert f'href="/ui/executions/{run.id}"' in child.text, "the child links its parent"
        assert "child-fx-child" in child.text


async def test_an_operator_wakes_a_sleep_from_the_page_and_a_viewer_gets_no_button(
        hub: Hub) -> None:
    from tests.workflows import sleep_flows

    assert sleep_flows  # registers sleep-between
    run = await hub.start("sleep-between", {"seconds": 3 * 86400}, wait=False)

    async def sleeping() -> bool:
        return (await hub.get_run(run.id)).steps["sleep"].state == "waiting"

    await until(sleeping, 30)
    keys = await _keys(hub)
    async with _plain(hub) as browser:
        ops, viewer = browser(), browser()
        await _log_in(ops, keys["ops"])
        await _log_in(viewer, keys["viewer"])
        seen = await viewer.get(f"/ui/executions/{run.id}")
        assert "Wake sleep now" not in seen.text
        page = await ops.get(f"/ui/executions/{run.id}")
        assert "Wake sleep now…" in page.text
        assert "Complete sleep…" not in page.text, "a sleep is woken, not completed"
        woke = await ops.post(f"/ui/executions/{run.id}/steps/sleep/wake",
                              data={"csrf": await _csrf(ops)}, follow_redirects=True)
        assert woke.status_code == 200 and "Wake-up recorded" in woke.text
    done = await hub.wait(run.id, timeout=30)
    assert done.status == "succeeded" and done.steps["sl-after"].state == "done"
    actions = [r["action"] for r in await hub.store.audit_for_execution(uuid.UUID(run.id))]
    assert actions == ["wake"]

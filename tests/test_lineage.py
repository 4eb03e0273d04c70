"""Lineage down to each connector call: what a step sent to an outside system, under which
key, what it answered and the outside id of what it made, read back through the API and the
CLI; never a secret; bounded per step attempt."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from playwright.async_api import async_playwright, expect
from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

import workflows.orders  # noqa: F401  (registers fulfil-order)
from connectors.base import ConnectorSettings, HttpConnector, load_settings
from connectors.hubspot import HubSpotConnector, HubSpotSettings
from hub import (
    Hub,
    PermanentConnectorError,
    StepContext,
    WorkflowResponse,
    create_step,
    create_workflow,
)
from hub.api import ApiSettings, create_app, create_key
from hub.sandbox import SandboxControl, SandboxServer
from tests.conftest import ROOT, worker_env
from tests.support.console import CHROMIUM_ARGS, ensure_chromium, serve

SECRET = "sk_lineage_" + uuid.uuid4().hex
CARD = "4242424242424242"


class _KeySettings(ConnectorSettings):
    model_config = SettingsConfigDict(env_prefix="HUB_LINEAGE_TEST_", extra="ignore")
    api_key: SecretStr | None = None


def _connector(base_url: str) -> HttpConnector:
    settings = _KeySettings(base_url=base_url, api_key=SecretStr(SECRET), max_retries=0)
    return HttpConnector("keyed", settings, headers={"X-Api-Key": SECRET})


async def _leaky_calls(inp: dict[str, Any], ctx: StepContext) -> int:
    """Calls whose path and query carry the secret and a card number."""
    async with _connector(inp["base_url"]) as system:
        for path in (f"/v1/things/{SECRET}", f"/v1/cards/{CARD}/x",
                     f"/v1/q?api_key={SECRET}&card={CARD}", f"/v1/card={CARD}"):
            with contextlib.suppress(PermanentConnectorError):  # refused: still recorded
                await system.request("GET", path, ctx=ctx, operation="peek")
        with contextlib.suppress(PermanentConnectorError):  # named by method and path
            await system.request("GET", f"/v1/cards/{CARD}?key={SECRET}", ctx=ctx)
    return 5


@create_workflow("lineage-leaky")
def lineage_leaky(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(create_step("leaky-calls", _leaky_calls)(inp))


async def _many_calls(inp: dict[str, Any], ctx: StepContext) -> int:
    async with _connector(inp["base_url"]) as system:
        for n in range(5):
            with contextlib.suppress(PermanentConnectorError):
                await system.request("GET", f"/v1/n/{n}", ctx=ctx)
    return 5


async def _no_calls(inp: dict[str, Any], ctx: StepContext) -> int:
    return 0


@create_workflow("lineage-many")
def lineage_many(inp: dict[str, Any]) -> WorkflowResponse:
    quiet = create_step("no-calls", _no_calls)(inp)
    return WorkflowResponse({"quiet": quiet, "n": create_step("many-calls", _many_calls)(inp)})


async def _unreachable(inp: dict[str, Any], ctx: StepContext) -> None:
    async with _connector("http://127.0.0.1:9") as system:
        await system.request("POST", "/v1/nowhere", ctx=ctx, operation="send")


@create_workflow("lineage-unreachable")
def lineage_unreachable(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(create_step("unreachable", _unreachable, max_retries=0)(inp))


async def _crm_contact(inp: dict[str, Any], ctx: StepContext) -> str:
    async with HubSpotConnector(load_settings(HubSpotSettings)) as crm:
        return await crm.upsert_contact(ctx, email=inp["email"], properties={})


@create_workflow("lineage-crm")
def lineage_crm(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(create_step("crm-contact", _crm_contact)(inp))


async def _one_call(inp: dict[str, Any], ctx: StepContext) -> str:
    async with _connector(inp["base_url"]) as system:
        with contextlib.suppress(PermanentConnectorError):
            await system.request("GET", "/v1/one", ctx=ctx)
    return "done"


@create_workflow("lineage-unstored", store=False)
def lineage_unstored(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(create_step("one-call", _one_call)(inp))


CALLED: dict[str, asyncio.Event] = {}
"""Set by lineage-cut's step once its call is made (keyed by the input's id)."""


async def _call_then_hang(inp: dict[str, Any], ctx: StepContext) -> None:
    async with _connector(inp["base_url"]) as system:
        with contextlib.suppress(PermanentConnectorError):
            await system.request("GET", "/v1/slow", ctx=ctx, operation="start_slow_job")
        CALLED[inp["id"]].set()
        await asyncio.Event().wait()  # until an operator's cancel cuts it


@create_workflow("lineage-cut")
def lineage_cut(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(create_step("hangs", _call_then_hang)(inp))


@pytest.fixture
async def api(hub: Hub) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    token = (await create_key(hub.store, "lineage", ["read"])).token
    transport = httpx.ASGITransport(app=create_app(hub))
    async with httpx.AsyncClient(transport=transport, base_url="http://hub") as client:
        yield client, {"Authorization": f"Bearer {token}"}


def _order(tag: str) -> dict[str, Any]:
    return {"schema_version": 1, "id": f"ord-lin-{tag}", "customer_email": f"l-{tag}@x.example",
            "customer_name": "Grace Hopper", "currency": "EUR",
            "lines": [{"sku": "SKU-008", "quantity": 1, "unit_price": 1250}],
            "total": 1250, "payment_method": "pm_card_visa"}


def _calls(detail: dict[str, Any], system: str, operation: str,
           compensating: bool = False) -> list[dict[str, Any]]:
    return [c for c in detail["calls"] if c["system"] == system
            and c["operation"] == operation and c["compensating"] is compensating]


async def _cli_show(dsn: str, schema: str, ref: str) -> dict[str, Any]:
    env = worker_env(dsn, schema, "workflows")
    done = await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "hub", "executions", "show", ref], env=env,
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    shown: dict[str, Any] = json.loads(done.stdout)
    return shown


@pytest.mark.slow
async def test_a_fulfilled_order_lists_its_stripe_odoo_and_hubspot_calls_with_outside_ids(
        hub: Hub, sandboxes: SandboxServer, sandbox: SandboxControl, dsn: str, schema: str,
        api: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    order = _order(uuid.uuid4().hex[:8])
    run = await hub.start("fulfil-order", order, transaction_id=f"order.placed:{order['id']}")
    assert run.status == "succeeded", run.error
    client, auth = api
    answer = await client.get(f"/executions/{run.id}", headers=auth)
    assert answer.status_code == 200, answer.text
    detail = answer.json()

    intent = run.result["payment_intent_id"]
    assert intent.startswith("pi_")
    (create,) = _calls(detail, "stripe", "create_payment_intent")
    assert create["outside_id"] == intent and create["status"] == 200
    assert create["step"] == "authorize-payment" and create["method"] == "POST"
    assert create["idempotency_key"] == f"{run.id}:authorize-payment:create"
    assert [c["outside_id"] for c in _calls(detail, "stripe", "capture_payment_intent")] == [
        intent]

    sale_order = (await sandbox.state("odoo"))["sale_orders"][order["id"]]
    (created,) = _calls(detail, "odoo", "sale.order.create")
    assert created["outside_id"] == str(sale_order["id"])
    assert created["step"] == "create-sales-order"
    assert created["path"] in ("/jsonrpc", "/json/2/sale.order/create")
    # a record method answers no id: the record it acted on is named instead
    (confirmed,) = _calls(detail, "odoo", "sale.order.action_confirm")
    assert confirmed["outside_id"] == str(sale_order["id"])

    (deal,) = _calls(detail, "hubspot", "create_deal")[:1]
    assert deal["outside_id"] == run.result["deal_id"] and deal["status"] == 201
    (contact,) = _calls(detail, "hubspot", "upsert_contact")
    # HubSpot takes no idempotency key: natural keys (the email, the order id) instead
    assert contact["outside_id"] and contact["idempotency_key"] is None
    assert all(c["duration_ms"] >= 0 and c["attempt"] == 1 for c in detail["calls"])
    # steps that call nothing have no calls
    assert not [c for c in detail["calls"] if c["step"] in ("open-fulfilment", "validate-order")]

    # the systems' credentials never reach the lineage
    env = sandboxes.connector_env()
    stored = json.dumps(detail["calls"])
    for var in ("HUB_STRIPE_API_KEY", "HUB_ODOO_API_KEY", "HUB_HUBSPOT_ACCESS_TOKEN"):
        assert env[var] and env[var] not in stored, var

    shown = await _cli_show(dsn, schema, run.id)
    assert shown["calls"] == detail["calls"]
    assert {c["outside_id"] for c in shown["calls"]} >= {intent, str(sale_order["id"]),
                                                         run.result["deal_id"]}


@pytest.mark.slow
async def test_the_calls_of_a_compensation_are_in_the_lineage(
        hub: Hub, sandboxes: SandboxServer, sandbox: SandboxControl,
        api: tuple[httpx.AsyncClient, dict[str, str]]) -> None:
    order = _order(uuid.uuid4().hex[:8])
    await sandbox.set_faults("hubspot", error_rate=1.0, error_status=400,
                             match=r"^POST /crm/v3/objects/deals$")
    run = await hub.start("fulfil-order", order, transaction_id=f"order.placed:{order['id']}",
                          raise_on_error=False)
    assert run.status == "compensated", run.error
    client, auth = api
    detail = (await client.get(f"/executions/{run.id}", headers=auth)).json()
    (refused,) = _calls(detail, "hubspot", "create_deal")
    assert refused["status"] == 400 and refused["outside_id"] is None
    (cancel,) = _calls(detail, "stripe", "cancel_payment_intent", compensating=True)
    assert cancel["step"] == "authorize-payment" and cancel["outside_id"].startswith("pi_")
    assert cancel["idempotency_key"] == f"{run.id}:authorize-payment:compensate:cancel"
    (undone,) = _calls(detail, "odoo", "sale.order.action_cancel", compensating=True)
    assert undone["step"] == "create-sales-order" and undone["outside_id"] == str(
        run.steps["create-sales-order"].output["sales_order_id"])


async def test_secrets_and_redacted_fields_never_reach_the_stored_calls(
        hub: Hub, sandboxes: SandboxServer) -> None:
    base_url = sandboxes.connector_env()["HUB_HUBSPOT_BASE_URL"]
    run = await hub.start("lineage-leaky", {"base_url": base_url}, raise_on_error=False)
    async with hub.store.pool.acquire() as conn:
        rows = [dict(r) for r in await conn.fetch(
            f"SELECT * FROM {hub.store.schema}.connector_call WHERE execution_id = $1",
            uuid.UUID(run.id))]
    assert len(rows) == 5, (run.status, run.error)
    stored = json.dumps(rows, default=str)
    assert SECRET not in stored and CARD not in stored
    assert [r["path"] for r in sorted(rows, key=lambda r: r["seq"])] == [
        "/v1/things/***", "/v1/cards/***/x", "/v1/q", "/v1/card=***", "/v1/cards/***"]
    assert [r["operation"] for r in sorted(rows, key=lambda r: r["seq"])] == [
        "peek"] * 4 + ["GET /v1/cards/***"]
    assert all(r["status"] for r in rows)


async def test_calls_beyond_the_cap_are_counted_not_kept(
        dsn: str, schema: str, sandboxes: SandboxServer) -> None:
    base_url = sandboxes.connector_env()["HUB_HUBSPOT_BASE_URL"]
    async with Hub(dsn, schema=schema, max_calls_per_step=2) as hub:
        run = await hub.start("lineage-many", {"base_url": base_url}, raise_on_error=False)
        calls = await hub.store.api_calls_for_execution(uuid.UUID(run.id))
    assert [(c["step"], c["seq"], c["dropped"]) for c in calls] == [
        ("many-calls", 0, 0), ("many-calls", 1, 3)], "no-calls stores nothing"
    assert [c["path"] for c in calls] == ["/v1/n/0", "/v1/n/1"]
    assert all(c["operation"] == "GET /v1/n/" + c["path"][-1] for c in calls)


async def _hostile_reply(inp: dict[str, Any], ctx: StepContext) -> None:
    async with _connector(inp["base_url"]) as system:
        await system.request("POST", "/v1/things", ctx=ctx, operation="make\ud800")


@create_workflow("lineage-hostile")
def lineage_hostile(inp: dict[str, Any]) -> WorkflowResponse:
    return WorkflowResponse(create_step("hostile-reply", _hostile_reply)(inp))


async def test_an_outside_system_answering_garbage_ids_still_checkpoints_a_clean_call(
        hub: Hub) -> None:
    from fastapi import FastAPI, Response

    app = FastAPI()
    # a NUL, a lone surrogate (as a JSON escape) and 5,000 characters: what jsonb and text
    # columns refuse or a lineage page should not carry
    body = b'{"id": "pi_\\u0000' + b"x" * 5000 + b'\\ud800"}'

    @app.post("/v1/things{rest:path}")
    async def things(rest: str) -> Response:
        return Response(body, media_type="application/json")

    async with serve(app) as url:
        run = await hub.start("lineage-hostile", {"base_url": url}, raise_on_error=False)
    assert run.status == "succeeded", run.error
    (call,) = await hub.store.api_calls_for_execution(uuid.UUID(run.id))
    outside = call["outside_id"]
    assert outside.startswith("pi_\ufffdxxx") and len(outside) <= 200, outside[:40]
    assert "\ud800" not in call["operation"]


async def test_a_call_that_got_no_answer_records_its_error_class(hub: Hub) -> None:
    run = await hub.start("lineage-unreachable", {}, raise_on_error=False)
    assert run.status != "succeeded"
    calls = await hub.store.api_calls_for_execution(uuid.UUID(run.id))
    assert calls and calls[0]["status"] is None and calls[0]["error"] == "ConnectError"
    assert calls[0]["operation"] == "send" and calls[0]["idempotency_key"] == \
        f"{run.id}:unreachable"


@pytest.mark.slow
@pytest.mark.browser
async def test_the_execution_page_lists_each_call_of_a_step_with_its_outside_id(
        hub: Hub, sandboxes: SandboxServer) -> None:
    run = await hub.start("lineage-crm", {"email": f"c-{uuid.uuid4().hex[:8]}@x.example"})
    assert run.status == "succeeded", run.error
    token = (await create_key(hub.store, "lineage-viewer", ["read"])).token
    async with serve(create_app(hub, settings=ApiSettings())) as url, async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=ensure_chromium(), headless=True,
                                           args=CHROMIUM_ARGS)
        try:
            page = await browser.new_page()
            await page.goto(f"{url}/ui/login")
            await page.get_by_label("API key").fill(token)
            await page.get_by_role("button", name="Log in").click()
            await expect(page.get_by_role("heading", name="Overview")).to_be_visible()
            await page.goto(f"{url}/ui/executions/{run.id}")
            calls = page.locator("table.calls tbody tr")
            await expect(calls).to_have_count(1)
            for text in ("crm-contact", "hubspot", "upsert_contact",
                         "/crm/v3/objects/contacts/batch/upsert", "200", str(run.result),
                         "none (natural keys)"):
                await expect(calls.first).to_contain_text(text)
        finally:
            await browser.close()


async def test_the_calls_of_an_attempt_cut_by_a_cancel_are_kept(
        hub: Hub, sandboxes: SandboxServer) -> None:
    key = uuid.uuid4().hex
    CALLED[key] = asyncio.Event()
    base_url = sandboxes.connector_env()["HUB_HUBSPOT_BASE_URL"]
    run = await hub.start("lineage-cut", {"id": key, "base_url": base_url}, wait=False)
    await asyncio.wait_for(CALLED[key].wait(), 60)
    done = await hub.cancel(run.id, reason="operator stop")
    assert done.status == "cancelled"
    calls = await hub.store.api_calls_for_execution(uuid.UUID(run.id))
    assert [(c["step"], c["operation"]) for c in calls] == [("hangs", "start_slow_job")]


async def test_a_store_false_run_forgets_its_calls_with_its_details(
        hub: Hub, sandboxes: SandboxServer) -> None:
    base_url = sandboxes.connector_env()["HUB_HUBSPOT_BASE_URL"]
    run = await hub.start("lineage-unstored", {"base_url": base_url})
    assert run.result == "done"
    deadline = asyncio.get_running_loop().time() + 30
    while True:  # forgotten right after the end is written
        row = await hub.store.get(uuid.UUID(run.id))
        if row is not None and row["steps"] == {}:
            break
        assert asyncio.get_running_loop().time() < deadline, "details never forgotten"
        await asyncio.sleep(0.05)
    assert await hub.store.api_calls_for_execution(uuid.UUID(run.id)) == []

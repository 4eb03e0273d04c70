"""The Odoo connector against the Odoo sandbox over loopback HTTP, on JSON-2 and JSON-RPC.

Every operation runs on both protocols and is checked through ``/_sandbox/state``; a re-run
with the same step context must find what the first run made. The sandbox's own error
semantics are checked with raw HTTP; the mapping of errors the sandbox cannot produce on
demand (serialization failures) uses ``httpx.MockTransport``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors import BreakerState, CircuitOpenError, ConnectorConfigError, load_settings
from connectors.odoo import InsufficientStockError, OdooConnector, OdooError, OdooSettings
from hub import Container, PermanentConnectorError, StepContext, TransientConnectorError
from hub.sandbox import SandboxControl, SandboxServer
from hub.sandbox.odoo import API_KEY, DATABASE, OdooSandbox

PROTOCOLS = ["json2", "jsonrpc"]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[SandboxServer]:
    server = SandboxServer([OdooSandbox(seed=1)]).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
async def control(sandbox: SandboxServer) -> AsyncIterator[SandboxControl]:
    async with SandboxControl(sandbox.control_url) as ctl:
        await ctl.clear_faults()
        await ctl.reset()
        yield ctl
        await ctl.clear_faults()


@pytest.fixture(autouse=True)
def no_odoo_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings come from each test alone, never from the developer's shell."""
    import os
    for name in list(os.environ):
        if name.startswith("HUB_ODOO_"):
            monkeypatch.delenv(name)


def settings(sandbox: SandboxServer, protocol: str, **overrides: Any) -> OdooSettings:
    values: dict[str, Any] = {
        "base_url": sandbox.url("odoo"), "database": DATABASE, "api_key": API_KEY,
        "protocol": protocol, "max_retries": 3, "retry_initial_s": 0, "retry_max_s": 0}
    values.update(overrides)
    return load_settings(OdooSettings, **values)


@pytest.fixture(params=PROTOCOLS)
async def erp(request: pytest.FixtureRequest, sandbox: SandboxServer,
              control: SandboxControl) -> AsyncIterator[OdooConnector]:
    async with OdooConnector(settings(sandbox, request.param)) as connector:
        yield connector


def step(name: str = "s", execution_id: str | None = None) -> StepContext:
    return StepContext.make(execution_id=execution_id or str(uuid.uuid4()),
                            transaction_id="order-1", workflow="t", step=name, attempt=1,
                            container=Container())


async def json2(sandbox: SandboxServer, model: str, method: str, body: dict[str, Any], *,
                key: str = API_KEY) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sandbox.url("odoo")) as client:
        return await client.post(f"/json/2/{model}/{method}", json=body, headers={
            "Authorization": f"bearer {key}", "X-Odoo-Database": DATABASE})


async def jsonrpc(sandbox: SandboxServer, service: str, method: str,
                  args: list[Any]) -> httpx.Response:
    async with httpx.AsyncClient(base_url=sandbox.url("odoo")) as client:
        return await client.post("/jsonrpc", json={
            "jsonrpc": "2.0", "method": "call", "id": 7,
            "params": {"service": service, "method": method, "args": args}})


# --- operations, on both protocols ------------------------------------------------------


async def test_catalogue_is_counted_read_by_sku_and_listed(erp: OdooConnector) -> None:
    ctx = step()
    assert await erp.count_products(ctx) == 9
    product = await erp.get_product(ctx, "SKU-001")
    assert product is not None
    assert product["default_code"] == "SKU-001" and product["name"] == "Linen Shirt"
    assert product["list_price"] == 59.0 and product["qty_available"] == 40.0
    assert set(product) == {"id", "default_code", "name", "description_sale", "list_price",
                            "qty_available", "write_date"}
    assert await erp.get_product(ctx, "SKU-NOPE") is None
    listed = await erp.list_products(ctx)
    assert [p["default_code"] for p in listed] == [*(f"SKU-00{i}" for i in range(1, 9)),
                                                   "SKU-OOS"]
    assert listed[-1]["qty_available"] == 0.0


async def test_partner_is_found_by_email_before_one_is_created(
        erp: OdooConnector, control: SandboxControl) -> None:
    ctx = step()
    first = await erp.find_or_create_partner(ctx, email="jane_doe@example.com", name="Jane")
    again = await erp.find_or_create_partner(ctx, email="Jane_Doe@Example.com", name="Jane")
    other = await erp.find_or_create_partner(ctx, email="janexdoe@example.com", name="J X")
    assert first == again != other
    state = await control.state("odoo")
    assert state["partners"]["jane_doe@example.com"] == {
        "id": first, "name": "Jane", "email": "jane_doe@example.com"}
    assert state["creates"]["res.partner"]["jane_doe@example.com"] == 1
    seeded = await erp.find_or_create_partner(ctx, email="deco.addict82@example.com", name="x")
    assert seeded == state["partners"]["deco.addict82@example.com"]["id"]


async def test_reserve_stock_reserves_every_line_once(
        erp: OdooConnector, control: SandboxControl) -> None:
    ctx = step("reserve_stock")
    lines = [("SKU-001", 2), ("SKU-007", 12)]
    first = await erp.reserve_stock(ctx, order_ref="order-1", lines=lines)
    again = await erp.reserve_stock(ctx, order_ref="order-1", lines=lines)
    assert first == again == {"picking_id": first["picking_id"], "state": "assigned"}
    state = await control.state("odoo")
    picking = state["pickings"]["order-1"]
    assert picking["state"] == "assigned" and picking["type"] == "outgoing"
    assert [(m["sku"], m["demand"], m["reserved"]) for m in picking["moves"]] == [
        ("SKU-001", 2.0, 2.0), ("SKU-007", 12.0, 12.0)]
    assert state["stock"]["SKU-001"] == {"product_id": 1, "name": "Linen Shirt",
                                         "on_hand": 40.0, "reserved": 2.0, "available": 38.0}
    assert state["stock"]["SKU-007"]["available"] == 0.0
    assert state["creates"]["stock.picking"] == {"order-1": 1}


async def test_reserve_stock_short_of_one_sku_reserves_nothing_and_names_it(
        erp: OdooConnector, control: SandboxControl) -> None:
    with pytest.raises(InsufficientStockError) as caught:
        await erp.reserve_stock(step(), order_ref="order-2",
                                lines=[("SKU-001", 1), ("SKU-OOS", 2)])
    assert "SKU-OOS (2 requested, 0 reservable)" in str(caught.value)
    assert caught.value.shortages == {"SKU-OOS": (2.0, 0.0)}
    assert isinstance(caught.value, PermanentConnectorError)
    state = await control.state("odoo")
    assert state["pickings"]["order-2"]["state"] == "cancel"
    assert state["stock"]["SKU-001"]["reserved"] == 0.0


async def test_release_stock_frees_the_reservation_and_repeats_harmlessly(
        erp: OdooConnector, control: SandboxControl) -> None:
    reserved = await erp.reserve_stock(step(), order_ref="order-3", lines=[("SKU-002", 5)])
    undo = step("reserve_stock")
    await erp.release_stock(undo, reserved["picking_id"])
    await erp.release_stock(undo, reserved["picking_id"])
    state = await control.state("odoo")
    assert state["pickings"]["order-3"]["state"] == "cancel"
    assert state["stock"]["SKU-002"] == {"product_id": 2, "name": "Merino Crew Sweater",
                                         "on_hand": 25.0, "reserved": 0.0, "available": 25.0}


async def test_sale_order_is_created_once_per_order_ref(
        erp: OdooConnector, control: SandboxControl) -> None:
    ctx = step("create_sale_order")
    partner = await erp.find_or_create_partner(ctx, email="buyer@example.com", name="Buyer")
    lines = [{"sku": "SKU-001", "quantity": 2, "unit_price": 55.0},
             {"sku": "SKU-003", "quantity": 1, "unit_price": 24.5}]
    first = await erp.create_sale_order(ctx, order_ref="order-4", partner_id=partner,
                                        lines=lines)
    again = await erp.create_sale_order(ctx, order_ref="order-4", partner_id=partner,
                                        lines=lines)
    assert first == again
    state = await control.state("odoo")
    order = state["sale_orders"]["order-4"]
    assert order["id"] == first and order["state"] == "draft"
    assert order["partner_id"] == partner and order["amount_total"] == 134.5
    assert order["lines"] == [{"sku": "SKU-001", "quantity": 2.0, "unit_price": 55.0},
                              {"sku": "SKU-003", "quantity": 1.0, "unit_price": 24.5}]
    assert state["creates"]["sale.order"] == {"order-4": 1}


async def test_sale_order_confirm_and_cancel_are_idempotent(
        erp: OdooConnector, control: SandboxControl) -> None:
    ctx = step()
    order = await erp.create_sale_order(ctx, order_ref="order-5", partner_id=3, lines=[
        {"sku": "SKU-004", "quantity": 1, "unit_price": 45.0}])
    await erp.confirm_sale_order(ctx, order)
    await erp.confirm_sale_order(ctx, order)
    assert (await control.state("odoo"))["sale_orders"]["order-5"]["state"] == "sale"
    await erp.cancel_sale_order(ctx, order)
    await erp.cancel_sale_order(ctx, order)
    state = await control.state("odoo")
    assert state["sale_orders"]["order-5"]["state"] == "cancel"
    assert state["calls"]["sale.order.action_confirm"] == 1
    assert state["calls"]["sale.order.action_cancel"] == 1


async def test_confirming_a_cancelled_order_is_a_permanent_user_error(
        erp: OdooConnector, control: SandboxControl) -> None:
    ctx = step()
    order = await erp.create_sale_order(ctx, order_ref="order-6", partner_id=3, lines=[
        {"sku": "SKU-004", "quantity": 1, "unit_price": 45.0}])
    await erp.cancel_sale_order(ctx, order)
    with pytest.raises(OdooError) as caught:
        await erp.confirm_sale_order(ctx, order)
    error = caught.value
    assert error.exception == "odoo.exceptions.UserError"
    assert error.operation == "sale.order.action_confirm"
    assert "not in a state requiring confirmation" in str(error)
    assert error.retryable is False


async def test_credit_note_is_created_and_posted_once(
        erp: OdooConnector, control: SandboxControl) -> None:
    ctx = step("credit_note")
    lines = [{"sku": "SKU-005", "quantity": 2, "unit_price": 19.9},
             {"description": "Shipping refund", "quantity": 1, "unit_price": 4.95},
             {"name": "Goodwill", "amount": 5.0}]
    first = await erp.create_credit_note(ctx, ref="refund-1", partner_id=3, lines=lines,
                                         reason="Damaged in transit")
    again = await erp.create_credit_note(ctx, ref="refund-1", partner_id=3, lines=lines,
                                         reason="Damaged in transit")
    assert first == again
    state = await control.state("odoo")
    note = state["credit_notes"]["refund-1"]
    assert note["id"] == first and note["state"] == "posted"
    assert note["name"].startswith("RINV/") and note["reason"] == "Damaged in transit"
    assert note["amount_total"] == 49.75
    assert [(line["sku"], line["name"]) for line in note["lines"]] == [
        ("SKU-005", "[SKU-005] Wool Beanie"), (None, "Shipping refund"), (None, "Goodwill")]
    assert state["creates"]["account.move"] == {"refund-1": 1}
    assert state["calls"]["account.move.action_post"] == 1


async def test_unknown_sku_is_permanent_and_creates_nothing(
        erp: OdooConnector, control: SandboxControl) -> None:
    with pytest.raises(PermanentConnectorError, match="unknown SKU SKU-NOPE"):
        await erp.create_sale_order(step(), order_ref="order-7", partner_id=3, lines=[
            {"sku": "SKU-NOPE", "quantity": 1, "unit_price": 1.0}])
    with pytest.raises(PermanentConnectorError, match="unknown SKU SKU-NOPE"):
        await erp.reserve_stock(step(), order_ref="order-7", lines=[("SKU-NOPE", 1)])
    assert (await control.state("odoo"))["creates"] == {}


async def test_missing_record_is_a_permanent_missing_error(erp: OdooConnector) -> None:
    with pytest.raises(OdooError) as caught:
        await erp.release_stock(step(), 4242)
    assert caught.value.exception == "odoo.exceptions.MissingError"
    assert "stock.picking(4242,)" in str(caught.value)


async def test_wrong_api_key_is_permanent_and_never_echoed(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    for protocol in PROTOCOLS:
        secret = "wrong-key-0123456789"
        async with OdooConnector(settings(sandbox, protocol, api_key=secret)) as erp:
            with pytest.raises(PermanentConnectorError) as caught:
                await erp.count_products(step())
        assert secret not in str(caught.value)
        if protocol == "json2":
            assert isinstance(caught.value, OdooError) and caught.value.status == 401
            assert "werkzeug.exceptions.Unauthorized: Invalid apikey" in str(caught.value)
        else:
            assert "authentication refused for login 'admin'" in str(caught.value)


async def test_a_429_burst_is_absorbed_by_retries(
        erp: OdooConnector, control: SandboxControl) -> None:
    await control.set_faults("odoo", burst_429=2, retry_after_s=0)
    assert await erp.count_products(step()) == 9
    requests = (await control.state("odoo"))["requests"]
    if erp.odoo.protocol == "json2":
        assert requests == {"POST /json/2/product.product/search_count": 3}
    else:  # two 429s, then authenticate and search_count
        assert requests == {"POST /jsonrpc": 4}


async def test_an_outage_raises_transient_and_opens_the_breaker(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    for protocol in PROTOCOLS:
        await control.set_faults("odoo", error_rate=1.0)
        async with OdooConnector(settings(sandbox, protocol, max_retries=1,
                                          breaker_failure_threshold=2)) as erp:
            with pytest.raises(TransientConnectorError) as caught:
                await erp.count_products(step())
            assert not isinstance(caught.value, CircuitOpenError)
            assert "answered 500" in str(caught.value)
            assert erp.breaker.state is BreakerState.OPEN
            with pytest.raises(CircuitOpenError):
                await erp.count_products(step())
        await control.clear_faults("odoo")


# --- the sandbox's own semantics ------------------------------------------------------------


async def test_json2_wrong_key_answers_401_in_odoos_error_format(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    answer = await json2(sandbox, "res.partner", "search", {"domain": []}, key="nope")
    assert answer.status_code == 401
    body = answer.json()
    assert body["name"] == "werkzeug.exceptions.Unauthorized"
    assert body["message"] == "Invalid apikey" and body["arguments"] == ["Invalid apikey", 401]
    assert set(body) == {"name", "message", "arguments", "context", "debug"}


async def test_json2_unknown_model_method_and_arguments_are_refused(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    no_model = await json2(sandbox, "no.such.model", "search", {"domain": []})
    assert no_model.status_code == 404
    assert no_model.json()["message"] == "the model 'no.such.model' does not exist"
    no_method = await json2(sandbox, "res.partner", "action_confirm", {"ids": [3]})
    assert no_method.status_code == 404
    private = await json2(sandbox, "sale.order", "_action_cancel", {"ids": [1]})
    assert private.status_code == 403
    assert private.json()["name"] == "odoo.exceptions.AccessError"
    bad_kwarg = await json2(sandbox, "res.partner", "search", {"domain": [], "colour": "red"})
    assert bad_kwarg.status_code == 422
    assert "unexpected keyword argument 'colour'" in bad_kwarg.json()["message"]
    with_ids = await json2(sandbox, "res.partner", "create", {"ids": [3], "vals_list": []})
    assert with_ids.status_code == 422
    missing = await json2(sandbox, "res.partner", "read", {"ids": [999], "fields": ["name"]})
    assert missing.status_code == 404
    assert missing.json()["name"] == "odoo.exceptions.MissingError"
    bad_field = await json2(sandbox, "res.partner", "search", {"domain": [["colour", "=", 1]]})
    assert bad_field.status_code == 500 and bad_field.json()["name"] == "builtins.ValueError"
    required = await json2(sandbox, "sale.order", "create", {"vals_list": [{}]})
    assert required.status_code == 422
    assert required.json()["name"] == "odoo.exceptions.ValidationError"
    assert "(partner_id)" in required.json()["message"]
    wrong_path = await json2(sandbox, "res.partner", "search/extra", {})
    assert wrong_path.status_code == 404


async def test_jsonrpc_errors_come_inside_http_200(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    refused = await jsonrpc(sandbox, "common", "authenticate", [DATABASE, "admin", "nope", {}])
    assert refused.status_code == 200 and refused.json() == {
        "jsonrpc": "2.0", "id": 7, "result": False}
    uid = (await jsonrpc(sandbox, "common", "authenticate",
                         [DATABASE, "admin", API_KEY, {}])).json()["result"]
    denied = await jsonrpc(sandbox, "object", "execute_kw",
                           [DATABASE, uid, "nope", "res.partner", "search", [[]]])
    assert denied.status_code == 200
    error = denied.json()["error"]
    assert error["code"] == 200 and error["message"] == "Odoo Server Error"
    assert error["data"]["name"] == "odoo.exceptions.AccessDenied"
    no_model = await jsonrpc(sandbox, "object", "execute_kw",
                             [DATABASE, uid, API_KEY, "no.model", "search", [[]]])
    assert no_model.json()["error"]["data"]["name"] == "odoo.exceptions.UserError"
    assert no_model.json()["error"]["data"]["message"] == "Object no.model doesn't exist"
    created = await jsonrpc(sandbox, "object", "execute_kw",
                            [DATABASE, uid, API_KEY, "res.partner", "create",
                             [{"name": "Solo"}]])
    assert isinstance(created.json()["result"], int)  # a dict creates one: its id
    positional = await jsonrpc(sandbox, "object", "execute",
                               [DATABASE, uid, API_KEY, "res.partner", "search_count",
                                [["name", "=", "Solo"]]])
    assert positional.json()["result"] == 1


async def test_cancelling_a_confirmed_order_without_the_flag_returns_the_wizard(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    created = await json2(sandbox, "sale.order", "create", {"vals_list": [{
        "partner_id": 3, "order_line": [[0, 0, {"product_id": 1, "product_uom_qty": 1}]]}]})
    order_id = created.json()[0]
    await json2(sandbox, "sale.order", "action_confirm", {"ids": [order_id]})
    wizard = await json2(sandbox, "sale.order", "action_cancel", {"ids": [order_id]})
    assert wizard.status_code == 200 and wizard.json()["res_model"] == "sale.order.cancel"
    states = await json2(sandbox, "sale.order", "read", {"ids": [order_id], "fields": ["state"]})
    assert states.json() == [{"id": order_id, "state": "sale"}]


async def test_domains_support_prefix_operators_and_comparisons(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    async def skus(domain: list[Any]) -> list[str]:
        rows = await json2(sandbox, "product.product", "search_read",
                           {"domain": domain, "fields": ["default_code"]})
        assert rows.status_code == 200, rows.text
        return [r["default_code"] for r in rows.json()]

    assert await skus(["|", ["default_code", "=", "SKU-001"], ["name", "ilike", "jacket"]]) \
        == ["SKU-001", "SKU-007"]
    assert await skus([["list_price", ">", 100], ["qty_available", "<", 1]]) == ["SKU-OOS"]
    assert await skus([["default_code", "in", ["SKU-002", "SKU-003"]],
                       "!", ["default_code", "=", "SKU-003"]]) == ["SKU-002"]
    assert await skus([["default_code", "=like", "SKU-00_"], ["qty_available", "!=", 0],
                       ["list_price", "<", 20]]) == ["SKU-005", "SKU-008"]
    partners = await json2(sandbox, "res.partner", "search_count", {"domain": []})
    archived = await json2(sandbox, "res.partner", "search_count",
                           {"domain": [["active", "=", False]]})
    assert (partners.json(), archived.json()) == (3, 1)


async def test_writing_qty_available_sets_stock_on_hand(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    written = await json2(sandbox, "product.product", "write",
                          {"ids": [9], "vals": {"qty_available": 3}})
    assert written.json() is True
    state = await control.state("odoo")
    assert state["stock"]["SKU-OOS"] == {"product_id": 9, "name": "Limited Edition Scarf",
                                         "on_hand": 3.0, "reserved": 0.0, "available": 3.0}


async def test_injected_errors_use_odoos_format_and_rate_limit_headers(
        sandbox: SandboxServer, control: SandboxControl) -> None:
    await control.set_faults("odoo", burst_429=1, retry_after_s=2)
    limited = await json2(sandbox, "res.partner", "search", {"domain": []})
    assert limited.status_code == 429 and limited.headers["retry-after"] == "2"
    assert limited.json()["name"] == "werkzeug.exceptions.TooManyRequests"
    await control.set_faults("odoo", error_rate=1.0)
    failed = await json2(sandbox, "res.partner", "search", {"domain": []})
    assert failed.status_code == 500
    assert failed.json()["name"] == "werkzeug.exceptions.InternalServerError"


# --- error mapping the sandbox cannot produce on demand -----------------------------------


def mocked(protocol: str, answer: Any, status: int = 200) -> OdooConnector:
    def handler(request: httpx.Request) -> httpx.Response:
        if b'"authenticate"' in request.content:
            return httpx.Response(200, json={"jsonrpc": "2.0", "id": 1, "result": 2})
        return httpx.Response(status, json=answer)

    s = load_settings(OdooSettings, base_url="https://erp.example", database="db",
                      api_key=API_KEY, protocol=protocol, max_retries=2, retry_initial_s=0,
                      retry_max_s=0)
    return OdooConnector(s, transport=httpx.MockTransport(handler))


def rpc_error(name: str, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 2, "error": {
        "code": 200, "message": "Odoo Server Error",
        "data": {"name": name, "message": message, "arguments": [message], "context": {},
                 "debug": ""}}}


async def test_jsonrpc_serialization_failure_is_transient() -> None:
    erp = mocked("jsonrpc", rpc_error(
        "psycopg2.errors.SerializationFailure",
        "could not serialize access due to concurrent update"))
    async with erp:
        with pytest.raises(TransientConnectorError, match="could not serialize"):
            await erp.count_products(step())


async def test_jsonrpc_validation_error_is_permanent_and_named() -> None:
    erp = mocked("jsonrpc", rpc_error("odoo.exceptions.ValidationError", "Bad VAT"))
    async with erp:
        with pytest.raises(OdooError) as caught:
            await erp.count_products(step())
    assert str(caught.value) == ("odoo: product.product.search_count refused: "
                                 "odoo.exceptions.ValidationError: Bad VAT")
    assert erp.breaker.state is BreakerState.CLOSED


async def test_json2_request_bug_is_permanent_but_a_server_crash_is_transient() -> None:
    bug = {"name": "builtins.ValueError", "message": "Invalid field 'x'", "arguments": [],
           "context": {}, "debug": ""}
    async with mocked("json2", bug, status=500) as erp:
        with pytest.raises(OdooError, match="builtins.ValueError"):
            await erp.count_products(step())
    crash = {**bug, "name": "psycopg2.OperationalError", "message": "server closed"}
    async with mocked("json2", crash, status=500) as erp:
        with pytest.raises(TransientConnectorError):
            await erp.count_products(step())


# --- settings -------------------------------------------------------------------------------


def test_missing_settings_name_the_variables() -> None:
    with pytest.raises(ConnectorConfigError) as caught:
        load_settings(OdooSettings)
    assert "HUB_ODOO_BASE_URL: Field required" in str(caught.value)
    assert "HUB_ODOO_DATABASE: Field required" in str(caught.value)
    with pytest.raises(ConnectorConfigError, match="HUB_ODOO_API_KEY or HUB_ODOO_API_KEY_FILE "
                                                   "is required"):
        load_settings(OdooSettings, base_url="http://odoo.test", database="db")


def test_an_unknown_protocol_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HUB_ODOO_PROTOCOL", "xmlrpc")
    with pytest.raises(ConnectorConfigError, match="HUB_ODOO_PROTOCOL"):
        load_settings(OdooSettings, base_url="http://odoo.test", database="db", api_key="k")


async def test_the_container_builds_erp_from_the_sandbox_env_and_a_key_file(
        sandbox: SandboxServer, control: SandboxControl, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "odoo-key"
    key_file.write_text(API_KEY + "\n")
    for name, value in sandbox.connector_env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("HUB_ODOO_API_KEY")
    monkeypatch.setenv("HUB_ODOO_API_KEY_FILE", str(key_file))
    monkeypatch.setenv("HUB_ODOO_PROTOCOL", "jsonrpc")
    container = Container()
    erp = container.resolve("erp")
    try:
        assert isinstance(erp, OdooConnector)
        assert await erp.count_products(step()) == 9
    finally:
        await container.aclose()

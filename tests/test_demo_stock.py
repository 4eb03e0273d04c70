"""The demo's warehouse keeps its products in stock, however many orders the demo sends."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from connectors import load_settings
from connectors.odoo import InsufficientStockError, OdooConnector, OdooSettings
from hub.cli.demo import SKUS, Stockroom
from hub.sandbox import SandboxServer
from hub.sandbox.odoo import API_KEY, DATABASE, OdooSandbox


@pytest.fixture
def odoo() -> Iterator[SandboxServer]:
    server = SandboxServer([OdooSandbox(seed=3)]).start_in_thread()
    yield server
    server.stop_thread()


@pytest.fixture
async def erp(odoo: SandboxServer) -> AsyncIterator[OdooConnector]:
    settings = load_settings(OdooSettings, base_url=odoo.url("odoo"), database=DATABASE,
                             api_key=API_KEY, retry_initial_s=0, retry_max_s=0)
    async with OdooConnector(settings) as connector:
        yield connector


async def _stock(erp: OdooConnector) -> dict[str, float]:
    rows = await erp.list_products(None, fields=["default_code", "free_qty"])
    return {str(r["default_code"]): float(r["free_qty"] or 0) for r in rows}


async def test_orders_beyond_the_seeded_stock_are_served_after_restocking(
        erp: OdooConnector) -> None:
    stockroom = Stockroom(SKUS, low=4, top_up=10)
    seeded = (await _stock(erp))["SKU-007"]
    orders = 40  # two rain jackets each: several times the seeded stock
    assert orders * 2 > seeded * 3
    for n in range(orders):
        await erp.reserve_stock(None, order_ref=f"demo-stock-{n}", lines=[("SKU-007", 2)])
        await stockroom.restock(erp)
    assert stockroom.restocked["SKU-007"] >= (orders * 2 - seeded) // 10
    after = await _stock(erp)
    assert after["SKU-007"] >= 4, "topped up whenever it ran low"
    assert after["SKU-OOS"] == 0 and "SKU-OOS" not in stockroom.restocked, \
        "the SKU sold out on purpose stays sold out"


async def test_without_restocking_the_same_orders_run_out(erp: OdooConnector) -> None:
    with pytest.raises(InsufficientStockError, match="SKU-007"):
        for n in range(40):
            await erp.reserve_stock(None, order_ref=f"demo-stock-{n}", lines=[("SKU-007", 2)])

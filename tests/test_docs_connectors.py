"""docs/connectors.md's walk-through, run as written: its carrier connector in one file."""

from __future__ import annotations

import json
import re
import sys
import types
from collections.abc import Iterator

import httpx
import pytest

from connectors.base import load_settings
from hub import Container, PermanentConnectorError, StepContext
from hub.engine.context import PROVIDERS
from tests.conftest import ROOT


@pytest.fixture
def carrier_module() -> Iterator[types.ModuleType]:
    text = (ROOT / "docs" / "connectors.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    source = next(b for b in blocks if "class CarrierConnector" in b)
    module = types.ModuleType("connectors.carrier")
    sys.modules[module.__name__] = module
    try:
        exec(compile(source, "docs/connectors.md", "exec"), module.__dict__)
        yield module
    finally:
        sys.modules.pop(module.__name__, None)
        PROVIDERS.pop("carrier", None)


async def test_the_walk_through_connector_books_and_cancels(
        carrier_module: types.ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[httpx.Request] = []

    def carrier(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.path == "/v1/shipments":
            return httpx.Response(201, json={"id": "shp_1", "status": "booked",
                                             "tracking": "CX123"})
        if request.url.path == "/v1/shipments/shp_1/cancel":
            return httpx.Response(200, json={"id": "shp_1", "status": "cancelled"})
        return httpx.Response(404, json={"error": "no such shipment"})

    settings = load_settings(carrier_module.CarrierSettings,
                             base_url="https://carrier.example", api_key="ck_test")
    ctx = StepContext.make(execution_id="e1", transaction_id="t1", workflow="w",
                           step="book-parcel", attempt=1, container=Container())
    async with carrier_module.CarrierConnector(
            settings, transport=httpx.MockTransport(carrier)) as connector:
        parcel = await connector.book(ctx, order_id="ord-1", address={"city": "Berlin"},
                                      weight_g=800)
        assert parcel == {"id": "shp_1", "tracking": "CX123"}
        await connector.cancel(ctx, "shp_1")
        with pytest.raises(PermanentConnectorError, match="404"):
            await connector.cancel(ctx, "shp_2")
    assert seen[0].headers["Idempotency-Key"] == "e1:book-parcel"
    assert seen[0].headers["Authorization"] == "Bearer ck_test"
    assert json.loads(seen[0].content)["reference"] == "ord-1"

    # registered in every hub's container under "carrier", built from HUB_CARRIER_*
    monkeypatch.setenv("HUB_CARRIER_BASE_URL", "https://carrier.example")
    monkeypatch.setenv("HUB_CARRIER_API_KEY", "ck_test")
    container = Container()
    assert isinstance(container.resolve("carrier"), carrier_module.CarrierConnector)
    await container.aclose()

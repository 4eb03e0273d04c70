"""The catalogue: ``sync-product`` copies a product from the ERP (the source of truth) to the
CMS when it changes; ``sync-catalogue-page`` does so for a whole page of products, a bounded
number at a time; ``stock-reconcile`` compares stock between the two every night."""

from __future__ import annotations

from typing import Any

import structlog

from hub import (
    StepContext,
    StepResponse,
    WorkflowResponse,
    create_step,
    create_workflow,
    map_each,
    scheduled,
    transform,
)
from workflows.events import CataloguePage, ProductUpdated
from workflows.systems import CONNECTOR_STEP, cms, erp

log = structlog.get_logger("workflows.catalog")


def cms_fields(product: dict[str, Any]) -> dict[str, Any]:
    """An ERP product as the CMS's product entry fields."""
    return {
        "sku": product["default_code"],
        "name": product["name"],
        "description": product.get("description_sale") or "",
        "price": round(float(product["list_price"]), 2),
        "stock": int(product["qty_available"]),
    }


@create_step("read-erp-product", **CONNECTOR_STEP)
async def read_erp_product(event: ProductUpdated, ctx: StepContext,
                           ) -> StepResponse[dict[str, Any]]:
    product = await erp(ctx).get_product(ctx, event.sku)
    if product is None:
        return StepResponse.permanent_failure(f"product {event.sku!r} is not in the ERP")
    return StepResponse(cms_fields(product))


@create_step("write-cms-entry", **CONNECTOR_STEP, no_compensation=True)
async def write_cms_entry(fields: dict[str, Any], ctx: StepContext,
                          ) -> StepResponse[dict[str, Any]]:
    entry = await cms(ctx).upsert_product(ctx, sku=fields["sku"], fields=fields)
    return StepResponse({"sku": fields["sku"], **entry})


@create_workflow("sync-product")
def sync_product(event: ProductUpdated) -> WorkflowResponse:
    fields = read_erp_product(event)
    return WorkflowResponse(write_cms_entry(fields))


@create_step("publish-entry", **CONNECTOR_STEP, no_compensation=True,
             skip_on_permanent_failure=True)
async def publish_entry(item: dict[str, Any], ctx: StepContext,
                        ) -> StepResponse[dict[str, Any]]:
    """One product of a page: read from the ERP, published in the CMS. A SKU the ERP does
    not know is skipped (its result is None), not a reason to fail the page."""
    product = await erp(ctx).get_product(ctx, item["sku"])
    if product is None:
        return StepResponse.permanent_failure(f"product {item['sku']!r} is not in the ERP")
    fields = cms_fields(product)
    entry = await cms(ctx).upsert_product(ctx, sku=fields["sku"], fields=fields)
    return StepResponse({"sku": fields["sku"], **entry})


def _page_items(page: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"sku": sku} for sku in page["skus"]]


def _item_sku(item: dict[str, Any]) -> str:
    return str(item["sku"])


@create_workflow("sync-catalogue-page")
def sync_catalogue_page(page: CataloguePage) -> WorkflowResponse:
    """A page of the catalogue (up to 1,000 SKUs), published at most 8 entries at a time,
    so the CMS's rate limit is respected and one slow entry does not hold the others."""
    entries = map_each(transform(page, _page_items, name="page-items"), publish_entry,
                       key=_item_sku, max_concurrency=8, name="publish-entries")
    return WorkflowResponse(entries)


@create_step("compare-stock", **CONNECTOR_STEP)
async def compare_stock(_inp: Any, ctx: StepContext) -> StepResponse[dict[str, Any]]:
    erp_products = await erp(ctx).list_products(ctx)
    cms_entries = await cms(ctx).list_products(ctx)
    erp_stock = {p["default_code"]: int(p["qty_available"]) for p in erp_products
                 if p.get("default_code")}
    cms_stock = {e["fields"]["sku"]: e["fields"].get("stock") for e in cms_entries
                 if e["fields"].get("sku")}
    drift = [{"sku": sku, "erp": erp_stock[sku], "cms": cms_stock[sku]}
             for sku in sorted(erp_stock.keys() & cms_stock.keys())
             if cms_stock[sku] != erp_stock[sku]]
    report = {
        "checked": len(erp_stock.keys() & cms_stock.keys()),
        "drift": drift,
        "missing_in_cms": sorted(erp_stock.keys() - cms_stock.keys()),
        "unknown_to_erp": sorted(cms_stock.keys() - erp_stock.keys()),
    }
    if drift or report["missing_in_cms"] or report["unknown_to_erp"]:
        log.warning("stock_drift", drifted=len(drift), missing_in_cms=report["missing_in_cms"],
                    unknown_to_erp=report["unknown_to_erp"], execution_id=ctx.execution_id)
    return StepResponse(report)


@create_workflow("stock-reconcile")
def stock_reconcile(_inp: Any) -> WorkflowResponse:
    return WorkflowResponse(compare_stock(None))


nightly_stock_reconcile = scheduled("0 2 * * *", name="stock-reconcile",
                                    workflow=stock_reconcile, timezone="Europe/Berlin",
                                    misfire="once")
"""Every night at 2:00 shop time; after downtime, one catch-up run, not one per missed night."""

"""The catalogue: ``sync-product`` copies a product from the ERP (the source of truth) to the
CMS when it changes; ``stock-reconcile`` compares stock between the two every night."""

from __future__ import annotations

from typing import Any

import structlog

from hub import (
    StepContext,
    StepResponse,
    WorkflowResponse,
    create_step,
    create_workflow,
    scheduled,
)
from workflows.events import ProductUpdated
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

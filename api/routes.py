"""Custom routes of this project, next to the hub's built-in ones.

Add a route by decorating a function with ``router``; the hub and the caller's API key come
from ``hub.api``'s dependencies, exactly as for the built-in routes. The tutorial route runs
the hello-world workflow, like Medusa's ``GET /workflow`` route; the second one counts
the ERP's products through the ``erp`` connector.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel

from hub import Hub
from hub.api import ApiKey, api_trigger, get_hub, require_scope
from workflows.hello_world import erp_product_count, hello_world

router = APIRouter(tags=["custom"])


class HelloWorldResult(BaseModel):
    message: str


@router.get("/workflow", response_model=HelloWorldResult, summary="Run hello-world")
async def run_hello_world(
    request: Request,
    hub: Annotated[Hub, Depends(get_hub)],
    key: Annotated[ApiKey, Depends(require_scope("run"))],
) -> HelloWorldResult:
    """Runs the tutorial workflow for John and answers its result."""
    run = await hello_world(hub).run(input={"name": "John"},
                                     trigger=api_trigger(request, key))
    return HelloWorldResult.model_validate(run.result)


class ProductCount(BaseModel):
    count: int


@router.get("/erp/products/count", response_model=ProductCount,
            summary="Count the ERP's products",
            responses={502: {"description": "the ERP could not be read"}})
async def count_erp_products(
    request: Request,
    hub: Annotated[Hub, Depends(get_hub)],
    key: Annotated[ApiKey, Depends(require_scope("run"))],
) -> ProductCount:
    """Runs a workflow whose step resolves the ERP connector from the container; 502 when
    the ERP cannot be read."""
    run = await erp_product_count(hub).run(input=None, trigger=api_trigger(request, key),
                                           raise_on_error=False)
    if run.status != "succeeded":
        message = (run.error or {}).get("message", run.status)
        raise HTTPException(502, detail=f"the ERP could not be read: {message}")
    return ProductCount.model_validate(run.result)

"""The tutorial workflows (README): two steps, one reading the input; then a step that
reaches the ERP through a connector resolved from the container."""

from pydantic import BaseModel

import workflows.systems  # noqa: F401 - registers the connectors (erp, ...)
from hub import StepContext, StepResponse, WorkflowResponse, create_step, create_workflow


class WorkflowInput(BaseModel):
    name: str


step1 = create_step("step-1", lambda _inp, _ctx: StepResponse("Hello from step one!"))


@create_step("step-2")
async def step2(inp: WorkflowInput, ctx: StepContext) -> StepResponse[str]:
    return StepResponse(f"Hello {inp.name} from step two!")


@create_workflow("hello-world")
def hello_world(inp: WorkflowInput) -> WorkflowResponse:
    step1()
    return WorkflowResponse({"message": step2(inp)})


@create_step("count-erp-products", max_retries=3, retry_interval=0.5)
async def count_erp_products(_inp: None, ctx: StepContext) -> StepResponse[int]:
    """The tutorial's second step: a connector resolved from the container by name."""
    erp = ctx.container.resolve("erp")
    return StepResponse(await erp.count_products(ctx))


@create_workflow("erp-product-count")
def erp_product_count(_inp: None) -> WorkflowResponse:
    return WorkflowResponse({"count": count_erp_products(None)})

"""The tutorial workflow (README): two steps, one reading the input."""

from pydantic import BaseModel

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

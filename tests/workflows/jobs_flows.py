"""A scheduled job for the jobs surface tests (CLI and API)."""

from __future__ import annotations

from hub import WorkflowResponse, create_step, create_workflow, scheduled


@create_workflow("tj-nightly-report")
def tj_nightly_report(inp: dict[str, str]) -> WorkflowResponse:
    return WorkflowResponse(create_step("tj-report", lambda i, c: {"for": i["day"]})(inp))


scheduled("0 2 * * *", name="tj-nightly", workflow="tj-nightly-report",
          timezone="Europe/Berlin", input=lambda tick: {"day": tick.date().isoformat()})

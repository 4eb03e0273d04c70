"""The public surface is pinned: a change to it is a reviewed diff of this list."""

from __future__ import annotations

import hub

PUBLIC = [
    "AuditRecord", "ConnectorCall", "Container", "DefinitionError", "ExecutionEvent",
    "ExecutionNotFound", "Hub", "HubError",
    "HubSettings", "InputValidationError", "InvalidTransition", "PayloadTooLarge",
    "PermanentConnectorError", "PermanentStepError", "Run", "RunStatus", "StepContext",
    "StepDefinition", "StepError", "StepResponse", "StepRun", "StepState", "SubscriberContext",
    "TransientConnectorError", "UnknownWorkflow", "WorkflowDefinition", "WorkflowFailed",
    "WorkflowResponse", "acquire_lock_step", "create_hook", "create_step", "create_workflow",
    "emit_event_step", "map_each", "parallelize", "provides", "release_lock_step", "run_child",
    "scheduled", "sleep", "sleep_until", "subscriber",
    "transform", "when",
]


def test_public_api_is_pinned() -> None:
    assert hub.__all__ == PUBLIC
    assert sorted(hub.__all__) == hub.__all__
    for name in PUBLIC:
        assert getattr(hub, name) is not None

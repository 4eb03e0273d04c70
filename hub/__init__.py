"""The integration hub's public API: the workflow SDK and the ``Hub`` that runs it."""

from hub.engine.calls import ConnectorCall as ConnectorCall
from hub.engine.context import Container as Container
from hub.engine.context import StepContext as StepContext
from hub.engine.context import provides as provides
from hub.engine.hub import ExecutionEvent as ExecutionEvent
from hub.engine.hub import Hub as Hub
from hub.engine.response import StepResponse as StepResponse
from hub.engine.response import WorkflowResponse as WorkflowResponse
from hub.engine.run import Run as Run
from hub.engine.run import RunStatus as RunStatus
from hub.engine.run import StepRun as StepRun
from hub.engine.run import StepState as StepState
from hub.errors import DefinitionError as DefinitionError
from hub.errors import ExecutionNotFound as ExecutionNotFound
from hub.errors import HubError as HubError
from hub.errors import InputValidationError as InputValidationError
from hub.errors import InvalidTransition as InvalidTransition
from hub.errors import PayloadTooLarge as PayloadTooLarge
from hub.errors import PermanentConnectorError as PermanentConnectorError
from hub.errors import PermanentStepError as PermanentStepError
from hub.errors import StepError as StepError
from hub.errors import TransientConnectorError as TransientConnectorError
from hub.errors import UnknownWorkflow as UnknownWorkflow
from hub.errors import WorkflowFailed as WorkflowFailed
from hub.runtime.scheduler import scheduled as scheduled
from hub.runtime.subscriber import SubscriberContext as SubscriberContext
from hub.runtime.subscriber import subscriber as subscriber
from hub.sdk.children import run_child as run_child
from hub.sdk.compose import parallelize as parallelize
from hub.sdk.compose import transform as transform
from hub.sdk.compose import when as when
from hub.sdk.events import emit_event_step as emit_event_step
from hub.sdk.fanout import map_each as map_each
from hub.sdk.hooks import create_hook as create_hook
from hub.sdk.locks import acquire_lock_step as acquire_lock_step
from hub.sdk.locks import release_lock_step as release_lock_step
from hub.sdk.sleep import sleep as sleep
from hub.sdk.sleep import sleep_until as sleep_until
from hub.sdk.step import StepDefinition as StepDefinition
from hub.sdk.step import create_step as create_step
from hub.sdk.workflow import WorkflowDefinition as WorkflowDefinition
from hub.sdk.workflow import create_workflow as create_workflow
from hub.settings import HubSettings as HubSettings
from hub.store.store import AuditRecord as AuditRecord

__all__ = [
    "AuditRecord",
    "ConnectorCall",
    "Container",
    "DefinitionError",
    "ExecutionEvent",
    "ExecutionNotFound",
    "Hub",
    "HubError",
    "HubSettings",
    "InputValidationError",
    "InvalidTransition",
    "PayloadTooLarge",
    "PermanentConnectorError",
    "PermanentStepError",
    "Run",
    "RunStatus",
    "StepContext",
    "StepDefinition",
    "StepError",
    "StepResponse",
    "StepRun",
    "StepState",
    "SubscriberContext",
    "TransientConnectorError",
    "UnknownWorkflow",
    "WorkflowDefinition",
    "WorkflowFailed",
    "WorkflowResponse",
    "acquire_lock_step",
    "create_hook",
    "create_step",
    "create_workflow",
    "emit_event_step",
    "map_each",
    "parallelize",
    "provides",
    "release_lock_step",
    "run_child",
    "scheduled",
    "sleep",
    "sleep_until",
    "subscriber",
    "transform",
    "when",
]

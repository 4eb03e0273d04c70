"""The outbox: events not yet published, and an operator's retry of one.

A row the relay could not publish is retried with backoff, or failed with the reason (too
large, an illegal or unknown topic, out of attempts); a failed row stays here, never purged,
until an operator makes it due again.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from hub.api.auth import OperateKey, ReadKey, ServiceDep
from hub.api.models import ErrorBody, OutboxPage, OutboxRetried, OutboxState
from hub.api.problems import ERROR_RESPONSES
from hub.api.service import Actor

router = APIRouter(tags=["outbox"])

_RETRY: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    202: {"description": "made due: the relay publishes it next"},
    404: {"model": ErrorBody, "description": "no such outbox event (or purged once sent)"},
    409: {"model": ErrorBody, "description": "the event was already published"},
}


@router.get("/outbox", response_model=OutboxPage, responses=ERROR_RESPONSES,
            summary="List events not yet published, newest first")
async def list_outbox(
    service: ServiceDep,
    key: ReadKey,
    state: Annotated[OutboxState | None, Query(
        description="pending, retrying or failed (default: all three; published events are "
                    "on their execution)")] = None,
    cursor: Annotated[str | None, Query(
        max_length=500, description="`next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> OutboxPage:
    """Each event with its topic, key, state, publish attempts, next attempt and the reason
    its last publish failed."""
    return await service.outbox(state=state, cursor=cursor, limit=limit)


@router.post("/outbox/{id}/retry", response_model=OutboxRetried, status_code=202,
             responses=_RETRY, summary="Publish a failed (or backing-off) event again")
async def retry_outbox_event(
    event_id: Annotated[uuid.UUID, Path(alias="id", description="the event's id")],
    response: Response, service: ServiceDep, key: OperateKey,
) -> OutboxRetried:
    """Makes the event due now, its attempts counted afresh; audited. Fix the cause first
    (the topic, the broker's size limit): a refused event fails again."""
    done = await service.retry_outbox([str(event_id)], actor=Actor.of_key(key, "api"))
    response.headers["Location"] = "/outbox"
    return done

"""Dead letters: records the subscribers could not handle, read a bounded page at a time.

A dead-letter topic can hold millions of records (a producer bug upstream): a page reads at
most ``limit`` of them (and 4 MiB), from the cursor's offsets, and the counts come from the
topics' offsets, so neither request grows with the topic.
"""

from __future__ import annotations

import dataclasses
from typing import Annotated

from fastapi import APIRouter, Query

from hub.api.auth import ReadKey, ServiceDep
from hub.api.models import DeadLetterCount, DeadLetterOut, DeadLetterPage
from hub.api.problems import BROKER_RESPONSES, ERROR_RESPONSES
from hub.errors import BrokerUnavailable

router = APIRouter(tags=["dead letters"])


@router.get("/dead-letters", response_model=DeadLetterPage,
            responses={**ERROR_RESPONSES, **BROKER_RESPONSES},
            summary="List a page of dead letters of one dead-letter topic, oldest first")
async def list_dead_letters(
    service: ServiceDep,
    key: ReadKey,
    topic: Annotated[str | None, Query(
        max_length=300, description="a dead-letter topic of topics.yaml (default: the "
                                    "first)")] = None,
    cursor: Annotated[str | None, Query(
        max_length=4000, description="`next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> DeadLetterPage:
    """Each letter with its original position, stage, reason, payload and headers
    (redacted) and its redrives."""
    page = await service.dead_letters(topic, cursor=cursor, limit=limit)
    return DeadLetterPage(topic=page.topic, topics=page.topics, next=page.next,
                          items=[DeadLetterOut(**dataclasses.asdict(d)) for d in page.items])


@router.get("/dead-letters/counts", response_model=dict[str, DeadLetterCount],
            responses={**ERROR_RESPONSES, **BROKER_RESPONSES},
            summary="Dead letters held per dead-letter topic")
async def count_dead_letters(service: ServiceDep, key: ReadKey) -> dict[str, DeadLetterCount]:
    """From each topic's offsets (cached for a few seconds); ``approximate`` on compacted
    topics."""
    observed = await service.dead_letter_count()
    if observed.error is not None:
        raise BrokerUnavailable(observed.error)
    return {name: DeadLetterCount(held=c.held, redriven=c.redriven, waiting=c.waiting,
                                  approximate=c.approximate)
            for name, c in (observed.value or {}).items()}

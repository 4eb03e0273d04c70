"""The subscriber of the scale-out tests' workers (``HUB_KAFKA_SUBSCRIBERS``): every event
on ``scale.jobs`` starts ``scale-three-steps``, once per event id. Kept apart from the
workflow, so that the test process, which imports the workflow, registers no subscriber."""

from __future__ import annotations

from hub import SubscriberContext, subscriber
from tests.workflows.scale_common import TOPIC
from tests.workflows.scale_flows import Job, scale_three_steps


@subscriber(TOPIC, name="scale_on_job")
async def on_job(event: Job, ctx: SubscriberContext) -> None:
    await scale_three_steps(ctx.hub).run(input=event, transaction_id=f"scale:{event.id}",
                                         wait=False)

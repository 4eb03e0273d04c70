"""``sync-customer``: a customer registered in the shop becomes a CRM contact (upserted by
email, so a repeated event, or a customer the sales team added first, makes no duplicate)."""

from __future__ import annotations

from typing import Any

from hub import StepContext, StepResponse, WorkflowResponse, create_step, create_workflow
from workflows.events import CustomerCreated
from workflows.systems import CONNECTOR_STEP, crm


@create_step("upsert-contact", **CONNECTOR_STEP, no_compensation=True)
async def upsert_contact(customer: CustomerCreated, ctx: StepContext,
                         ) -> StepResponse[dict[str, Any]]:
    properties = {"firstname": customer.first_name, "lastname": customer.last_name}
    if customer.phone:
        properties["phone"] = customer.phone
    contact_id = await crm(ctx).upsert_contact(
        ctx, email=customer.email, properties={k: v for k, v in properties.items() if v})
    return StepResponse({"contact_id": contact_id, "email": customer.email})


@create_workflow("sync-customer")
def sync_customer(customer: CustomerCreated) -> WorkflowResponse:
    return WorkflowResponse(upsert_contact(customer))

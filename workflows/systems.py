"""Typed access to the connectors in a step's container, and the retry policy their steps use.

Importing this module imports the connectors, whose ``@provides`` factories register them:
``erp`` (Odoo), ``payments`` (Stripe), ``crm`` (HubSpot), ``cms`` (Contentful). Which real or
sandbox system each points at is configuration (``HUB_ODOO_BASE_URL``, ...).
"""

from __future__ import annotations

from typing import Any, cast

from connectors.contentful import ContentfulConnector
from connectors.hubspot import HubSpotConnector
from connectors.odoo import OdooConnector
from connectors.stripe import StripeConnector
from hub import StepContext

CONNECTOR_STEP: dict[str, Any] = {
    "max_retries": 8, "retry_interval": 0.5, "backoff": 2.0, "max_retry_interval": 20.0,
}
"""Step options for a step that calls an outside system: the connector retries briefly in
process; these engine retries (about 90 s in all, each after the lease-safe checkpoint)
outlast an outage of a minute or so before the workflow gives up and compensates."""


def erp(ctx: StepContext) -> OdooConnector:
    return cast(OdooConnector, ctx.container.resolve("erp"))


def payments(ctx: StepContext) -> StripeConnector:
    return cast(StripeConnector, ctx.container.resolve("payments"))


def crm(ctx: StepContext) -> HubSpotConnector:
    return cast(HubSpotConnector, ctx.container.resolve("crm"))


def cms(ctx: StepContext) -> ContentfulConnector:
    return cast(ContentfulConnector, ctx.container.resolve("cms"))

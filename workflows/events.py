"""The commerce events the hub consumes and publishes: the contract in topics.yaml.

Every event carries ``schema_version``; a consumer refuses a version it does not know (the
event goes to the dead-letter topic with the reason) rather than misreading it. Amounts are
integers in minor units (cents), as payment systems count them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Email = str  # kept loose: shops send what their customers typed; the CRM validates


class Event(BaseModel):
    """Base of every event: unknown fields are ignored, so producers may add fields first."""

    model_config = ConfigDict(extra="ignore")

    schema_version: Literal[1] = 1


class OrderLine(BaseModel):
    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0, le=10_000)
    unit_price: int = Field(ge=0, description="minor units (cents)")


class OrderPlaced(Event):
    """``order.placed``: published by the shop when a customer places an order."""

    id: str = Field(min_length=1, max_length=64)
    customer_email: Email = Field(min_length=3, max_length=254)
    customer_name: str = Field(default="", max_length=200)
    currency: str = Field(min_length=3, max_length=3)
    lines: list[OrderLine] = Field(min_length=1, max_length=200)
    total: int = Field(ge=0, description="minor units; must equal the sum of the lines")
    payment_method: str = Field(
        default="pm_card_visa", max_length=200,
        description="the payment method the shop tokenised with the payment provider")


class OrderConfirmed(Event):
    """``order.confirmed``: the hub reserved stock, took payment and booked the order."""

    order_id: str
    total: int
    currency: str
    customer_email: Email
    payment_intent_id: str
    sales_order_id: int
    deal_id: str


class OrderFailed(Event):
    """``order.failed``: the order could not be fulfilled; every step done was undone."""

    order_id: str
    reason: str
    failed_step: str | None = None


class ShipmentConfirmation(BaseModel):
    """What the warehouse sends to complete the ``await-shipment`` step (signed webhook)."""

    model_config = ConfigDict(extra="ignore")

    tracking_number: str = Field(min_length=1, max_length=100)
    carrier: str = Field(min_length=1, max_length=100)


class OrderShipped(Event):
    """``order.shipped``: the warehouse shipped the order and the CRM deal was won."""

    order_id: str
    tracking_number: str
    carrier: str


class ProductUpdated(Event):
    """``product.updated``: published by the ERP when a product changes. The ERP stays the
    source of truth: the hub reads the product from it rather than trusting the event."""

    sku: str = Field(min_length=1, max_length=64)
    name: str | None = None
    price: int | None = Field(default=None, ge=0)
    stock: int | None = None


class CataloguePage(Event):
    """A page of the catalogue to publish (an operator's or a scheduled bulk sync)."""

    skus: list[str] = Field(min_length=1, max_length=1000)


class CustomerCreated(Event):
    """``customer.created``: a customer registered in the shop."""

    id: str = Field(min_length=1, max_length=64)
    email: Email = Field(min_length=3, max_length=254)
    first_name: str = Field(default="", max_length=100)
    last_name: str = Field(default="", max_length=100)
    phone: str | None = Field(default=None, max_length=40)


class RefundRequested(Event):
    """``refund.requested``: the shop's support team granted a refund on an order."""

    id: str = Field(min_length=1, max_length=64, description="the refund request's id")
    order_id: str = Field(min_length=1, max_length=64)
    amount: int | None = Field(default=None, gt=0,
                               description="minor units; unset: everything captured")
    reason: str = Field(default="requested_by_customer", max_length=500)

"""The commerce events the hub consumes and publishes (the contract in topics.yaml)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class OrderLine(BaseModel):
    sku: str
    quantity: int = Field(gt=0)
    unit_price: int = Field(ge=0, description="minor units (cents)")


class OrderPlaced(BaseModel):
    """Published by the shop when a customer places an order (schema version 1)."""

    id: str
    customer_email: str
    currency: str = Field(min_length=3, max_length=3)
    lines: list[OrderLine] = Field(min_length=1)
    total: int = Field(ge=0, description="minor units; must equal the sum of the lines")


class ProductUpdated(BaseModel):
    """Published by the PIM/ERP when a product changes (schema version 1)."""

    sku: str
    name: str
    price: int = Field(ge=0)
    stock: int | None = None


class OrderConfirmed(BaseModel):
    """Published by the hub when an order's fulfilment workflow succeeded."""

    order_id: str
    total: int
    currency: str


class OrderRejected(BaseModel):
    """Published by the hub when an order could not be fulfilled (after compensation)."""

    order_id: str
    reason: str

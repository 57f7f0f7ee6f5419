"""router <-> delivery contracts."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, Literal

from shared.contracts.base import Contract


class DeliveryRequested(Contract):
    """router -> delivery: post this lead to this delivery account. Routing key `delivery.requested`."""

    version: Literal[1] = 1
    delivery_id: uuid.UUID
    lead_id: uuid.UUID
    lead_type: str
    client_id: str
    delivery_account_id: str
    price: Decimal
    fields: dict[str, Any]


class DeliverySucceeded(Contract):
    """delivery -> router: the buyer accepted. Routing key `delivery.succeeded`."""

    version: Literal[1] = 1
    delivery_id: uuid.UUID
    lead_id: uuid.UUID
    client_id: str
    delivery_account_id: str
    price: Decimal          # the final price: the account's, or the buyer's confirmed price
    attempts: int


class DeliveryFailed(Contract):
    """delivery -> router: the buyer refused, or every retry failed. Routing key `delivery.failed`."""

    version: Literal[1] = 1
    delivery_id: uuid.UUID
    lead_id: uuid.UUID
    client_id: str
    delivery_account_id: str
    reason: str
    attempts: int
    rejected_by_buyer: bool

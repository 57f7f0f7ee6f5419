"""router <-> delivery contracts."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

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
    price: Decimal  # the final price: the account's, or the buyer's confirmed price
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


class ConfirmPrice(Contract):
    """buyer or admin -> delivery: the price a buyer confirms for one delivery. Exchange
    `<ns>.events`, routing key `delivery.confirm-price`; set a stable AMQP `message_id`.

    `price` is taken as sent (number or text such as "12.50") so that a bad price is refused with
    a logged reason instead of being dead-lettered as a malformed message.

    `client_id` is the client the command acts for (the buyer API sets the key's client): a
    delivery of any other client is refused as unknown. Left out, the command acts for the seller
    (an admin), which only a broker user allowed to publish to `<ns>.events` can send.
    With `reply_to`, the sender gets a `PriceConfirmationResult` (or an error reply)."""

    version: Literal[1] = 1
    delivery_id: uuid.UUID
    price: Any
    confirmed_by: str | None = None  # who confirmed (a buyer's user, an admin), for the log
    client_id: str | None = Field(None, min_length=1, max_length=64)


class PriceConfirmationResult(Contract):
    """delivery -> the sender of a `ConfirmPrice` that set `reply_to`: what became of it.
    `price` is the delivery's price after the command; a repeat (same `message_id`) gets the first
    copy's answer with `repeat: true`."""

    version: Literal[1] = 1
    ok: Literal[True] = True
    delivery_id: uuid.UUID
    outcome: Literal["applied", "ignored", "refused"]
    price: Decimal
    reason: str | None = None
    repeat: bool = False


class DeliveryPriceConfirmed(Contract):
    """delivery -> billing and anyone else: a delivery's price changed after a confirm-price
    message. Routing key `delivery.price-confirmed`. (A price confirmed in the buyer's response is
    already the `price` of `delivery.succeeded`.)"""

    version: Literal[1] = 1
    delivery_id: uuid.UUID
    lead_id: uuid.UUID
    client_id: str
    delivery_account_id: str
    previous_price: Decimal
    price: Decimal
    confirmed_by: str | None = None

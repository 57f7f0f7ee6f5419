"""Returns and orders contracts: the returns service's commands and the events of both.

Commands (consumed by the returns service from queue `returns.commands`):
  return.request  ReturnRequest   a client asks to return a lead
  return.decide   ReturnDecide    an admin approves or denies a pending return
  order.command   OrderCommand    pause, resume or close an order (portal, admin)
Events (published through the outbox on `<ns>.events`):
  return.requested ReturnRequested, return.decided ReturnDecided,
  order.filled OrderFilled, order.paused / order.resumed / order.closed OrderStatusChanged.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import Field

from shared.contracts.base import Contract

ReturnStatus = Literal["pending", "approved", "denied"]
DecisionReason = Literal[
    "cap_exceeded",  # over the delivery account's or the order's return percentage
    "window_expired",  # the lead was delivered longer ago than the lead type's return window
    "invalid_reason",  # the reason is not one of the lead type's return reasons
    "not_delivered",  # the lead was never sold to this client
    "already_returned",  # a return of this lead is already pending, approved or denied by an admin
    "auto_approved",  # approved at once: the client has auto_approve_returns and is within caps
    "admin",  # decided by an admin, with a note
]


class ReturnRequest(Contract):
    """portal / admin -> returns: return a lead. Routing key `return.request`. `return_id` is the
    requester's id for this request: a repeat with the same id is the same request. With
    `reply_to`, the requester gets the resulting `ReturnRequested` as a reply."""

    version: Literal[1] = 1
    return_id: uuid.UUID
    client_id: str = Field(min_length=1, max_length=64)
    lead_id: uuid.UUID
    reason: str = Field(min_length=1, max_length=200)
    comment: str | None = Field(None, max_length=2000)
    requested_by: str | None = Field(None, max_length=200)


class ReturnDecide(Contract):
    """admin -> returns: approve or deny a pending return. Routing key `return.decide`. With
    `client_id`, the command acts for that client only: a return of another client, or an unknown
    one, is refused with the same words (dead-lettered, and answered `refused` to a `reply_to`)."""

    version: Literal[1] = 1
    return_id: uuid.UUID
    decision: Literal["approve", "deny"]
    note: str = Field("", max_length=2000)
    decided_by: str | None = Field(None, max_length=200)
    client_id: str | None = Field(None, min_length=1, max_length=64)


class ReturnRequested(Contract):
    """returns -> anyone: a return request was recorded, with its status right after the rules
    ran (pending, approved at once, or denied at once with `decision_reason`)."""

    version: Literal[1] = 1
    return_id: uuid.UUID
    client_id: str
    lead_id: uuid.UUID
    delivery_id: uuid.UUID | None
    delivery_account_id: str | None
    order_id: str | None
    reason: str
    comment: str | None
    status: ReturnStatus
    decision_reason: DecisionReason | None = None
    detail: str | None = None  # e.g. which cap, and its figures
    requested_at: datetime


class ReturnDecided(Contract):
    """returns -> anyone: a return was approved or denied (at once by a rule, or by an admin)."""

    version: Literal[1] = 1
    return_id: uuid.UUID
    client_id: str
    lead_id: uuid.UUID
    delivery_id: uuid.UUID | None
    order_id: str | None
    status: Literal["approved", "denied"]
    decision_reason: DecisionReason
    note: str | None = None
    decided_by: str | None = None
    credit: Decimal = Decimal("0")  # money credited to the client's balance
    order_credit: Decimal = Decimal("0")  # leads or dollars given back to the order
    decided_at: datetime


class OrderCommand(Contract):
    """portal / admin -> returns: pause, resume or close an order. Routing key `order.command`.
    With `client_id` (the portal), only that client's orders can be changed. With `reply_to`,
    the requester gets an `OrderCommandResult`."""

    version: Literal[1] = 1
    order_id: str = Field(min_length=1, max_length=64)
    action: Literal["pause", "resume", "close"]
    client_id: str | None = Field(None, max_length=64)
    requested_by: str | None = Field(None, max_length=200)


class OrderCommandResult(Contract):
    version: Literal[1] = 1
    order_id: str
    ok: bool
    status: str | None
    error: str | None = None


class OrderStatusChanged(Contract):
    """returns / router -> anyone: routing key `order.paused`, `order.resumed` or `order.closed`."""

    version: Literal[1] = 1
    order_id: str
    client_id: str
    status: Literal["open", "paused", "closed"]
    previous_status: str
    reason: Literal["pause", "resume", "close", "filled", "ended"]
    requested_by: str | None = None
    changed_at: datetime


class OrderFilled(Contract):
    """router (through shared.orders.settle) -> anyone: an order's period filled. Routing key
    `order.filled`. `status` is the order's status after the fill; `renewed` tells whether a new
    period started."""

    version: Literal[1] = 1
    order_id: str
    client_id: str
    order_type: Literal["lead_quantity", "dollar_amount"]
    total: Decimal
    received: Decimal
    cost: Decimal
    period: int
    renewal: Literal["on_fill", "close_at_end", "none"]
    status: Literal["open", "closed"]
    renewed: bool
    filled_at: datetime


class OrderFiguresView(Contract):
    """The Order Manager row, as shared.orders.order_figures returns it. total = received +
    remaining always holds; `in_flight` is the part of `remaining` that deliveries in progress
    have reserved."""

    version: Literal[1] = 1
    order_id: str
    client_id: str
    order_type: str
    status: str
    renewal: str
    auto_charge: bool
    start_date: date
    end_date: date | None
    period: int
    total: Decimal
    received: Decimal
    remaining: Decimal
    in_flight: Decimal
    cost: Decimal
    amount_paid: Decimal

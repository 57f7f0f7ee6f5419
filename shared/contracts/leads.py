"""Lead contracts: what lead sources publish, and the one terminal outcome of each lead."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, Literal

from pydantic import Field

from shared.contracts.base import Contract

# --- Inbound: lead sources -> router -------------------------------------------------------------


class InboundLead(Contract):
    """A lead posted by a lead source.

    Exchange `<ns>.inbound`, routing key `lead.<lead_type>`. The AMQP `message_id` property (or the
    `idempotency-key` header) is the source's idempotency key: a lead re-sent with the same key by
    the same source is the same lead. Set `reply_to` (and `correlation_id`) to receive the
    terminal `LeadOutcome` as a reply.

    A NUL character anywhere does not fail validation: the lead is kept (with U+FFFD in its place)
    and answered `rejected` with an error at each place (`nul_paths`).
    """

    nul_policy = "replace"

    version: Literal[1] = 1
    lead_type: str = Field(min_length=1, max_length=64)
    source: str = Field(min_length=1, max_length=64)
    fields: dict[str, Any]
    force_id: str | None = Field(None, max_length=200)


class FieldError(Contract):
    field: str
    message: str


class SoldDelivery(Contract):
    delivery_id: uuid.UUID
    client_id: str
    delivery_account_id: str
    price: Decimal


class LeadOutcome(Contract):
    """The one terminal outcome of a lead. Exchange `<ns>.events`, routing key `lead.<status>`."""

    version: Literal[1] = 1
    lead_id: uuid.UUID
    status: Literal["sold", "unsold", "duplicate", "rejected"]
    source: str
    idempotency_key: str
    lead_type: str
    deliveries: list[SoldDelivery] = Field(default_factory=list)
    reason: str | None = None
    original_lead_id: uuid.UUID | None = None
    errors: list[FieldError] = Field(default_factory=list)
    decided_at: datetime


class LeadReroute(Contract):
    """admin -> router: offer an unsold lead again under the catalog the router has loaded now.
    Routing key `router.reroute`. The router acts only on a lead that is still `unsold`; a repeat of
    the command (its message id), or one for a lead that is not unsold, changes nothing."""

    version: Literal[1] = 1
    lead_id: uuid.UUID
    requested_by: str | None = Field(None, max_length=200)

"""Requests for notifier: every email Leadwire sends goes through one of these."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from shared.contracts.base import Contract

NotificationKind = Literal[
    "lead_delivery",     # the email delivery method: lead details and an expiring portal link
    "new_lead",          # a portal user's new-lead notification
    "lead_forward",      # a portal user forwards a lead to an address
    "lead_contact",      # a portal user emails the lead's contact
    "password_reset",    # portal_auth: a single-use reset link
    "account_paused",    # admin alert: a delivery account was auto-paused
    "order_filled",      # admin alert: an order filled
]


class NotificationRequested(Contract):
    """Any service -> notifier: send one email. Exchange `<ns>.events`, routing key
    `notify.<kind>`. `notification_id` is stable across retries: it keys notifier's send record
    and the email's Message-ID, so a repeated request sends at most once."""

    version: Literal[1] = 1
    notification_id: uuid.UUID
    kind: NotificationKind
    to: list[str]
    client_id: str | None = None
    lead_id: uuid.UUID | None = None
    lead_fields: dict[str, Any] = {}
    portal_link: str | None = None
    subject: str | None = None
    message: str | None = None          # free text (a forward's note, an alert's details)
    data: dict[str, Any] = {}           # kind-specific extras

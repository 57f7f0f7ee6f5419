"""Requests for notifier: every email Leadwire sends goes through one of these, and the appointment
commands of the Client Portal (notifier owns appointments because their whole job is to email)."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from pydantic import AwareDatetime, Field

from shared.contracts.base import Contract

NotificationKind = Literal[
    "lead_delivery",  # the email delivery method: lead details and an expiring portal link
    "new_lead",  # a portal user's new-lead notification
    "lead_forward",  # a portal user forwards a lead to an address
    "lead_contact",  # a portal user emails the lead's contact
    "password_reset",  # portal_auth: a single-use reset link
    "account_paused",  # admin alert: a delivery account was auto-paused
    "order_filled",  # admin alert: an order filled
    # notifier's own, queued from appointment commands and the reminder scheduler:
    "appointment_created",
    "appointment_updated",
    "appointment_cancelled",
    "appointment_reminder",
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
    lead_fields: dict[str, Any] = Field(default_factory=dict)
    portal_link: str | None = None
    subject: str | None = None
    message: str | None = None  # free text (a forward's note, an alert's details)
    data: dict[str, Any] = Field(default_factory=dict)  # kind-specific extras


# --- Appointments (Client Portal -> notifier) ----------------------------------------------------
# Exchange `<ns>.events`, routing keys `appointment.create`, `appointment.update`,
# `appointment.cancel`. The caller chooses `appointment_id`; `requested_at` orders the commands
# for one appointment, so an older update that comes back late from a retry queue changes nothing.


class AppointmentCreate(Contract):
    version: Literal[1] = 1
    appointment_id: uuid.UUID
    client_id: str = Field(min_length=1, max_length=64)
    lead_id: uuid.UUID
    assigned_user_id: uuid.UUID  # a portal user of the same client
    created_by_user_id: uuid.UUID | None = None
    starts_at: AwareDatetime
    reminder_minutes_before: int = Field(60, ge=0, le=60 * 24 * 30)
    title: str = Field("", max_length=200)
    notes: str = Field("", max_length=4000)
    requested_at: AwareDatetime


class AppointmentUpdate(Contract):
    """Fields left out (None) keep their value."""

    version: Literal[1] = 1
    appointment_id: uuid.UUID
    client_id: str = Field(min_length=1, max_length=64)
    assigned_user_id: uuid.UUID | None = None
    starts_at: AwareDatetime | None = None
    reminder_minutes_before: int | None = Field(None, ge=0, le=60 * 24 * 30)
    title: str | None = Field(None, max_length=200)
    notes: str | None = Field(None, max_length=4000)
    requested_at: AwareDatetime


class AppointmentCancel(Contract):
    version: Literal[1] = 1
    appointment_id: uuid.UUID
    client_id: str = Field(min_length=1, max_length=64)
    requested_at: AwareDatetime


class AppointmentAccepted(Contract):
    """notifier -> the caller of an appointment command that set `reply_to` (with its
    `correlation_id`): the command is accepted. `applied` is false when it changed nothing — a
    repeat, or an update older than the last one applied; `status` is the appointment's now. A
    refused command is answered with an `ErrorReply` (error `refused`) instead."""

    version: Literal[1] = 1
    ok: Literal[True] = True
    appointment_id: uuid.UUID
    status: Literal["scheduled", "cancelled"]
    applied: bool

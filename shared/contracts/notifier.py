"""Requests for notifier: every email Leadwire sends goes through one of these, and the appointment
commands of the Client Portal (notifier owns appointments because their whole job is to email)."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_serializer, model_validator

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
    # notifier's own, queued from `return.decided` when the seller decided a return:
    "return_decided",
]


# --- The kind-specific details of a notification (`data`) ---------------------------------------------
# One model per kind; the request picks it by `kind` when it is read, so notifier's templates read
# typed fields, and a detail of the wrong type is refused (dead-lettered with the reason) instead of
# being left out of the email. Every model keeps details it does not name (alerts show them all).


class NotificationData(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)

    def items_given(self) -> dict[str, Any]:
        """The details the sender gave (named or not), as they travel: what an alert lists."""
        return self.model_dump(mode="json", exclude_unset=True)


class LeadDeliveryData(NotificationData):
    """lead_delivery: a lead sent by email (delivery)."""

    delivery_id: str | None = None
    delivery_account_id: str | None = None
    lead_type: str | None = None
    lead_type_name: str | None = None
    expires_in_days: int | None = None  # the portal link's lifetime


class NewLeadData(LeadDeliveryData):
    """new_lead: a portal user's new-lead notification (notifier)."""

    user_name: str | None = None
    client_name: str | None = None
    assigned_to: str | None = None  # sent because of an assignment: the assignee's name, or "you"


class LeadForwardData(NotificationData):
    """lead_forward: a portal user forwards a lead; `reply_to` becomes Reply-To."""

    from_name: str | None = None
    from_email: str | None = None
    reply_to: str | None = None


class LeadContactData(NotificationData):
    """lead_contact: a portal user writes to the lead's contact; `reply_to` becomes Reply-To."""

    from_name: str | None = None
    client_name: str | None = None
    reply_to: str | None = None


class PasswordResetData(NotificationData):
    """password_reset: a reset or invitation link (portal_auth)."""

    purpose: str | None = None  # reset | invite
    user_id: str | None = None
    user_name: str | None = None
    expires_at: str | None = None
    expires_in_minutes: int | None = None


class AccountPausedData(NotificationData):
    """account_paused: delivery paused an account after consecutive failures."""

    delivery_account_id: str | None = None
    consecutive_failures: int | None = None
    last_error: str | None = None


class OrderFilledData(NotificationData):
    """order_filled: an order filled (the `OrderFilled` event's body)."""

    order_id: str | None = None
    client_id: str | None = None
    order_type: str | None = None
    total: Decimal | None = None
    received: Decimal | None = None
    cost: Decimal | None = None
    period: int | None = None
    renewal: str | None = None
    status: str | None = None
    renewed: bool | None = None
    filled_at: str | None = None


class AppointmentData(NotificationData):
    """appointment_*: an appointment's emails (notifier)."""

    appointment_id: str | None = None
    title: str | None = None
    notes: str | None = None
    starts_at: str | None = None
    time_zone: str | None = None
    reminder_minutes: int | None = None
    assigned_name: str | None = None
    created_by_name: str | None = None
    changed: list[str] = Field(default_factory=list)  # appointment_updated: the fields that changed
    late: bool = False  # appointment_reminder: handed over well after it was due
    revision: int | None = None
    reminder_due_at: str | None = None


class ReturnDecidedData(NotificationData):
    """return_decided: the seller approved or denied a client's return (notifier, from
    `return.decided`)."""

    return_id: str | None = None
    status: str | None = None  # approved | denied
    reason: str | None = None  # the client's reason for the return
    note: str | None = None  # the seller's note
    credit: Decimal | None = None  # money credited to the client's balance (approved)
    user_name: str | None = None
    client_name: str | None = None


DATA_MODELS: dict[str, type[NotificationData]] = {
    "lead_delivery": LeadDeliveryData,
    "new_lead": NewLeadData,
    "lead_forward": LeadForwardData,
    "lead_contact": LeadContactData,
    "password_reset": PasswordResetData,
    "account_paused": AccountPausedData,
    "order_filled": OrderFilledData,
    "appointment_created": AppointmentData,
    "appointment_updated": AppointmentData,
    "appointment_cancelled": AppointmentData,
    "appointment_reminder": AppointmentData,
    "return_decided": ReturnDecidedData,
}

Data = TypeVar("Data", bound=NotificationData)


class NotificationRequested(Contract):
    """Any service -> notifier: send one email. Exchange `<ns>.events`, routing key
    `notify.<kind>`. `notification_id` is stable across retries: it keys notifier's send record
    and the email's Message-ID, so a repeated request sends at most once. `data` holds the kind's
    details (`DATA_MODELS`); on the wire it is a JSON object."""

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
    data: NotificationData = Field(default_factory=NotificationData)

    @model_validator(mode="before")
    @classmethod
    def _data_of_its_kind(cls, values: Any) -> Any:
        if isinstance(values, dict):
            model = DATA_MODELS.get(values.get("kind", ""))
            raw = values.get("data")
            if model is not None and not isinstance(raw, model):
                if isinstance(raw, BaseModel):
                    raw = raw.model_dump()
                values = {**values, "data": model.model_validate(raw or {})}
        return values

    @field_serializer("data")
    def _data_as_given(self, data: NotificationData) -> dict[str, Any]:
        # Only the details the sender gave: a detail nobody set is left out, not sent as null.
        return data.model_dump(mode="json", exclude_unset=True)

    def details(self, model: type[Data]) -> Data:
        """`data` as its kind's model (the caller names the model its kind has)."""
        assert isinstance(self.data, model), f"{self.kind} details are {type(self.data).__name__}"
        return self.data


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

"""notifier use cases: send one email once; turn a sold lead into new-lead notifications; keep
appointments and queue their emails; hand due reminders over, once each.

Only `send_notification` talks to SMTP. Everything else is one database transaction holding the
state change and the notification requests it causes (outbox), so every email, including an
appointment's and a reminder's, goes through the same send-once path with the queue's retries.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

import asyncpg

from services.notifier import rules, store, templates
from services.notifier.mailer import Mailer
from shared import metrics
from shared.catalog.model import Catalog
from shared.contracts import (
    AppointmentAccepted,
    AppointmentCancel,
    AppointmentCreate,
    AppointmentUpdate,
    LeadAssigned,
    LeadOutcome,
    NotificationRequested,
    ReturnDecided,
)
from shared.contracts.errors import Refused
from shared.contracts.notifier import (
    AppointmentData,
    LeadContactData,
    LeadForwardData,
    NewLeadData,
    ReturnDecidedData,
)
from shared.outbox import add_event, add_reply, claim_message
from shared.portal_links import issue_link_token, portal_link
from shared.service import TransientError, describe
from shared.settings import Settings

log = logging.getLogger("leadwire.notifier")

LEAD_SOLD_CONSUMER = "notifier.lead-sold"
ASSIGNED_CONSUMER = "notifier.lead-assigned"
APPOINTMENT_CONSUMER = "notifier.appointments"
RETURN_DECIDED_CONSUMER = "notifier.return-decided"
REMINDER_BATCH = 100


class AppointmentRefused(Refused):
    """A command that can never be applied (another client's user or lead): dead-lettered, and a
    caller that set `reply_to` is answered `refused` with the reason."""


# --- sending -------------------------------------------------------------------------------------


async def send_notification(
    pool: asyncpg.Pool,
    mailer: Mailer,
    settings: Settings,
    request: NotificationRequested,
    *,
    now: datetime | None = None,
    after_send: Callable[[], None] | None = None,
) -> bool:
    """Send the email unless its send record says it went out already. True when sent now.

    The record is locked from before the SMTP hand-over until it is marked sent, in one
    transaction: a duplicate request waits and then finds it sent; a crash in between rolls the
    mark back, so the redelivered request sends again (a repeat, never a loss)."""
    to = rules.recipients(request.kind, request.to, settings.admin_email)
    email = templates.render(request)
    message_id = rules.message_id_header(request.notification_id, settings.smtp_from)
    async with pool.acquire() as conn:
        await store.ensure_send_record(conn, request.notification_id, request.kind, to, email.subject, message_id)
        try:
            async with conn.transaction():
                record = await store.lock_send_record(conn, request.notification_id)
                if record is None or record["status"] != "pending":
                    return False
                if request.kind == "appointment_reminder" and not await _reminder_wanted(conn, request):
                    await store.mark_skipped(conn, request.notification_id, "appointment cancelled or moved")
                    return False
                message = templates.compose(
                    email,
                    kind=request.kind,
                    sender=settings.smtp_from,
                    recipients=to,
                    message_id=message_id,
                    date=now or datetime.now(UTC),
                    reply_to=_reply_to(request),
                )
                try:
                    refused = await mailer.send(message, to)
                except Exception:
                    metrics.email(request.kind, "failed")
                    raise
                metrics.email(request.kind, "sent")
                if after_send is not None:
                    after_send()
                await store.mark_sent(conn, request.notification_id, refused)
        except Exception as exc:
            try:
                await store.note_failure(conn, request.notification_id, describe(exc))
            except Exception:  # the database may be what failed; the queue keeps the request anyway
                log.debug("could not record the send failure", exc_info=True)
            raise
    return True


def _reply_to(request: NotificationRequested) -> str | None:
    """A portal user's message (a forward, a note to the lead's contact) is answered to them."""
    data = request.data
    return data.reply_to if isinstance(data, LeadForwardData | LeadContactData) else None


async def _reminder_wanted(conn: asyncpg.Connection, request: NotificationRequested) -> bool:
    data = request.details(AppointmentData)
    appointment_id, revision = data.appointment_id, data.revision
    if appointment_id is None or revision is None:
        return True
    return await store.reminder_current(conn, uuid.UUID(str(appointment_id)), int(revision))


# --- new-lead notifications ------------------------------------------------------------------------


def _link(settings: Settings, client_id: str, lead_id: uuid.UUID, now: datetime) -> str:
    token = issue_link_token(settings.portal_link_secret, client_id=client_id, lead_id=lead_id, issued_at=now)
    return portal_link(settings.portal_base_url, token)


def _lead_type_name(catalog: Catalog, lead_type_id: str | None) -> str:
    lead_type = catalog.lead_types_by_id.get(lead_type_id) if lead_type_id else None
    return lead_type.name if lead_type is not None else (lead_type_id or "")


async def notify_new_lead(
    pool: asyncpg.Pool,
    catalog: Catalog,
    settings: Settings,
    outcome: LeadOutcome,
    message_id: str,
    now: datetime | None = None,
) -> int:
    """A lead was sold: queue a new-lead email for each enabled **admin** portal user of each
    buying client who turned the notification on (rules.told_at_sale: only admins can see a lead
    nobody was assigned; the others hear of it when it is assigned, `notify_assigned_lead`).
    Returns how many were queued."""
    now = now or datetime.now(UTC)
    queued = 0
    # Most sales have no one to tell: find that out in one read, without a transaction or an inbox
    # row (doing nothing twice is harmless).
    if not await store.any_new_lead_subscribers(pool, [d.client_id for d in outcome.deliveries], admins_only=True):
        return 0
    async with pool.acquire() as conn, conn.transaction():
        if not await claim_message(conn, LEAD_SOLD_CONSUMER, message_id):
            return 0
        lead = await store.lead(conn, outcome.lead_id)
        fields = dict(lead["fields"]) if lead is not None else {}
        lead_type_id = lead["lead_type_id"] if lead is not None else outcome.lead_type
        for delivery in outcome.deliveries:
            for user in await store.new_lead_subscribers(conn, delivery.client_id):
                if not rules.told_at_sale(_subscriber(user)):
                    continue
                await _queue_new_lead(
                    conn,
                    catalog,
                    settings,
                    user,
                    client_id=delivery.client_id,
                    lead_id=outcome.lead_id,
                    delivery_id=delivery.delivery_id,
                    lead_type_id=lead_type_id,
                    fields=fields,
                    now=now,
                )
                queued += 1
    return queued


def _subscriber(user: asyncpg.Record) -> rules.Subscriber:
    return rules.Subscriber(user["id"], user["is_admin"], user["view_downline"])


async def _queue_new_lead(
    conn: asyncpg.Connection,
    catalog: Catalog,
    settings: Settings,
    user: asyncpg.Record,
    *,
    client_id: str,
    lead_id: uuid.UUID,
    delivery_id: uuid.UUID,
    lead_type_id: str | None,
    fields: dict[str, Any],
    now: datetime,
    assigned_to: str | None = None,
) -> None:
    client = catalog.clients_by_id.get(client_id)
    data = NewLeadData(
        user_name=user["name"],
        client_name=client.name if client else client_id,
        lead_type=lead_type_id,
        lead_type_name=_lead_type_name(catalog, lead_type_id),
        expires_in_days=catalog.options.expire_portal_email_link_days,
        delivery_id=str(delivery_id),
        # Only set when an assignment caused the email: a detail nobody set is not sent.
        **({"assigned_to": assigned_to} if assigned_to is not None else {}),
    )
    await add_event(
        conn,
        "notify.new_lead",
        NotificationRequested(
            # One per (delivery, user), whatever caused it: told at the sale or at an assignment,
            # nobody gets two new-lead emails about one lead.
            notification_id=rules.new_lead_notification_id(delivery_id, user["id"]),
            kind="new_lead",
            to=[user["email"]],
            client_id=client_id,
            lead_id=lead_id,
            lead_fields=fields,
            portal_link=_link(settings, client_id, lead_id, now),
            data=data,
        ),
    )


async def notify_assigned_lead(
    pool: asyncpg.Pool,
    catalog: Catalog,
    settings: Settings,
    event: LeadAssigned,
    message_id: str,
    now: datetime | None = None,
) -> int:
    """A lead was assigned in the portal: queue a new-lead email for each subscribed user whose
    scope now covers it and who is not an admin (rules.told_on_assignment) — the assignee, and
    the users above them with View Downline. Returns how many were queued (0 for a repeat)."""
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        if not await claim_message(conn, ASSIGNED_CONSUMER, message_id or str(event.assignment_id)):
            return 0
        subscribers = await store.new_lead_subscribers(conn, event.client_id)
        if not subscribers or not await store.lead_delivered_to(conn, event.lead_id, event.client_id):
            return 0
        assignee = await store.portal_user(conn, event.user_id)
        if assignee is None or assignee["client_id"] != event.client_id:
            return 0
        chain = await store.chain_above(conn, event.user_id, event.client_id)
        lead = await store.lead(conn, event.lead_id)
        fields = dict(lead["fields"]) if lead is not None else {}
        queued = 0
        for user in subscribers:
            if not rules.told_on_assignment(_subscriber(user), event.user_id, chain):
                continue
            await _queue_new_lead(
                conn,
                catalog,
                settings,
                user,
                client_id=event.client_id,
                lead_id=event.lead_id,
                delivery_id=event.delivery_id,
                lead_type_id=lead["lead_type_id"] if lead is not None else None,
                fields=fields,
                now=now,
                assigned_to="you" if user["id"] == event.user_id else (assignee["name"] or assignee["email"]),
            )
            queued += 1
    return queued


# --- return decisions ------------------------------------------------------------------------------


def returns_link(settings: Settings) -> str:
    """The portal's Returns screen (sign-in required: it lists the client's returns)."""
    return f"{settings.portal_base_url.rstrip('/')}/returns"


async def notify_return_decided(
    pool: asyncpg.Pool,
    catalog: Catalog,
    settings: Settings,
    event: ReturnDecided,
    message_id: str,
) -> int:
    """The seller approved or denied a return: queue a `return_decided` email for each enabled
    admin portal user of the client and for the user who requested it (rules.told_of_return).
    Decisions made by a rule at request time are not emailed (rules.told_of_return_decision).
    Returns how many were queued (0 for a repeat: the inbox, and the derived ids behind it)."""
    if not rules.told_of_return_decision(event.decision_reason):
        return 0
    async with pool.acquire() as conn, conn.transaction():
        if not await claim_message(conn, RETURN_DECIDED_CONSUMER, message_id or f"{event.return_id}:decided"):
            return 0
        request = await store.return_request(conn, event.return_id, event.client_id)
        requested_by = request["requested_by"] if request is not None else None
        users = [
            u
            for u in await store.client_users(conn, event.client_id)
            if rules.told_of_return(u["is_admin"], u["email"], requested_by)
        ]
        if not users:
            return 0
        lead = await store.lead(conn, event.lead_id)
        fields = dict(lead["fields"]) if lead is not None else {}
        client = catalog.clients_by_id.get(event.client_id)
        for user in users:
            data = ReturnDecidedData(
                return_id=str(event.return_id),
                status=event.status,
                reason=request["reason"] if request is not None else None,
                note=event.note or "",
                credit=event.credit,
                user_name=user["name"],
                client_name=client.name if client else event.client_id,
            )
            await add_event(
                conn,
                "notify.return_decided",
                NotificationRequested(
                    notification_id=rules.return_decided_notification_id(event.return_id, user["id"]),
                    kind="return_decided",
                    to=[user["email"]],
                    client_id=event.client_id,
                    lead_id=event.lead_id,
                    lead_fields=fields,
                    portal_link=returns_link(settings),
                    data=data,
                ),
            )
    return len(users)


# --- appointments ----------------------------------------------------------------------------------


def _time_zone(catalog: Catalog, client_id: str) -> str:
    client = catalog.clients_by_id.get(client_id)
    return client.time_zone if client is not None else "UTC"


async def _appointment_email(
    conn: asyncpg.Connection,
    catalog: Catalog,
    settings: Settings,
    row: dict[str, Any],
    kind: str,
    notification_id: uuid.UUID,
    now: datetime,
    extra: dict[str, Any] | None = None,
) -> bool:
    """Queue one email about an appointment to its assigned user; False when that user can no
    longer receive it (removed or disabled)."""
    user = await store.portal_user(conn, row["assigned_user_id"])
    if user is None or not user["enabled"] or user["client_id"] != row["client_id"]:
        return False
    lead = await store.lead(conn, row["lead_id"])
    creator = await store.portal_user(conn, row["created_by_user_id"]) if row.get("created_by_user_id") else None
    data = {
        "appointment_id": str(row["id"]),
        "title": row["title"],
        "notes": row["notes"],
        "starts_at": row["starts_at"].isoformat(),
        "time_zone": _time_zone(catalog, row["client_id"]),
        "reminder_minutes": row["reminder_minutes"],
        "assigned_name": user["name"],
        "created_by_name": creator["name"] if creator is not None and creator["client_id"] == row["client_id"] else "",
        **(extra or {}),
    }
    await add_event(
        conn,
        f"notify.{kind}",
        NotificationRequested(
            notification_id=notification_id,
            kind=kind,
            to=[user["email"]],
            client_id=row["client_id"],
            lead_id=row["lead_id"],
            lead_fields=dict(lead["fields"]) if lead is not None else {},
            portal_link=_link(settings, row["client_id"], row["lead_id"], now),
            data=data,
        ),
    )
    return True


async def _check_assignee(conn: asyncpg.Connection, user_id: uuid.UUID, client_id: str) -> None:
    user = await store.portal_user(conn, user_id)
    if user is None or user["client_id"] != client_id:
        raise AppointmentRefused(f"portal user {user_id} is not a user of client {client_id!r}")
    if not user["enabled"]:
        raise AppointmentRefused(f"portal user {user_id} is disabled")


@dataclass(frozen=True)
class Caller:
    """Who asked, when the command carried `reply_to`: answered in the command's transaction."""

    reply_to: str | None = None
    correlation_id: str | None = None

    async def accepted(
        self,
        conn: asyncpg.Connection,
        appointment_id: uuid.UUID,
        status: Literal["scheduled", "cancelled"],
        *,
        applied: bool,
    ) -> None:
        if self.reply_to:
            answer = AppointmentAccepted(appointment_id=appointment_id, status=status, applied=applied)
            await add_reply(conn, self.reply_to, self.correlation_id, answer)


async def create_appointment(
    pool: asyncpg.Pool,
    catalog: Catalog,
    settings: Settings,
    command: AppointmentCreate,
    now: datetime | None = None,
    caller: Caller = Caller(),
) -> bool:
    """Store the appointment and queue the assigned user's email. False for one that exists."""
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        await _check_assignee(conn, command.assigned_user_id, command.client_id)
        if not await store.lead_delivered_to(conn, command.lead_id, command.client_id):
            raise AppointmentRefused(f"lead {command.lead_id} was not delivered to client {command.client_id!r}")
        due = rules.plan_reminder(command.starts_at, command.reminder_minutes_before, now)
        if not await store.insert_appointment(
            conn,
            appointment_id=command.appointment_id,
            client_id=command.client_id,
            lead_id=command.lead_id,
            assigned_user_id=command.assigned_user_id,
            created_by_user_id=command.created_by_user_id,
            title=command.title,
            notes=command.notes,
            starts_at=command.starts_at,
            reminder_minutes=command.reminder_minutes_before,
            reminder_due_at=due,
            requested_at=command.requested_at,
        ):
            existing = await _locked(conn, command.appointment_id, command.client_id)
            await caller.accepted(conn, command.appointment_id, existing["status"], applied=False)
            return False
        await caller.accepted(conn, command.appointment_id, "scheduled", applied=True)
        locked = await store.lock_appointment(conn, command.appointment_id)
        assert locked is not None  # inserted just above, in this transaction
        row = dict(locked)
        await _appointment_email(
            conn,
            catalog,
            settings,
            row,
            "appointment_created",
            rules.appointment_notification_id(row["id"], "created", 0),
            now,
        )
    return True


async def update_appointment(
    pool: asyncpg.Pool,
    catalog: Catalog,
    settings: Settings,
    command: AppointmentUpdate,
    message_id: str,
    now: datetime | None = None,
    caller: Caller = Caller(),
) -> tuple[str, ...]:
    """Apply the changes, re-plan the reminder if the time moved, and tell the assigned user.
    Returns the names of the fields that changed."""
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        first_time = await claim_message(conn, APPOINTMENT_CONSUMER, message_id)
        current = await _locked(conn, command.appointment_id, command.client_id)
        stale = current["status"] != "scheduled" or command.requested_at <= current["last_requested_at"]
        if not first_time or stale:
            # A repeat, a cancelled appointment, or a newer command applied already: nothing changes.
            await caller.accepted(conn, command.appointment_id, current["status"], applied=False)
            return ()
        if command.assigned_user_id is not None and command.assigned_user_id != current["assigned_user_id"]:
            await _check_assignee(conn, command.assigned_user_id, command.client_id)
        plan = rules.plan_update(
            rules.Appointment(
                assigned_user_id=current["assigned_user_id"],
                starts_at=current["starts_at"],
                reminder_minutes=current["reminder_minutes"],
                title=current["title"],
                notes=current["notes"],
                reminder_due_at=current["reminder_due_at"],
                reminder_queued=current["reminder_queued_at"] is not None,
                reminder_revision=current["reminder_revision"],
            ),
            now,
            assigned_user_id=command.assigned_user_id,
            starts_at=command.starts_at,
            reminder_minutes=command.reminder_minutes_before,
            title=command.title,
            notes=command.notes,
        )
        a = plan.appointment
        await store.update_appointment(
            conn,
            command.appointment_id,
            assigned_user_id=a.assigned_user_id,
            title=a.title,
            notes=a.notes,
            starts_at=a.starts_at,
            reminder_minutes=a.reminder_minutes,
            reminder_due_at=a.reminder_due_at,
            reminder_queued=a.reminder_queued,
            reminder_revision=a.reminder_revision,
            requested_at=command.requested_at,
        )
        await caller.accepted(conn, command.appointment_id, "scheduled", applied=True)
        if plan.changed:
            row = {
                **dict(current),
                "assigned_user_id": a.assigned_user_id,
                "title": a.title,
                "notes": a.notes,
                "starts_at": a.starts_at,
                "reminder_minutes": a.reminder_minutes,
            }
            marker = command.requested_at.isoformat()
            await _appointment_email(
                conn,
                catalog,
                settings,
                row,
                "appointment_updated",
                rules.appointment_notification_id(row["id"], "updated", marker),
                now,
                {"changed": list(plan.changed)},
            )
    return plan.changed


async def cancel_appointment(
    pool: asyncpg.Pool,
    catalog: Catalog,
    settings: Settings,
    command: AppointmentCancel,
    message_id: str,
    now: datetime | None = None,
    caller: Caller = Caller(),
) -> bool:
    """Cancel the appointment (and so its reminder) and tell the assigned user. True if cancelled now."""
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        first_time = await claim_message(conn, APPOINTMENT_CONSUMER, message_id)
        current = await _locked(conn, command.appointment_id, command.client_id)
        if not first_time or current["status"] != "scheduled" or command.requested_at <= current["last_requested_at"]:
            await caller.accepted(conn, command.appointment_id, current["status"], applied=False)
            return False
        await store.cancel_appointment(conn, command.appointment_id, command.requested_at)
        await caller.accepted(conn, command.appointment_id, "cancelled", applied=True)
        await _appointment_email(
            conn,
            catalog,
            settings,
            dict(current),
            "appointment_cancelled",
            rules.appointment_notification_id(current["id"], "cancelled", 0),
            now,
        )
    return True


async def _locked(conn: asyncpg.Connection, appointment_id: uuid.UUID, client_id: str) -> asyncpg.Record:
    current = await store.lock_appointment(conn, appointment_id)
    if current is None:
        # Its create may still be on the way (commands can overtake each other through the retry
        # queues): try again later; after the last retry it is dead-lettered with this reason.
        raise TransientError(f"appointment {appointment_id} does not exist (yet)")
    if current["client_id"] != client_id:
        raise AppointmentRefused(f"appointment {appointment_id} belongs to another client")
    return current


# --- reminders -------------------------------------------------------------------------------------


async def queue_due_reminders(
    pool: asyncpg.Pool,
    catalog: Catalog,
    settings: Settings,
    now: datetime | None = None,
    limit: int = REMINDER_BATCH,
) -> int:
    """Claim the reminders that are due and queue their emails, in one transaction. Any number of
    notifier replicas may run this at once: each reminder is claimed by exactly one."""
    now = now or datetime.now(UTC)
    async with pool.acquire() as conn, conn.transaction():
        claimed = await store.claim_due_reminders(conn, now, limit)
        for row in claimed:
            late = rules.is_late(row["reminder_due_at"], now)
            if late:
                await store.set_reminder_late(conn, row["id"], True)
            await _appointment_email(
                conn,
                catalog,
                settings,
                dict(row),
                "appointment_reminder",
                rules.appointment_notification_id(row["id"], "reminder", row["reminder_revision"]),
                now,
                {
                    "late": late,
                    "revision": row["reminder_revision"],
                    "reminder_due_at": row["reminder_due_at"].isoformat(),
                },
            )
    return len(claimed)


async def queue_all_due_reminders(pool: asyncpg.Pool, catalog: Catalog, settings: Settings) -> int:
    """Queue every reminder that is due, a batch per transaction (notifier's background loop, in
    every notifier process: polling is one indexed query and needs no leader). Returns how many."""
    queued = 0
    while (n := await queue_due_reminders(pool, catalog, settings)) > 0:
        queued += n
        if n < REMINDER_BATCH:
            break
    return queued

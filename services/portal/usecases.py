"""The Client Portal's writes. The portal owns almost no data: what a buyer does goes as a command
to the service that owns it. Part 1 has two: email the lead's contact and forward the lead, both
sent by notifier. Each is one transaction holding the activity row (keyed by the notification id
minted when the form was rendered) and the `notify.<kind>` request in the outbox: a form sent
twice — a double click, a browser retry — records one row and sends one email.

(Signing in, out and passwords are portal_auth's: the routes call it through its client.)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

import asyncpg

from services.portal import queries, rules, store
from shared.catalog.model import Catalog
from shared.contracts import LeadAssigned, NotificationRequested
from shared.contracts.portal_auth import Identity
from shared.outbox import add_event


class LeadNotFound(Exception):
    """Not a lead of this client, or not one this user may see: the page answers 404."""


@dataclass(frozen=True)
class Sent:
    recipients: tuple[str, ...]
    already: bool = False  # this form had been sent before: nothing new was queued


@dataclass(frozen=True)
class Refused:
    errors: dict[str, str] = field(default_factory=dict)


EmailKind = Literal["lead_contact", "lead_forward"]


async def email_contact(
    pool: asyncpg.Pool,
    catalog: Catalog,
    identity: Identity,
    lead_id: uuid.UUID,
    notification_id: uuid.UUID,
    form: rules.ContactForm,
    now: datetime,
) -> Sent | Refused:
    """Email the person behind the lead. The email carries only the user's subject and words
    (never the lead record or a portal link); replies go to the user (Reply-To)."""

    def build(lead: asyncpg.Record) -> NotificationRequested | Refused:
        lead_type = catalog.lead_types_by_id.get(lead["lead_type_id"])
        email_field = (lead_type.contact_email_field if lead_type else None) or "email"
        address = str((lead["fields"] or {}).get(email_field) or "")
        if not rules.valid_address(address):
            return Refused({"form": "This lead has no email address to write to."})
        client = catalog.clients_by_id.get(identity.client_id)
        return NotificationRequested(
            notification_id=notification_id,
            kind="lead_contact",
            to=[address],
            client_id=identity.client_id,
            lead_id=lead_id,
            subject=form.subject,
            message=form.message,
            data={
                "reply_to": identity.email,
                "from_name": identity.name or identity.email,
                "client_name": client.name if client else identity.client_id,
            },
        )

    return await _send_about_lead(pool, identity, lead_id, notification_id, "lead_contact", build, now)


async def forward_lead(
    pool: asyncpg.Pool,
    catalog: Catalog,
    identity: Identity,
    lead_id: uuid.UUID,
    notification_id: uuid.UUID,
    form: rules.ForwardForm,
    now: datetime,
) -> Sent | Refused:
    """Forward the lead (its fields, the user's note) to up to five addresses."""

    def build(lead: asyncpg.Record) -> NotificationRequested:
        lead_type = catalog.lead_types_by_id.get(lead["lead_type_id"])
        data: dict[str, Any] = {
            "from_name": identity.name or identity.email,
            "from_email": identity.email,
            "reply_to": identity.email,
            "lead_type": lead["lead_type_id"],
        }
        if lead_type is not None:
            data["lead_type_name"] = lead_type.name
        return NotificationRequested(
            notification_id=notification_id,
            kind="lead_forward",
            to=list(form.to),
            client_id=identity.client_id,
            lead_id=lead_id,
            lead_fields=dict(lead["fields"] or {}),
            message=form.note or None,
            data=data,
        )

    return await _send_about_lead(pool, identity, lead_id, notification_id, "lead_forward", build, now)


async def _send_about_lead(
    pool: asyncpg.Pool,
    identity: Identity,
    lead_id: uuid.UUID,
    notification_id: uuid.UUID,
    kind: EmailKind,
    build: Callable[[asyncpg.Record], NotificationRequested | Refused],
    now: datetime,
) -> Sent | Refused:
    viewer = rules.Viewer.of(identity)
    async with pool.acquire() as conn, conn.transaction():
        lead = await queries.lead_detail(conn, viewer, lead_id)
        if lead is None:
            raise LeadNotFound(str(lead_id))
        await store.lock_user_emails(conn, identity.user_id)
        earlier = await store.activity(conn, notification_id)
        if earlier is not None:
            if (earlier["user_id"], earlier["lead_id"], earlier["kind"]) != (identity.user_id, lead_id, kind):
                return Refused({"form": "This form was already used. Reload the page to send another email."})
            return Sent((), already=True)
        sent = await store.emails_sent_since(conn, identity.user_id, now - timedelta(hours=1))
        if sent >= rules.EMAILS_PER_HOUR:
            return Refused(
                {"form": f"You sent {sent} emails about leads in the last hour, the most allowed. Try again later."}
            )
        request = build(lead)
        if isinstance(request, Refused):
            return request
        await store.record_activity(
            conn,
            activity_id=notification_id,
            client_id=identity.client_id,
            lead_id=lead_id,
            user_id=identity.user_id,
            kind=kind,
            recipients=request.to,
            subject=request.subject or "",
            now=now,
        )
        await add_event(conn, f"notify.{kind}", request)
    return Sent(tuple(request.to))


# --- Lead assignment (H5) ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Assigned:
    user_id: uuid.UUID | None  # None: the lead is no longer assigned
    changed: bool  # False: it was already so


async def assign_lead(
    pool: asyncpg.Pool, identity: Identity, lead_id: uuid.UUID, user_id: uuid.UUID | None, now: datetime
) -> Assigned | Refused:
    """Give a lead to a user (or, admins only, to nobody). Admins assign any lead of the client to
    any enabled user of it; View Downline users assign the leads they see to an enabled user of
    their downline (themselves included); others assign nothing. One transaction holds the
    assignment and its `lead.assigned` event (notifier's new-lead emails for the new scopes);
    writes to one lead are serialised, and an assignment that changes nothing publishes nothing."""
    viewer = rules.Viewer.of(identity)
    if not rules.may_assign(viewer):
        return Refused({"form": "Only admins and users with View Downline assign leads."})
    if user_id is None and viewer.scope != "all":
        return Refused({"assignee": "Choose who gets the lead."})
    async with pool.acquire() as conn, conn.transaction():
        lead = await queries.lead_detail(conn, viewer, lead_id)
        if lead is None:
            raise LeadNotFound(str(lead_id))
        current = await store.lock_assignment(conn, identity.client_id, lead_id)
        if user_id is None:
            if current is not None:
                await store.clear_assignment(conn, identity.client_id, lead_id)
            return Assigned(None, changed=current is not None)
        below = None if viewer.scope == "all" else identity.user_id
        if not await store.assignee_allowed(conn, identity.client_id, user_id, below=below):
            return Refused({"assignee": "Choose an enabled user from the list."})
        if current == user_id:
            return Assigned(user_id, changed=False)
        await store.set_assignment(
            conn, client_id=identity.client_id, lead_id=lead_id, user_id=user_id, assigned_by=identity.user_id, now=now
        )
        await add_event(
            conn,
            "lead.assigned",
            LeadAssigned(
                assignment_id=uuid.uuid4(),
                client_id=identity.client_id,
                lead_id=lead_id,
                delivery_id=lead["delivery_id"],
                user_id=user_id,
                previous_user_id=current,
                assigned_by=identity.user_id,
                assigned_at=now,
            ),
        )
    return Assigned(user_id, changed=True)

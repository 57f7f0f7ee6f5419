"""notifier's decisions, without I/O: who an email goes to, its stable ids, when a reminder is due
and whether it is late, what an appointment update changes, and which SMTP failures are worth a
retry."""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from email.utils import parseaddr
from typing import Any

from shared.contracts.errors import BadMessage

# Fixed forever: notification ids derived from it must stay the same across releases, or a
# redelivered request would look new and be sent again.
ID_NAMESPACE = uuid.UUID("5f0e8a4c-1d7b-4c1e-9a57-6c1e2b3f9d10")

# A reminder handed over this long after its due time was held up (notifier down, backlog): the
# email says so, so the reader does not trust it as on-time.
LATE_AFTER = timedelta(minutes=2)

ADMIN_KINDS = frozenset({"account_paused", "order_filled"})

# Deliberately plain: one @, no spaces or angle brackets, a dot in the domain. Anything fancier
# is the SMTP server's job; this only keeps header injection and obvious typos out.
_ADDRESS = re.compile(r"^[^@\s<>,;\"']+@[^@\s<>,;\"']+\.[^@\s<>,;\"']+$")


class InvalidNotification(BadMessage):
    """A request that can never be sent as it stands (no valid recipient): dead-lettered at once."""


def derived_id(*parts: object) -> uuid.UUID:
    return uuid.uuid5(ID_NAMESPACE, ":".join(str(p) for p in parts))


def new_lead_notification_id(delivery_id: uuid.UUID, user_id: uuid.UUID) -> uuid.UUID:
    return derived_id("new_lead", delivery_id, user_id)


# --- Who hears of a new lead ----------------------------------------------------------------------


@dataclass(frozen=True)
class Subscriber:
    """An enabled portal user of the client with the new-lead notification on."""

    id: uuid.UUID
    is_admin: bool
    view_downline: bool


def told_at_sale(user: Subscriber) -> bool:
    """When a lead is sold, only admins hear of it: they see every lead of the client. Nobody else
    can see it until it is assigned."""
    return user.is_admin


def told_on_assignment(user: Subscriber, assignee: uuid.UUID, chain: Sequence[uuid.UUID]) -> bool:
    """When a lead is assigned, the users whose scope now covers it hear of it: the assignee, and
    the users above the assignee (`chain`: the assignee's parent, its parent, ...) who have View
    Downline. Admins were told at the sale. (One email per delivery and user, ever: notification
    ids are derived from both, so a reassignment back and forth tells nobody twice.)"""
    if user.is_admin:
        return False
    return user.id == assignee or (user.view_downline and user.id in chain)


# --- Who hears of a return decision ---------------------------------------------------------------


def told_of_return_decision(decision_reason: str) -> bool:
    """Only a decision the seller made (an admin in the console or `return.decide`, reason
    `admin`) is emailed. A return approved within the allowance or denied by a rule is decided the
    moment it is requested: the requester sees the answer on the portal's form at once, so an
    email would tell them nothing new."""
    return decision_reason == "admin"


def told_of_return(is_admin: bool, email: str, requested_by: str | None) -> bool:
    """Among the client's enabled portal users: every admin (they see all the client's returns),
    and the user who requested the return (the returns table keeps their email in
    `requested_by`; compared ignoring case). Nobody of another client: the caller reads only this
    client's users."""
    if is_admin:
        return True
    return bool(requested_by) and email.strip().lower() == (requested_by or "").strip().lower()


def return_decided_notification_id(return_id: uuid.UUID, user_id: uuid.UUID) -> uuid.UUID:
    """One email per (return, user), ever: a return is decided once, and a redelivered event
    derives the same id, so the send record stops a second email."""
    return derived_id("return_decided", return_id, user_id)


def appointment_notification_id(appointment_id: uuid.UUID, event: str, marker: object) -> uuid.UUID:
    """`marker` tells two emails of the same event apart: the reminder revision, or the
    requested_at of the command that caused it."""
    return derived_id("appointment", appointment_id, event, marker)


def valid_address(address: str) -> bool:
    return bool(_ADDRESS.match(address)) and len(address) <= 254


def recipients(kind: str, to: list[str], admin_email: str) -> list[str]:
    """The addresses an email goes to: the requested ones, plus the admin address for admin
    alerts. Duplicates (ignoring case) are dropped; an invalid address refuses the whole email,
    because sending to the rest would silently lose someone."""
    wanted = list(to)
    if kind in ADMIN_KINDS:
        wanted.append(admin_email)
    result: list[str] = []
    seen: set[str] = set()
    for raw in wanted:
        address = raw.strip()
        if not valid_address(address):
            raise InvalidNotification(f"invalid recipient address {raw!r}")
        if address.lower() not in seen:
            seen.add(address.lower())
            result.append(address)
    if not result:
        raise InvalidNotification(f"a {kind} notification needs at least one recipient")
    return result


def message_id_header(notification_id: uuid.UUID, sender: str) -> str:
    """A Message-ID that is the same for every copy of one notification, so a repeat after a
    crash is recognisable as the same email (and many clients thread or drop it)."""
    _, at, domain = parseaddr(sender)[1].rpartition("@")
    domain = domain if at and domain else "leadwire.invalid"
    return f"<{notification_id}@{domain}>"


def clean_header(text: str, limit: int = 200) -> str:
    """One line of header text: line breaks would start a new header (injection), so every run
    of whitespace becomes one space."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def safe_link(url: str | None) -> str | None:
    """Only http(s) links become clickable; a javascript: or data: link from a bad request is
    dropped rather than rendered."""
    if not url:
        return None
    lowered = url.strip().lower()
    if lowered.startswith(("https://", "http://")) and not any(c.isspace() for c in url.strip()):
        return url.strip()
    return None


# --- SMTP failures -------------------------------------------------------------------------------


def smtp_code_is_transient(code: int) -> bool:
    """4xx is the server saying "not now" (greylisting, a full queue, a rate limit): worth a retry.
    5xx is a refusal that a retry will not change (no such mailbox, auth failed): dead-letter it
    with the server's words for a person to look at. A code outside both is treated as transient."""
    return not 500 <= code <= 599


# --- Appointments ----------------------------------------------------------------------------------


def plan_reminder(starts_at: datetime, minutes_before: int, now: datetime) -> datetime | None:
    """When the reminder goes out: `minutes_before` the start, but never before `now` (an
    appointment made at short notice is reminded at once). None once the appointment has started:
    there is nothing left to remind of."""
    if starts_at <= now:
        return None
    return max(starts_at - timedelta(minutes=minutes_before), now)


def is_late(due_at: datetime, handed_over_at: datetime, grace: timedelta = LATE_AFTER) -> bool:
    return handed_over_at - due_at > grace


@dataclass(frozen=True)
class Appointment:
    assigned_user_id: uuid.UUID
    starts_at: datetime
    reminder_minutes: int
    title: str
    notes: str
    reminder_due_at: datetime | None
    reminder_queued: bool
    reminder_revision: int


@dataclass(frozen=True)
class UpdatePlan:
    appointment: Appointment
    changed: tuple[str, ...]  # names of the fields that changed, for the email and the log
    replanned: bool  # the reminder was moved (and will be sent again if it was sent)


def plan_update(
    current: Appointment,
    now: datetime,
    *,
    assigned_user_id: uuid.UUID | None = None,
    starts_at: datetime | None = None,
    reminder_minutes: int | None = None,
    title: str | None = None,
    notes: str | None = None,
) -> UpdatePlan:
    wanted = {
        "assigned_user_id": assigned_user_id,
        "starts_at": starts_at,
        "reminder_minutes": reminder_minutes,
        "title": title,
        "notes": notes,
    }
    changes: dict[str, Any] = {k: v for k, v in wanted.items() if v is not None and v != getattr(current, k)}
    updated = replace(current, **changes)
    replanned = "starts_at" in changes or "reminder_minutes" in changes
    if replanned:
        updated = replace(
            updated,
            reminder_due_at=plan_reminder(updated.starts_at, updated.reminder_minutes, now),
            reminder_queued=False,
            reminder_revision=current.reminder_revision + 1,
        )
    return UpdatePlan(updated, tuple(k for k in wanted if k in changes), replanned)

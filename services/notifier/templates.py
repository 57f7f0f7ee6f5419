"""Email templates, without I/O: a notification becomes a subject, a text part and an HTML part.

Each template builds a list of blocks (paragraphs, a table of fields, a link); one renderer turns
the blocks into text and another into HTML. Escaping happens in exactly one place, the HTML
renderer, for every value whatever its origin, so no template can forget it: a lead named
`<script>` is shown as text.
"""

from __future__ import annotations

import html
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from services.notifier.rules import clean_header, safe_link, valid_address
from shared.contracts import NotificationRequested
from shared.contracts.notifier import (
    AccountPausedData,
    AppointmentData,
    LeadContactData,
    LeadDeliveryData,
    LeadForwardData,
    NewLeadData,
    OrderFilledData,
    PasswordResetData,
    ReturnDecidedData,
)

# Kinds written by a person (a portal user's message to a contact); the rest are machine mail
# and say so (RFC 3834), which keeps auto-responders from answering them.
HUMAN_KINDS = frozenset({"lead_contact", "lead_forward"})


@dataclass(frozen=True)
class Paragraph:
    text: str


@dataclass(frozen=True)
class Table:
    rows: tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Link:
    label: str
    url: str


Block = Paragraph | Table | Link


@dataclass(frozen=True)
class RenderedEmail:
    subject: str
    text: str
    html: str


# --- helpers ---------------------------------------------------------------------------------------


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    return str(value)


def label(name: str) -> str:
    return name.replace("_", " ").strip().capitalize() or name


def lead_name(fields: Mapping[str, Any]) -> str:
    parts = [_text(fields.get(k)).strip() for k in ("first_name", "last_name")]
    name = " ".join(p for p in parts if p) or _text(fields.get("name")).strip()
    return name or "a lead"


def lead_table(fields: Mapping[str, Any]) -> Table:
    return Table(tuple((label(k), _text(v)) for k, v in fields.items()))


def format_when(value: Any, time_zone: str | None) -> str:
    """An ISO timestamp shown in the client's time zone, with the zone named."""
    if not value:
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    try:
        zone = ZoneInfo(time_zone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        zone = ZoneInfo("UTC")
    local = moment.astimezone(zone)
    return f"{local:%a %d %b %Y %H:%M} ({zone.key})"


def _link(blocks: list[Block], label_text: str, url: str | None) -> None:
    if (safe := safe_link(url)) is not None:
        blocks.append(Link(label_text, safe))


def _expiry(blocks: list[Block], days: int | None) -> None:
    if days is not None and days > 0:
        blocks.append(Paragraph(f"The link works for {days} day{'s' if days != 1 else ''}."))


# --- templates -------------------------------------------------------------------------------------


def _lead_delivery(n: NotificationRequested) -> tuple[str, list[Block]]:
    d = n.details(LeadDeliveryData)
    lead_type = _text(d.lead_type_name or d.lead_type or "")
    what = f"{lead_type} lead" if lead_type else "lead"
    blocks: list[Block] = [Paragraph(f"A new {what} has been delivered to you."), lead_table(n.lead_fields)]
    _link(blocks, "Open the lead in the portal", n.portal_link)
    _expiry(blocks, d.expires_in_days)
    return n.subject or f"New {what}: {lead_name(n.lead_fields)}", blocks


def _new_lead(n: NotificationRequested) -> tuple[str, list[Block]]:
    d = n.details(NewLeadData)
    lead_type = _text(d.lead_type_name or d.lead_type or "")
    what = f"{lead_type} lead" if lead_type else "lead"
    greeting = f"Hello {_text(d.user_name)}," if d.user_name else "Hello,"
    client = _text(d.client_name or n.client_id or "your account")
    blocks: list[Block] = [
        Paragraph(greeting),
        Paragraph(f"A new {what} was delivered to {client}."),
    ]
    if d.assigned_to:
        blocks.append(Paragraph(f"It was assigned to {_text(d.assigned_to)}."))
    blocks.append(lead_table(n.lead_fields))
    _link(blocks, "Open the lead in the portal", n.portal_link)
    _expiry(blocks, d.expires_in_days)
    blocks.append(Paragraph("You get this email because new lead notifications are on in your portal settings."))
    return n.subject or f"New lead: {lead_name(n.lead_fields)}", blocks


def _lead_forward(n: NotificationRequested) -> tuple[str, list[Block]]:
    d = n.details(LeadForwardData)
    sender = _text(d.from_name or d.from_email or "A Leadwire portal user")
    blocks: list[Block] = [Paragraph(f"{sender} forwarded this lead to you.")]
    if n.message:
        blocks.append(Paragraph(n.message))
    blocks.append(lead_table(n.lead_fields))
    return n.subject or f"Lead forwarded: {lead_name(n.lead_fields)}", blocks


def _lead_contact(n: NotificationRequested) -> tuple[str, list[Block]]:
    # Goes to the lead themselves: only the sender's words, never the lead record or portal data.
    d = n.details(LeadContactData)
    sender = _text(d.from_name or d.client_name or "")
    blocks: list[Block] = [Paragraph(n.message or "")]
    if sender:
        blocks.append(Paragraph(f"— {sender}"))
    return n.subject or (f"A message from {sender}" if sender else "A message about your request"), blocks


def _password_reset(n: NotificationRequested) -> tuple[str, list[Block]]:
    blocks: list[Block] = [Paragraph("Someone asked to reset the password of your Leadwire portal account.")]
    _link(blocks, "Choose a new password", n.portal_link)
    minutes = n.details(PasswordResetData).expires_in_minutes
    if minutes is not None and minutes > 0:
        blocks.append(Paragraph(f"The link works once, for {minutes} minutes."))
    blocks.append(Paragraph("If it was not you, ignore this email: your password stays as it is."))
    return n.subject or "Reset your Leadwire portal password", blocks


def _details(data: Mapping[str, Any]) -> Table:
    return Table(tuple((label(k), _text(v)) for k, v in data.items()))


def _account_paused(n: NotificationRequested) -> tuple[str, list[Block]]:
    d = n.details(AccountPausedData)
    account = _text(d.delivery_account_id or "a delivery account")
    blocks: list[Block] = [Paragraph(f"Delivery account {account} was paused automatically.")]
    message = n.message
    if message is None and d.delivery_account_id and d.consecutive_failures is not None:
        message = (
            f"Leadwire paused delivery account {d.delivery_account_id} (client {n.client_id}) after"
            f" {d.consecutive_failures} consecutive failed attempts; last: {d.last_error}. "
            f"Resume it with: leadwire delivery resume {d.delivery_account_id}"
        )
    if message:
        blocks.append(Paragraph(message))
    if given := d.items_given():
        blocks.append(_details(given))
    return n.subject or f"Delivery account {account} paused", blocks


def _order_filled(n: NotificationRequested) -> tuple[str, list[Block]]:
    d = n.details(OrderFilledData)
    order = _text(d.order_id or "an order")
    blocks: list[Block] = [Paragraph(f"Order {order} is filled.")]
    message = n.message
    if message is None and d.order_id and d.received is not None and d.total is not None:
        unit = "leads" if d.order_type == "lead_quantity" else "dollars"
        if d.renewed:
            outcome = "It renews now for a new period."
        elif d.status == "closed":
            outcome = "It is now closed."
        else:
            outcome = "It stays open until its end date."
        message = (
            f"Order {d.order_id} of client {d.client_id} received {_text(d.received)} of {_text(d.total)}"
            f" {unit} (cost {_text(d.cost)}). {outcome}"
        )
    if message:
        blocks.append(Paragraph(message))
    if given := d.items_given():
        blocks.append(_details(given))
    return n.subject or f"Order {order} filled", blocks


def _appointment_facts(n: NotificationRequested, d: AppointmentData) -> Table:
    rows = [("When", format_when(d.starts_at, d.time_zone))]
    if d.title:
        rows.append(("Title", _text(d.title)))
    if d.notes:
        rows.append(("Notes", _text(d.notes)))
    if d.assigned_name:
        rows.append(("Assigned to", _text(d.assigned_name)))
    if d.reminder_minutes is not None:
        rows.append(("Reminder", f"{_text(d.reminder_minutes)} minutes before"))
    rows.append(("Lead", lead_name(n.lead_fields)))
    return Table(tuple(rows))


def _appointment(n: NotificationRequested) -> tuple[str, list[Block]]:
    d = n.details(AppointmentData)
    when = format_when(d.starts_at, d.time_zone)
    name = _text(d.title).strip() or f"appointment with {lead_name(n.lead_fields)}"
    blocks: list[Block] = []
    match n.kind:
        case "appointment_created":
            by = _text(d.created_by_name)
            blocks.append(Paragraph(f"{by} assigned you an appointment." if by else "You have a new appointment."))
            subject = f"Appointment: {name}, {when}"
        case "appointment_updated":
            changed = d.changed
            blocks.append(
                Paragraph(
                    "An appointment assigned to you was changed"
                    + (f" ({', '.join(label(c).lower() for c in changed)})." if changed else ".")
                )
            )
            subject = f"Appointment changed: {name}, {when}"
        case "appointment_cancelled":
            blocks.append(Paragraph("This appointment was cancelled; there will be no reminder."))
            subject = f"Appointment cancelled: {name}, {when}"
        case "appointment_reminder":
            if d.late:
                due = format_when(d.reminder_due_at, d.time_zone)
                blocks.append(Paragraph(f"This reminder is late: it was due {due} but could not be sent then."))
                subject = f"Late reminder: {name}, {when}"
            else:
                subject = f"Reminder: {name}, {when}"
            blocks.append(Paragraph("You have an appointment coming up."))
        case _:
            raise ValueError(f"{n.kind} is not an appointment email")
    blocks.append(_appointment_facts(n, d))
    if n.kind != "appointment_cancelled" and n.lead_fields:
        blocks.append(lead_table(n.lead_fields))
    _link(blocks, "Open the lead in the portal", n.portal_link)
    return n.subject or subject, blocks


def _return_decided(n: NotificationRequested) -> tuple[str, list[Block]]:
    d = n.details(ReturnDecidedData)
    approved = d.status == "approved"
    decision = "approved" if approved else "denied"
    greeting = f"Hello {_text(d.user_name)}," if d.user_name else "Hello,"
    name = lead_name(n.lead_fields)
    client = _text(d.client_name or n.client_id or "your account")
    rows = [("Lead", f"{name} ({_text(n.lead_id)})"), ("Decision", decision.capitalize())]
    if d.reason:
        rows.append(("Your reason", _text(d.reason)))
    rows.append(("Note from the seller", _text(d.note) or "(none)"))
    if approved:
        rows.append(("Credit", _text(d.credit if d.credit is not None else 0)))
    blocks: list[Block] = [
        Paragraph(greeting),
        Paragraph(f"The return of lead {name} ({client}) was {decision} by the seller."),
        Table(tuple(rows)),
    ]
    if approved and d.credit:
        blocks.append(Paragraph(f"{_text(d.credit)} was credited to your balance."))
    _link(blocks, "See your returns in the portal", n.portal_link)
    return n.subject or f"Return {decision}: {name}", blocks


TEMPLATES = {
    "lead_delivery": _lead_delivery,
    "new_lead": _new_lead,
    "lead_forward": _lead_forward,
    "lead_contact": _lead_contact,
    "password_reset": _password_reset,
    "account_paused": _account_paused,
    "order_filled": _order_filled,
    "appointment_created": _appointment,
    "appointment_updated": _appointment,
    "appointment_cancelled": _appointment,
    "appointment_reminder": _appointment,
    "return_decided": _return_decided,
}


# --- renderers -------------------------------------------------------------------------------------


def to_text(blocks: list[Block]) -> str:
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Table):
            width = max((len(k) for k, _ in block.rows), default=0)
            out.append("\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in block.rows))
        else:
            out.append(f"{block.label}: {block.url}")
    return "\n\n".join(out) + "\n"


def to_html(blocks: list[Block]) -> str:
    def e(value: str) -> str:
        return html.escape(value, quote=True)

    out: list[str] = []
    for block in blocks:
        if isinstance(block, Paragraph):
            out.append("<p>" + e(block.text).replace("\n", "<br>\n") + "</p>")
        elif isinstance(block, Table):
            rows = "".join(
                f'<tr><th align="left" style="padding:2px 12px 2px 0">{e(k)}</th><td>{e(v)}</td></tr>'
                for k, v in block.rows
            )
            out.append(f'<table cellspacing="0">{rows}</table>')
        else:
            out.append(f'<p><a href="{e(block.url)}">{e(block.label)}</a></p>')
    body = "\n".join(out)
    return f'<!doctype html>\n<html><body style="font-family:sans-serif">\n{body}\n</body></html>\n'


def render(notification: NotificationRequested) -> RenderedEmail:
    subject, blocks = TEMPLATES[notification.kind](notification)
    return RenderedEmail(clean_header(subject), to_text(blocks), to_html(blocks))


def compose(
    email: RenderedEmail,
    *,
    kind: str,
    sender: str,
    recipients: list[str],
    message_id: str,
    date: datetime,
    reply_to: str | None = None,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = sender
    message["To"] = ", ".join(recipients)
    message["Subject"] = email.subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message["X-Leadwire-Kind"] = kind
    if reply_to and valid_address(reply_to.strip()):
        message["Reply-To"] = reply_to.strip()
    if kind not in HUMAN_KINDS:
        message["Auto-Submitted"] = "auto-generated"
    message.set_content(email.text)
    message.add_alternative(email.html, subtype="html")
    return message

"""`leadwire notifier ...`: check the SMTP set-up and look at what notifier holds.

leadwire notifier test-email ADDRESS         send one email straight to the SMTP server (no queue)
leadwire notifier unsent                     notifications not sent yet, with their last error
leadwire notifier appointments CLIENT_ID     a client's upcoming appointments and their reminders
"""

from __future__ import annotations

import argparse
import sys
import uuid
from datetime import UTC, datetime
from email.message import EmailMessage

from services.notifier import rules, store
from services.notifier.mailer import EmailRefused, Mailer
from shared import db
from shared.service import TransientError
from shared.settings import Settings


async def _test_email(args: argparse.Namespace, settings: Settings) -> int:
    if not rules.valid_address(args.address):
        print(f"not an email address: {args.address!r}", file=sys.stderr)
        return 2
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = args.address
    message["Subject"] = "Leadwire test email"
    message["Message-ID"] = rules.message_id_header(uuid.uuid4(), settings.smtp_from)
    message["Auto-Submitted"] = "auto-generated"
    message.set_content(
        f"notifier can send through {settings.smtp_host}:{settings.smtp_port}"
        f" ({datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC).\n"
    )
    try:
        refused = await Mailer(settings).send(message, [args.address])
    except (TransientError, EmailRefused) as exc:
        print(f"failed: {exc}", file=sys.stderr)
        return 1
    if refused:
        print(f"refused: {refused}", file=sys.stderr)
        return 1
    print(f"sent to {args.address} via {settings.smtp_host}:{settings.smtp_port}")
    return 0


async def _unsent(args: argparse.Namespace, settings: Settings) -> int:
    async with db.connection(settings.database_url) as conn:
        rows = await store.unsent(conn, args.limit)
    for r in rows:
        print(
            f"{r['notification_id']}\t{r['kind']}\t{','.join(r['recipients'])}\t{r['attempts']}\t"
            f"{r['created_at']:%Y-%m-%d %H:%M:%S%z}\t{r['last_error'] or ''}"
        )
    if not rows:
        print("every notification has been sent")
    return 0


async def _appointments(args: argparse.Namespace, settings: Settings) -> int:
    async with db.connection(settings.database_url) as conn:
        rows = await store.appointments_of(conn, args.client_id, since=None if args.all else datetime.now(UTC))
    for r in rows:
        reminder = (
            "none"
            if r["reminder_due_at"] is None
            else f"{'queued' if r['reminder_queued_at'] else 'due'} {r['reminder_due_at']:%Y-%m-%d %H:%M%z}"
            + (" (late)" if r["reminder_late"] else "")
        )
        print(
            f"{r['id']}\t{r['starts_at']:%Y-%m-%d %H:%M%z}\t{r['status']}\t{r['assigned_user_id']}\t"
            f"reminder {reminder}\t{r['title']}"
        )
    if not rows:
        print(f"no appointments for client {args.client_id!r}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    notifier = subparsers.add_parser("notifier", help="emails and appointments").add_subparsers(
        dest="action", required=True
    )
    test = notifier.add_parser("test-email", help="send a test email through the configured SMTP server")
    test.add_argument("address")
    test.set_defaults(handler=_test_email)
    unsent = notifier.add_parser("unsent", help="notifications not sent yet, with their last error")
    unsent.add_argument("--limit", type=int, default=100)
    unsent.set_defaults(handler=_unsent)
    appointments = notifier.add_parser("appointments", help="a client's upcoming appointments")
    appointments.add_argument("client_id")
    appointments.add_argument("--all", action="store_true", help="include past appointments")
    appointments.set_defaults(handler=_appointments)

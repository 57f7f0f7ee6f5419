"""`leadwire portal ...`: what the seller does before any portal user exists.

  leadwire portal create-user --client ID --email E --name N [--admin] [--view-downline] [--invite]

The password comes from the LEADWIRE_PASSWORD environment variable, else from a prompt (asked
twice, never echoed); with --invite the user gets an emailed link to set it instead. The first
user of a client is always an admin.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import UTC, datetime

from services.portal_auth import rules, store, usecases
from services.portal_auth.config import PortalAuthConfig
from services.portal_auth.credentials import Passwords
from shared import db
from shared.catalog.store import load_latest
from shared.process import Standalone
from shared.settings import Settings

PASSWORD_ENV = "LEADWIRE_PASSWORD"


def register(subparsers: argparse._SubParsersAction) -> None:
    portal = subparsers.add_parser("portal", help="Client Portal users").add_subparsers(dest="action", required=True)
    create = portal.add_parser("create-user", help="create a portal user of a client (the first one is an admin)")
    create.add_argument("--client", required=True, help="client id in the catalog")
    create.add_argument("--email", required=True)
    create.add_argument("--name", default="")
    create.add_argument("--admin", action="store_true", help="Admin Access: every area, manages users")
    create.add_argument("--view-downline", action="store_true", help="sees the leads of the users below them")
    create.add_argument("--parent", metavar="EMAIL", help="the user above this one (a user of the same client)")
    create.add_argument("--notify-new-leads", action="store_true", help="turn the new-lead notification on")
    create.add_argument(
        "--invite",
        action="store_true",
        help=f"email a link to set the password instead of reading it from {PASSWORD_ENV} or a prompt",
    )
    create.set_defaults(handler=_create_user)


def _read_password(email: str) -> str | None:
    if (password := os.environ.get(PASSWORD_ENV)) is None:
        if not sys.stdin.isatty():
            print(f"no password: set {PASSWORD_ENV}, run in a terminal, or pass --invite", file=sys.stderr)
            return None
        password = getpass.getpass("password: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return None
    if (problem := rules.password_problem(password, email)) is not None:
        print(f"password refused: {problem}", file=sys.stderr)
        return None
    return password


async def _create_user(args: argparse.Namespace, settings: Settings) -> int:
    password = None if args.invite else _read_password(args.email)
    if password is None and not args.invite:
        return 1
    config = PortalAuthConfig()
    passwords = Passwords(
        time_cost=config.argon2_time_cost, memory_cost=config.argon2_memory_kib, parallelism=config.argon2_parallelism
    )
    password_hash = await passwords.hash(password) if password is not None else None
    await db.ensure_database(settings.database_url)
    await db.migrate(settings.database_url)
    conn = await db.connect(settings.database_url)
    try:
        _, catalog = await load_latest(conn)
        if args.client not in catalog.clients_by_id:
            print(f"no client {args.client!r} in the catalog (apply it first: leadwire catalog apply)", file=sys.stderr)
            return 1
        parent_id = None
        if args.parent:
            parent = await store.user_by_email(conn, rules.email_key(args.parent))
            if parent is None or parent["client_id"] != args.client:
                print(f"no portal user {args.parent!r} in client {args.client!r}", file=sys.stderr)
                return 1
            parent_id = parent["id"]
        deps = usecases.Deps(
            # add_user works on the connection it is given: no pool.
            Standalone(None, catalog, settings),
            config=config,
            passwords=passwords,
            clock=lambda: datetime.now(UTC),
        )
        try:
            async with conn.transaction():
                user = await usecases.add_user(
                    conn,
                    deps,
                    client_id=args.client,
                    email=args.email,
                    name=args.name,
                    password_hash=password_hash,
                    is_admin=args.admin,
                    view_downline=args.view_downline,
                    notify_new_leads=args.notify_new_leads,
                    parent_user_id=parent_id,
                    now=datetime.now(UTC),
                )
        except usecases.Refused as refused:
            print(f"refused: {refused.failure.message}", file=sys.stderr)
            return 1
    finally:
        await conn.close()
    role = "admin" if user["is_admin"] else "user"
    note = " (the first user of a client is always an admin)" if user["is_admin"] and not args.admin else ""
    print(f"created portal {role} {user['id']} <{user['email']}> for client {args.client}{note}")
    if args.invite:
        print("an invitation to set the password is queued for notifier")
    return 0

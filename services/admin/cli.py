"""`leadwire staff ...`: the first owner of the admin console, before anyone can sign in.

  leadwire staff create --email E --role owner|admin|operator|viewer [--name N]
  leadwire staff list

The password comes from the LEADWIRE_PASSWORD environment variable, else from a prompt (asked
twice, never echoed). The creation is recorded in the audit as `cli:<login>`.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from datetime import UTC, datetime

from services.admin import rules, store, usecases
from services.admin.config import AdminConfig
from shared import db
from shared.process import Standalone
from shared.settings import Settings

PASSWORD_ENV = "LEADWIRE_PASSWORD"


def register(subparsers: argparse._SubParsersAction) -> None:
    staff = subparsers.add_parser("staff", help="admin console staff users").add_subparsers(
        dest="action", required=True
    )
    create = staff.add_parser("create", help="create a staff user of the admin console")
    create.add_argument("--email", required=True)
    create.add_argument("--role", required=True, choices=rules.ROLES)
    create.add_argument("--name", default="")
    create.set_defaults(handler=_create)
    staff.add_parser("list", help="list staff users").set_defaults(handler=_list)


def _read_password() -> str | None:
    if (password := os.environ.get(PASSWORD_ENV)) is not None:
        return password
    if not sys.stdin.isatty():
        print(f"no password: set {PASSWORD_ENV} or run in a terminal", file=sys.stderr)
        return None
    password = getpass.getpass("password: ")
    if getpass.getpass("again: ") != password:
        print("the passwords differ", file=sys.stderr)
        return None
    return password


async def _create(args: argparse.Namespace, settings: Settings) -> int:
    password = _read_password()
    if password is None:
        return 1
    config = AdminConfig()
    await db.ensure_database(settings.database_url)
    await db.migrate(settings.database_url)
    conn = await db.connect(settings.database_url)
    try:
        deps = usecases.Deps(
            Standalone(None, settings=settings),  # create_staff works on `conn`: no pool
            config,
            usecases.Deps.passwords_for(config),
            lambda: datetime.now(UTC),
        )
        try:
            staff_id = await usecases.create_staff(
                conn,
                deps,
                f"cli:{getpass.getuser()}",
                email=args.email,
                name=args.name,
                role=args.role,
                password=password,
            )
        except usecases.Refused as refused:
            for name, message in refused.errors.items():
                print(f"refused: {name}: {message}", file=sys.stderr)
            return 1
    finally:
        await conn.close()
    print(f"created staff {args.role} {staff_id} <{args.email.strip()}>")
    return 0


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with db.connection(settings.database_url) as conn:
        for row in await store.list_staff(conn):
            print(f"{row['id']}  {row['role']:<8} {'enabled ' if row['enabled'] else 'disabled'} {row['email']}")
    return 0

"""`leadwire delivery ...`: operate delivery accounts.

leadwire delivery resume ACCOUNT_ID    unpause an auto-paused account (resets its failure count)
leadwire delivery paused               list paused accounts and why
"""

from __future__ import annotations

import argparse
import sys

from services.delivery import store
from shared import db
from shared.settings import Settings


async def _resume(args: argparse.Namespace, settings: Settings) -> int:
    async with db.connection(settings.database_url) as conn:
        resumed = await store.resume(conn, args.account_id)
    if not resumed:
        print(f"delivery account {args.account_id!r} is not paused", file=sys.stderr)
        return 1
    print(f"delivery account {args.account_id} resumed")
    return 0


async def _paused(args: argparse.Namespace, settings: Settings) -> int:
    async with db.connection(settings.database_url) as conn:
        rows = await store.paused_accounts(conn)
    for row in rows:
        print(f"{row['delivery_account_id']}\t{row['paused_at']:%Y-%m-%d %H:%M:%S%z}\t{row['paused_reason']}")
    if not rows:
        print("no paused delivery accounts")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    delivery = subparsers.add_parser("delivery", help="delivery accounts").add_subparsers(dest="action", required=True)
    resume = delivery.add_parser("resume", help="unpause a delivery account")
    resume.add_argument("account_id")
    resume.set_defaults(handler=_resume)
    delivery.add_parser("paused", help="list paused delivery accounts").set_defaults(handler=_paused)

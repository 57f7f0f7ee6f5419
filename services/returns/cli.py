"""`leadwire returns ...` and `leadwire orders ...`.

The commands run the same use cases as the returns service's handlers, directly against the
database, so the admin sees the result at once; their events go through the outbox and any
running service's relay publishes them.

  leadwire returns list [--client C] [--status S]
  leadwire returns request CLIENT_ID LEAD_ID REASON [--comment TEXT]
  leadwire returns approve|deny RETURN_ID --note TEXT [--by NAME]
  leadwire orders show [--client C]
  leadwire orders pause|resume|close ORDER_ID
  leadwire orders payment ORDER_ID AMOUNT [--note TEXT]
"""

from __future__ import annotations

import argparse
import getpass
import sys
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal, InvalidOperation

import asyncpg

from services.returns import store, usecases
from shared import db, orders
from shared.catalog.store import load_latest
from shared.contracts import OrderCommand, ReturnDecide, ReturnRequest
from shared.process import Standalone
from shared.settings import Settings


@asynccontextmanager
async def _pool(settings: Settings) -> AsyncIterator[asyncpg.Pool]:
    await db.migrate(settings.database_url)
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        yield pool
    finally:
        await pool.close()


def _admin(args: argparse.Namespace) -> str:
    return args.by or f"cli:{getpass.getuser()}"


async def _decide(args: argparse.Namespace, settings: Settings) -> int:
    async with _pool(settings) as pool:
        result = await usecases.decide_return(
            usecases.Deps(Standalone(pool, settings=settings)),
            ReturnDecide(return_id=args.return_id, decision=args.decision, note=args.note, decided_by=_admin(args)),
        )
    print(result.message, file=sys.stdout if result.ok else sys.stderr)
    return 0 if result.ok else 1


async def _request(args: argparse.Namespace, settings: Settings) -> int:
    async with _pool(settings) as pool:
        _, catalog = await load_latest(pool)
        outcome = await usecases.request_return(
            usecases.Deps(Standalone(pool, catalog, settings)),
            ReturnRequest(
                return_id=uuid.uuid4(),
                client_id=args.client_id,
                lead_id=args.lead_id,
                reason=args.reason,
                comment=args.comment,
                requested_by=f"cli:{getpass.getuser()}",
            ),
        )
    print(
        f"return {outcome.return_id}: {outcome.status}"
        + (f" ({outcome.decision_reason}: {outcome.detail})" if outcome.decision_reason else "")
    )
    return 0 if outcome.status != "denied" else 1


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with _pool(settings) as pool:
        rows = await store.list_returns(pool, client_id=args.client, status=args.status, limit=args.limit)
    for r in rows:
        print(
            f"{r.return_id}  {r.requested_at:%Y-%m-%d %H:%M}  {r.client_id:<16} {r.status:<8}"
            f" {r.decision_reason or '':<16} lead {r.lead_id}  {r.reason}"
        )
    return 0


async def _order_status(args: argparse.Namespace, settings: Settings) -> int:
    async with _pool(settings) as pool:
        change = await usecases.order_command(
            usecases.Deps(Standalone(pool, settings=settings)),
            OrderCommand(order_id=args.order_id, action=args.action, requested_by=f"cli:{getpass.getuser()}"),
        )
    if not change.ok:
        print(f"order {args.order_id}: {change.error}", file=sys.stderr)
        return 1
    print(f"order {args.order_id}: {change.status}")
    return 0


async def _show(args: argparse.Namespace, settings: Settings) -> int:
    async with _pool(settings) as pool:
        figures = await orders.order_figures(pool, client_id=args.client)
    print(
        f"{'order':<20} {'client':<14} {'type':<14} {'status':<7} {'total':>10} {'received':>10}"
        f" {'remaining':>10} {'in flight':>10} {'cost':>10} {'paid':>10}"
    )
    for f in figures:
        print(
            f"{f.order_id:<20} {f.client_id:<14} {f.order_type:<14} {f.status:<7} {f.total:>10} {f.received:>10}"
            f" {f.remaining:>10} {f.in_flight:>10} {f.cost:>10} {f.amount_paid:>10}"
        )
    return 0


async def _payment(args: argparse.Namespace, settings: Settings) -> int:
    try:
        amount = Decimal(args.amount)
    except InvalidOperation:
        print(f"not an amount: {args.amount!r}", file=sys.stderr)
        return 1
    async with _pool(settings) as pool, pool.acquire() as conn, conn.transaction():
        paid = await orders.record_payment(conn, order_id=args.order_id, amount=amount, note=args.note)
    if paid is None:
        print(f"no order {args.order_id}", file=sys.stderr)
        return 1
    print(f"order {args.order_id}: amount paid {paid}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    returns = subparsers.add_parser("returns", help="lead returns").add_subparsers(dest="action", required=True)
    for decision, verb in (("approve", "approve"), ("deny", "deny")):
        p = returns.add_parser(verb, help=f"{verb} a pending return")
        p.add_argument("return_id", type=uuid.UUID)
        p.add_argument("--note", required=True, help="why (kept with the return and sent in return.decided)")
        p.add_argument("--by", help="who decides (default: cli:<login>)")
        p.set_defaults(handler=_decide, decision=decision)
    p = returns.add_parser("request", help="request a return on a client's behalf")
    p.add_argument("client_id")
    p.add_argument("lead_id", type=uuid.UUID)
    p.add_argument("reason")
    p.add_argument("--comment")
    p.set_defaults(handler=_request)
    p = returns.add_parser("list", help="list returns, newest first")
    p.add_argument("--client")
    p.add_argument("--status", choices=("pending", "approved", "denied"))
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(handler=_list)

    order_cmds = subparsers.add_parser("orders", help="buyers' orders").add_subparsers(dest="action", required=True)
    for action in ("pause", "resume", "close"):
        p = order_cmds.add_parser(action, help=f"{action} an order")
        p.add_argument("order_id")
        p.set_defaults(handler=_order_status)
    p = order_cmds.add_parser("show", help="the Order Manager figures")
    p.add_argument("--client")
    p.set_defaults(handler=_show)
    p = order_cmds.add_parser("payment", help="record a payment against an order's current period")
    p.add_argument("order_id")
    p.add_argument("amount")
    p.add_argument("--note")
    p.set_defaults(handler=_payment)

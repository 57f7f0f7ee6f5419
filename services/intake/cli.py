"""`leadwire keys ...`: API keys for sources (post leads over HTTP) and buyers (the buyer API).

  leadwire keys create-source --source web [--label L] [--rate N] [--test]
  leadwire keys create-buyer --client acme [--label L]
  leadwire keys list [--source S | --client C]
  leadwire keys revoke KEY_ID

A new key's token is printed once, on stdout, and never again: only its SHA-256 is stored. A source
key's callback signing secret is printed once too, on the next line (it is stored as it is: the
intake signs with it).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from shared import api_keys, db
from shared.catalog.store import export_catalog
from shared.settings import Settings


async def _create_source(args: argparse.Namespace, settings: Settings) -> int:
    await db.ensure_database(settings.database_url)
    await db.migrate(settings.database_url)
    async with db.connection(settings.database_url) as conn:
        catalog = await export_catalog(conn)
        if args.source not in {s.id for s in catalog.sources}:
            print(f"there is no source {args.source!r} in the catalog", file=sys.stderr)
            return 1
        key = await api_keys.create_source_key(
            conn, args.source, label=args.label, rate_per_second=args.rate, test_mode=args.test
        )
    print(f"source key {key.key_id} for source {key.owner!r} (shown once; keep it secret):", file=sys.stderr)
    print(key.token)
    print("its callback signing secret (shown once; docs/intake.md, Callbacks):", file=sys.stderr)
    print(key.callback_secret)
    return 0


async def _create_buyer(args: argparse.Namespace, settings: Settings) -> int:
    await db.ensure_database(settings.database_url)
    await db.migrate(settings.database_url)
    async with db.connection(settings.database_url) as conn:
        catalog = await export_catalog(conn)
        if args.client not in {c.id for c in catalog.clients}:
            print(f"there is no client {args.client!r} in the catalog", file=sys.stderr)
            return 1
        key = await api_keys.create_buyer_key(conn, args.client, label=args.label, created_by="cli")
    print(f"buyer key {key.key_id} for client {key.owner!r} (shown once; keep it secret):", file=sys.stderr)
    print(key.token)
    return 0


async def _list(args: argparse.Namespace, settings: Settings) -> int:
    async with db.connection(settings.database_url) as conn:
        rows: list[tuple[str, Any]] = []
        if args.client is None:
            rows += [("source", k) for k in await api_keys.list_keys(conn, "source", args.source)]
        if args.source is None:
            rows += [("buyer", k) for k in await api_keys.list_keys(conn, "buyer", args.client)]
    for kind, k in rows:
        state = f"revoked {k.revoked_at:%Y-%m-%d %H:%M}" if k.revoked_at else "live"
        extra = f" rate={k.rate_per_second}/s" + (" test" if k.test_mode else "")
        print(f"{k.key_id}  {kind:6} {k.owner:20} {state:22} created {k.created_at:%Y-%m-%d %H:%M}{extra}  {k.label}")
    return 0


async def _revoke(args: argparse.Namespace, settings: Settings) -> int:
    async with db.connection(settings.database_url) as conn:
        done = await api_keys.revoke(conn, "source", args.key_id) or await api_keys.revoke(conn, "buyer", args.key_id)
    if not done:
        print(f"no live key {args.key_id!r}", file=sys.stderr)
        return 1
    print(f"key {args.key_id} revoked")
    return 0


def register(sub: Any) -> None:
    keys = sub.add_parser("keys", help="API keys for sources and buyers").add_subparsers(dest="action", required=True)
    source = keys.add_parser("create-source", help="a source API key (prints the token once)")
    source.add_argument("--source", required=True, help="the catalog source the key posts as")
    source.add_argument("--label", default="")
    source.add_argument("--rate", type=int, default=50, help="requests per second allowed (default 50)")
    source.add_argument("--test", action="store_true", help="test mode: leads are validated, never sold")
    source.set_defaults(handler=_create_source)
    buyer = keys.add_parser("create-buyer", help="a buyer API key (prints the token once)")
    buyer.add_argument("--client", required=True, help="the catalog client the key acts for")
    buyer.add_argument("--label", default="")
    buyer.set_defaults(handler=_create_buyer)
    listing = keys.add_parser("list", help="keys (never their tokens)")
    listing.add_argument("--source")
    listing.add_argument("--client")
    listing.set_defaults(handler=_list)
    revoke = keys.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_revoke)

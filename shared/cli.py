"""The `leadwire` command.

  leadwire catalog apply FILE     validate FILE and apply it atomically (any error: nothing changes)
  leadwire catalog check FILE     validate only
  leadwire catalog export         print the current catalog as YAML
  leadwire migrate                create the database if needed and apply migrations
  leadwire broker setup           declare the whole broker topology (as a privileged AMQP_URL user)
  leadwire broker users           per-role RabbitMQ users with permission patterns (shared/broker_users.py),
                                  then `broker setup`

Services add their own commands in `services/<name>/cli.py`, a module with
`register(subparsers)` that adds parsers and sets `handler=<async function (args, settings) -> int>`.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from pathlib import Path

import aiormq

from shared import broker_users, db, topology
from shared.catalog.loader import CatalogInvalid, dump_catalog, parse_catalog
from shared.catalog.model import CONSOLE_MASK, console_masks
from shared.catalog.store import apply_catalog, export_catalog
from shared.settings import Settings

SERVICE_COMMANDS = ("router", "delivery", "returns", "portal_auth", "notifier", "intake", "admin")


def _print_errors(exc: CatalogInvalid) -> None:
    print(f"catalog refused: {len(exc.errors)} error(s); nothing was changed", file=sys.stderr)
    for error in exc.errors:
        print(f"  {error}", file=sys.stderr)


async def _apply(args: argparse.Namespace, settings: Settings) -> int:
    path: Path = args.file
    try:
        catalog = parse_catalog(path.read_text(encoding="utf-8"))
    except CatalogInvalid as exc:
        _print_errors(exc)
        return 1
    except OSError as exc:
        print(f"cannot read {path}: {exc}", file=sys.stderr)
        return 1
    if masked := console_masks(catalog):
        print(f"catalog refused: {len(masked)} error(s); nothing was changed", file=sys.stderr)
        for where in masked:
            print(
                f"  {where}: holds the admin console's mask {CONSOLE_MASK!r}, not a credential"
                " (a console download? use `leadwire catalog export`, or put the secret itself)",
                file=sys.stderr,
            )
        return 1
    if args.dry_run:
        print(f"{path}: valid ({len(catalog.clients)} clients, {len(catalog.delivery_accounts)} delivery accounts)")
        return 0
    await db.ensure_database(settings.database_url)
    await db.migrate(settings.database_url)
    conn = await db.connect(settings.database_url)
    try:
        version = await apply_catalog(conn, catalog)
    except CatalogInvalid as exc:
        _print_errors(exc)
        return 1
    finally:
        await conn.close()
    if version is None:
        print("catalog unchanged")
    else:
        print(
            f"catalog version {version} applied: {len(catalog.lead_types)} lead types, "
            f"{len(catalog.clients)} clients, {len(catalog.groups)} groups, "
            f"{len(catalog.delivery_accounts)} delivery accounts, {len(catalog.orders)} orders"
        )
    return 0


async def _export(args: argparse.Namespace, settings: Settings) -> int:
    async with db.connection(settings.database_url) as conn:
        catalog = await export_catalog(conn)
    sys.stdout.write(dump_catalog(catalog))
    return 0


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    await db.ensure_database(settings.database_url)
    applied = await db.migrate(settings.database_url)
    print(f"applied {len(applied)} migration(s)" + (f": {', '.join(applied)}" if applied else ""))
    return 0


async def _broker_users(args: argparse.Namespace, settings: Settings) -> int:
    sources = [s for s in (args.sources or "").split(",") if s]
    if args.catalog_sources:
        async with db.connection(settings.database_url) as conn:
            sources += [s.id for s in (await export_catalog(conn)).sources if s.id not in sources]
    services = [s for s in args.services.split(",") if s]
    unknown = [s for s in services if s not in broker_users.SERVICES]
    if unknown:
        print(f"unknown service(s): {', '.join(unknown)} (known: {', '.join(broker_users.SERVICES)})", file=sys.stderr)
        return 1
    namespace = args.namespace or settings.namespace
    users = broker_users.plan(namespace, sources, services)
    try:
        broker_users.apply(users, vhost=args.vhost, rabbitmqctl=args.rabbitmqctl)
    except (RuntimeError, OSError) as exc:
        print(str(exc), file=sys.stderr)
        return 1
    if not args.no_setup:
        code = await _broker_setup(args, settings)
        if code:
            return code
    print("broker users (passwords shown once; services run with LEADWIRE_TOPOLOGY=own):", file=sys.stderr)
    for user in users:
        fenced = "" if user.role == "source" else " LEADWIRE_TOPOLOGY=own"
        print(f"{user.role:12} AMQP_URL={broker_users.amqp_url_for(settings.amqp_url, user)}{fenced}")
    return 0


async def _broker_setup(args: argparse.Namespace, settings: Settings) -> int:
    """The privileged step: services fenced to their own queues cannot declare the topology."""
    namespace = args.namespace or settings.namespace
    try:
        await topology.setup(settings.amqp_url, namespace, settings.retry_delays)
    except (aiormq.exceptions.AMQPError, OSError) as exc:  # refused (not privileged), unreachable
        print(f"declaring the topology of {namespace!r} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(f"topology of namespace {namespace!r} declared", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="leadwire", description="Leadwire administration")
    sub = parser.add_subparsers(dest="command", required=True)
    catalog = sub.add_parser("catalog", help="configuration-as-code catalog").add_subparsers(
        dest="action", required=True
    )
    apply_p = catalog.add_parser("apply", help="validate and apply a catalog file atomically")
    apply_p.add_argument("file", type=Path)
    apply_p.set_defaults(handler=_apply, dry_run=False)
    check_p = catalog.add_parser("check", help="validate a catalog file without applying it")
    check_p.add_argument("file", type=Path)
    check_p.set_defaults(handler=_apply, dry_run=True)
    catalog.add_parser("export", help="print the current catalog as YAML").set_defaults(handler=_export)
    sub.add_parser("migrate", help="create the database if needed and apply migrations").set_defaults(handler=_migrate)
    broker = sub.add_parser("broker", help="RabbitMQ set-up").add_subparsers(dest="action", required=True)
    users = broker.add_parser("users", help="create per-role broker users with permission patterns (rabbitmqctl)")
    users.add_argument("--sources", default="", help="comma-separated source ids: a publish-to-inbound-only user each")
    users.add_argument("--catalog-sources", action="store_true", help="also every source of the current catalog")
    users.add_argument(
        "--services", default=",".join(broker_users.SERVICES), help="comma-separated services (default: every one)"
    )
    users.add_argument("--namespace", default=None, help="default: LEADWIRE_NAMESPACE")
    users.add_argument("--vhost", default="/")
    users.add_argument("--rabbitmqctl", default="rabbitmqctl")
    users.add_argument(
        "--no-setup", action="store_true", help="do not declare the topology (run `broker setup` yourself)"
    )
    users.set_defaults(handler=_broker_users)
    setup = broker.add_parser("setup", help="declare every exchange and queue (as a privileged AMQP_URL user)")
    setup.add_argument("--namespace", default=None, help="default: LEADWIRE_NAMESPACE")
    setup.set_defaults(handler=_broker_setup)
    for name in SERVICE_COMMANDS:
        try:
            module = importlib.import_module(f"services.{name}.cli")
        except ModuleNotFoundError as exc:
            if exc.name != f"services.{name}.cli":
                raise
            continue
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return asyncio.run(args.handler(args, Settings()))


if __name__ == "__main__":
    raise SystemExit(main())

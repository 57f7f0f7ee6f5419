"""The fault-injection run: replicas of every service, a steady stream of leads with returns and
appointments mixed in, and faults all the while; then every promise is checked.

  scripts/faults                         # the full run (about 4 minutes)
  scripts/faults --leads 300 --rate 15   # shorter
  scripts/faults --no-rabbit-restart     # leave the shared broker alone

Faults: SIGKILL of a random service process every few seconds (restarted at once), one RabbitMQ
restart (`rabbitmqctl stop_app` / `start_app`), one drop of every database connection of the run's
own database (`pg_terminate_backend`), a buyer endpoint failing 30% and hanging 5% of posts past
the timeout, and poison messages (not JSON, wrong schemas, a 2 MB body). The run uses its own
database and broker namespace and removes both afterwards. Exit status 0 only when every
invariant held (faults/invariants.py lists them).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from faults.catalog import BUYER_TIMEOUT, fault_catalog  # noqa: E402
from faults.endpoints import FlakyBuyer  # noqa: E402
from faults.invariants import check_all, drained  # noqa: E402
from harness.broker import consumer_count  # noqa: E402
from harness.catalog import apply_catalog_text  # noqa: E402
from harness.processes import Processes, service_env  # noqa: E402
from harness.smtp import SmtpSink  # noqa: E402
from shared import db  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.topology import WORK_QUEUES, Topology  # noqa: E402

OUTCOME_KEYS = ("lead.sold", "lead.unsold", "lead.duplicate", "lead.rejected")


@dataclass
class RunConfig:
    leads: int = 600
    rate: float = 5.0  # leads per second
    processes: dict[str, int] = field(default_factory=lambda: {"router": 3, "delivery": 2, "returns": 2, "notifier": 2})
    kill_every: float = 4.0  # seconds between SIGKILLs; 0 = no kills
    rabbit_restart: bool = True
    db_drop: bool = True
    poison: bool = True
    returns: int = 60  # return requests (some repeated, some refused)
    appointments: int = 15
    drain_timeout: float = 180.0
    seed: int | None = None
    quiet: bool = False


@dataclass
class Faults:
    kills: Counter[str] = field(default_factory=Counter)
    rabbit_restarts: int = 0
    db_drops: int = 0
    connections_dropped: int = 0
    poison: dict[str, str] = field(default_factory=dict)  # message_id -> logical queue expected to hold it


@dataclass
class Traffic:
    lead_keys: list[str] = field(default_factory=list)  # distinct idempotency keys confirmed published
    resent: int = 0  # re-sends of a key by its source
    invalid: int = 0
    duplicates: int = 0
    quick_duplicates: int = 0  # of which: the same person again while the first is likely in flight
    return_ids: list[str] = field(default_factory=list)
    appointments: list[str] = field(default_factory=list)
    publish_retries: int = 0


class FaultRun:
    def __init__(self, settings: Settings, config: RunConfig, *, log_dir: Path | None = None) -> None:
        self.settings = settings
        self.config = config
        self.rng = random.Random(config.seed)
        self.topology = Topology(settings.namespace, settings.retry_delays)
        self.buyer = FlakyBuyer(seed=config.seed, hang_seconds=BUYER_TIMEOUT + 1.0)
        self.mail = SmtpSink()
        self.faults = Faults()
        self.traffic = Traffic()
        self.unexpected_exits: list[str] = []
        self.hung_on_stop: list[str] = []
        self.log_dir = log_dir
        self.services: Processes | None = None
        self.users: dict[str, uuid.UUID] = {}
        self.tap = f"{settings.namespace}.faults.outcomes"
        self.started = time.monotonic()
        self._rabbit_down = asyncio.Event()

    def say(self, text: str) -> None:
        if not self.config.quiet:
            print(f"[{time.monotonic() - self.started:6.1f}s] {text}", flush=True)

    # --- set-up ----------------------------------------------------------------------------------

    async def setup(self) -> None:
        self.buyer.start()
        self.mail.start()
        await db.ensure_database(self.settings.database_url)
        await db.migrate(self.settings.database_url)
        await apply_catalog_text(self.settings.database_url, fault_catalog(self.buyer))
        conn = await db.connect(self.settings.database_url)
        try:
            for client in ("a", "d"):
                user_id = uuid.uuid4()
                await conn.execute(
                    "INSERT INTO portal_users (id, client_id, email, name, enabled, notify_new_leads)"
                    " VALUES ($1, $2, $3, $4, true, false)",
                    user_id,
                    client,
                    f"agent-{client}-{user_id.hex[:6]}@example.com",
                    f"Agent {client}",
                )
                self.users[client] = user_id
        finally:
            await conn.close()
        # The topology and an outcome tap exist before any lead is published.
        from faststream.rabbit import RabbitBroker

        broker = RabbitBroker(self.settings.amqp_url)
        await broker.connect()
        try:
            await self.topology.declare(broker)
        finally:
            await broker.stop()
        connection = await aio_pika.connect(self.settings.amqp_url)
        try:
            channel = await connection.channel()
            tap = await channel.declare_queue(self.tap, durable=True)
            events = await channel.get_exchange(self.topology.events.name)
            for key in OUTCOME_KEYS:
                await tap.bind(events, key)
        finally:
            await connection.close()

    def service_env(self) -> dict[str, str]:
        return service_env(
            self.settings,
            LEADWIRE_POLL_INTERVAL="0.2",
            # Small pools: nine processes share the server with everything else on it.
            LEADWIRE_DB_POOL_MAX="3",
            LEADWIRE_DB_POOL_MIN="1",
            LEADWIRE_PREFETCH="4",
            SMTP_HOST="127.0.0.1",
            SMTP_PORT=str(self.mail.port),
            SMTP_FROM="leadwire@faults.example.com",
            ADMIN_EMAIL="ops@faults.example.com",
            LEADWIRE_HEALTH_FILE=f"/tmp/leadwire-faults-{self.settings.namespace}-health",
            PYTHONUNBUFFERED="1",
        )

    async def consumers(self) -> dict[str, int]:
        return {
            logical: await consumer_count(self.settings.amqp_url, self.topology.queue_name(logical)) or 0
            for logical in WORK_QUEUES
        }

    async def wait_consuming(self, timeout: float = 90.0) -> None:
        want = {
            "router.leads": "router",
            "delivery.requests": "delivery",
            "returns.commands": "returns",
            "notifier.requests": "notifier",
        }
        deadline = time.monotonic() + timeout
        while True:
            found = await self.consumers()
            if all(found[q] >= self.config.processes.get(svc, 0) for q, svc in want.items()):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"services did not start consuming in time: {found}")
            await asyncio.sleep(0.5)

    # --- traffic ---------------------------------------------------------------------------------

    async def _publish(
        self, exchange_name: str, routing_key: str, body: bytes, message_id: str, headers: dict[str, Any] | None = None
    ) -> None:
        """Publish with confirms until the broker confirms once; a lost confirm means a re-send
        with the same message id, as any careful source does."""
        while True:
            try:
                connection = await aio_pika.connect(self.settings.amqp_url, timeout=5)
                try:
                    channel = await connection.channel(publisher_confirms=True)
                    exchange = await channel.get_exchange(exchange_name, ensure=False)
                    await exchange.publish(
                        aio_pika.Message(
                            body,
                            message_id=message_id,
                            headers=headers,
                            content_type="application/json",
                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                        ),
                        routing_key=routing_key,
                        timeout=10,
                    )
                    return
                finally:
                    await connection.close()
            except (aio_pika.exceptions.AMQPError, ConnectionError, OSError, TimeoutError):
                self.traffic.publish_retries += 1
                await asyncio.sleep(0.5)

    async def publish_leads(self) -> None:
        phones: list[str] = []
        sent: list[tuple[str, bytes]] = []
        interval = 1 / self.config.rate
        for n in range(self.config.leads):
            roll = self.rng.random()
            if sent and roll < 0.03:
                key, body = self.rng.choice(sent)  # the source sends the same lead again
                self.traffic.resent += 1
                await self._publish(self.topology.inbound.name, "lead.solar", body, key)
                await asyncio.sleep(interval)
                continue
            if phones and roll < 0.07:
                # The same person again while the first lead is likely still being offered (the
                # race of Route Duplicate Leads: the copy must not go where the first one goes).
                phone = self.rng.choice(phones[-3:])
                self.traffic.duplicates += 1
                self.traffic.quick_duplicates += 1
            elif phones and roll < 0.10:
                phone = self.rng.choice(phones)  # the same person, as a new lead
                self.traffic.duplicates += 1
            elif roll < 0.14:
                phone = "555"  # invalid: rejected with the reason
                self.traffic.invalid += 1
            else:
                phone = f"415{2000000 + n:07d}"
                phones.append(phone)
            key = f"fault-{uuid.uuid4()}"
            body = json.dumps(
                {"lead_type": "solar", "source": "web", "fields": {"first_name": f"Lead{n}", "phone": phone}}
            ).encode()
            await self._publish(self.topology.inbound.name, "lead.solar", body, key)
            self.traffic.lead_keys.append(key)
            sent.append((key, body))
            await asyncio.sleep(interval)

    async def _sold(self, clients: str | None = None) -> list[asyncpg.Record]:
        conn = await db.connect(self.settings.database_url)
        try:
            return await conn.fetch(
                "SELECT lead_id, client_id FROM deliveries WHERE status = 'succeeded'"
                " AND ($1::text IS NULL OR client_id = ANY(string_to_array($1, ',')))",
                clients,
            )
        finally:
            await conn.close()

    async def publish_returns_and_appointments(self, publishing: asyncio.Task[None]) -> None:
        """Returns and appointments for leads already sold, spread over the lead stream."""
        returns_left, appointments_left = self.config.returns, self.config.appointments
        asked: set[tuple[str, str]] = set()
        booked: set[str] = set()
        while returns_left > 0 or appointments_left > 0:
            done = publishing.done()
            await asyncio.sleep(1.0)
            try:
                sold = await self._sold()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
                continue
            self.rng.shuffle(sold)
            before = (returns_left, appointments_left)
            batch = max(1, self.config.returns // 20) if not done else returns_left
            for row in sold:
                if returns_left <= 0 or batch <= 0:
                    break
                pair = (str(row["lead_id"]), row["client_id"])
                if pair in asked:
                    continue
                asked.add(pair)
                await self._return(row["lead_id"], row["client_id"])
                returns_left -= 1
                batch -= 1
                roll = self.rng.random()
                if roll < 0.15 and returns_left > 0:  # the same request again (same return id)
                    await self._return(row["lead_id"], row["client_id"], again=True)
                    returns_left -= 1
                elif roll < 0.25 and returns_left > 0:  # a second request for the same lead
                    await self._return(row["lead_id"], row["client_id"])
                    returns_left -= 1
            for row in sold:
                if appointments_left <= 0:
                    break
                if row["client_id"] not in self.users or str(row["lead_id"]) in booked:
                    continue
                booked.add(str(row["lead_id"]))
                await self._appointment(row["lead_id"], row["client_id"])
                appointments_left -= 1
                break  # one per round: spread them over the run
            if done and (returns_left, appointments_left) == before:
                break  # the leads are all out and no sold lead is left to ask about

    async def _return(self, lead_id: uuid.UUID, client_id: str, *, again: bool = False) -> None:
        return_id = self.traffic.return_ids[-1] if again else str(uuid.uuid4())
        reason = "not_a_reason" if self.rng.random() < 0.1 else "wrong_number"
        body = json.dumps(
            {
                "return_id": return_id,
                "client_id": client_id,
                "lead_id": str(lead_id),
                "reason": reason,
                "requested_by": "faults",
            }
        ).encode()
        await self._publish(self.topology.events.name, "return.request", body, f"ret-{uuid.uuid4()}")
        if not again:
            self.traffic.return_ids.append(return_id)

    async def _appointment(self, lead_id: uuid.UUID, client_id: str) -> None:
        now = datetime.now(UTC)
        appointment_id = str(uuid.uuid4())
        # Starts soon, reminder due at once: every reminder is exercised within the run.
        body = json.dumps(
            {
                "appointment_id": appointment_id,
                "client_id": client_id,
                "lead_id": str(lead_id),
                "assigned_user_id": str(self.users[client_id]),
                "starts_at": (now + timedelta(minutes=30)).isoformat(),
                "reminder_minutes_before": 45,
                "title": "Site visit",
                "requested_at": now.isoformat(),
            }
        ).encode()
        await self._publish(self.topology.events.name, "appointment.create", body, f"apt-{uuid.uuid4()}")
        self.traffic.appointments.append(appointment_id)

    async def inject_poison(self) -> None:
        big = json.dumps({"garbage": "x" * (2 * 1024 * 1024)}).encode()
        cases = [
            (self.topology.inbound.name, "lead.solar", b"\x00\xffthis is not json", "router.leads"),
            (
                self.topology.inbound.name,
                "lead.solar",
                json.dumps({"lead_type": 5, "fields": []}).encode(),
                "router.leads",
            ),
            (self.topology.inbound.name, "lead.solar", big, "router.leads"),
            (self.topology.events.name, "return.request", json.dumps({"lead_id": "nope"}).encode(), "returns.commands"),
            (self.topology.events.name, "appointment.create", b"{not json", "notifier.requests"),
            (
                self.topology.events.name,
                "delivery.requested",
                json.dumps({"hello": "world"}).encode(),
                "delivery.requests",
            ),
        ]
        for exchange, key, body, queue in cases:
            message_id = f"poison-{uuid.uuid4()}"
            await self._publish(exchange, key, body, message_id)
            self.faults.poison[message_id] = queue
        self.say(f"injected {len(cases)} poison messages (not JSON, wrong schemas, a 2 MB body)")

    # --- faults ----------------------------------------------------------------------------------

    async def chaos(self, stop: asyncio.Event, rabbit_at: float | None, db_at: float | None) -> None:
        assert self.services is not None
        began = time.monotonic()
        next_kill = began + self.config.kill_every if self.config.kill_every else None
        while not stop.is_set():
            now = time.monotonic()
            if next_kill is not None and now >= next_kill:
                slot = self.rng.choice(sorted(self.services.slots))
                self.services.kill_and_restart(slot)
                self.faults.kills[slot.split("#")[0]] += 1
                self.say(f"SIGKILL {slot} (restarted)")
                next_kill = now + self.config.kill_every * self.rng.uniform(0.6, 1.4)
            if rabbit_at is not None and now - began >= rabbit_at:
                rabbit_at = None
                await self.restart_rabbit()
            if db_at is not None and now - began >= db_at:
                try:
                    await self.drop_db_connections()
                except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                    self.say(f"could not drop the database connections yet ({exc}); trying again")
                    db_at += 2
                else:
                    db_at = None
            self.unexpected_exits += self.services.restart_exited()
            try:
                await asyncio.wait_for(stop.wait(), 0.25)
            except TimeoutError:
                pass

    async def restart_rabbit(self) -> None:
        self.say("RabbitMQ: stop_app")
        try:
            try:
                if await _run("rabbitmqctl", "stop_app") != 0:
                    raise OSError("rabbitmqctl stop_app failed")
                await asyncio.sleep(3)
            finally:
                await _run("rabbitmqctl", "start_app")  # always, even when the stop failed
                await _run("rabbitmqctl", "await_startup")
        except OSError as exc:  # not installed or not allowed: the report shows no restart
            self.say(f"RabbitMQ: could not restart ({exc})")
            return
        self.faults.rabbit_restarts += 1
        self.say("RabbitMQ: start_app done")

    async def drop_db_connections(self) -> None:
        conn = await db.connect(self.settings.database_url)
        try:
            # Only this run's own database: other work on the same server is left alone.
            dropped = await conn.fetchval(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()) t"
            )
        finally:
            await conn.close()
        self.faults.db_drops += 1
        self.faults.connections_dropped += int(dropped or 0)
        self.say(f"PostgreSQL: terminated {dropped} connections of {db.database_name(self.settings.database_url)}")

    # --- the run ---------------------------------------------------------------------------------

    async def run(self) -> Any:
        await self.setup()
        self.services = Processes(self.service_env(), log_dir=self.log_dir)
        for name, count in self.config.processes.items():
            for i in range(count):
                self.services.service(name, slot=f"{name}#{i}")
        self.say(f"started {', '.join(f'{n}×{c}' for n, c in self.config.processes.items())}")
        stop_chaos = asyncio.Event()
        chaos: asyncio.Task[None] | None = None
        try:
            await self.wait_consuming()
            self.say("every service is consuming; publishing")
            expected = self.config.leads / self.config.rate
            chaos = asyncio.create_task(
                self.chaos(
                    stop_chaos,
                    expected * 0.45 if self.config.rabbit_restart else None,
                    expected * 0.25 if self.config.db_drop else None,
                )
            )
            publishing = asyncio.create_task(self.publish_leads())
            if self.config.poison:
                await self.inject_poison()
            await self.publish_returns_and_appointments(publishing)
            await publishing
            stop_chaos.set()
            await chaos
            chaos = None
            self.say(
                f"published {len(self.traffic.lead_keys)} leads, {len(self.traffic.return_ids)} returns,"
                f" {len(self.traffic.appointments)} appointments; chaos over, waiting for the work to drain"
            )
            ok = await drained(self, self.config.drain_timeout)
            self.say("drained" if ok else "NOT drained within the timeout")
        finally:
            stop_chaos.set()
            if chaos is not None:
                await asyncio.gather(chaos, return_exceptions=True)
            self.hung_on_stop = self.services.stop(grace=30.0)
        return await check_all(self)

    async def cleanup(self) -> None:
        self.buyer.stop()
        self.mail.stop()
        try:
            connection = await aio_pika.connect(self.settings.amqp_url)
            try:
                channel = await connection.channel()
                await channel.queue_delete(self.tap)
            finally:
                await connection.close()
        except Exception:  # noqa: BLE001 - best effort
            pass


async def _run(*argv: str) -> int:
    proc = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return await proc.wait()


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--leads", type=int, default=1500)
    parser.add_argument("--rate", type=float, default=8.0, help="leads per second")
    parser.add_argument("--kill-every", type=float, default=4.0, help="seconds between SIGKILLs (0: none)")
    parser.add_argument("--returns", type=int, default=120)
    parser.add_argument("--appointments", type=int, default=25)
    parser.add_argument("--no-rabbit-restart", action="store_true")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--logs", type=Path, help="directory for the service processes' logs")
    parser.add_argument("--keep", action="store_true", help="keep the database and queues for inspection")
    args = parser.parse_args(argv)

    base = Settings()
    name = f"leadwire_faults_{uuid.uuid4().hex[:8]}"
    settings = base.model_copy(
        update={
            "database_url": db.with_database(base.database_url, name),
            "namespace": f"faults{uuid.uuid4().hex[:6]}",
            "retry_delays": (0.5, 1.0, 2.0, 5.0, 10.0),
        }
    )
    config = RunConfig(
        leads=args.leads,
        rate=args.rate,
        kill_every=args.kill_every,
        returns=args.returns,
        appointments=args.appointments,
        rabbit_restart=not args.no_rabbit_restart,
        seed=args.seed,
    )
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    print(f"==> fault run: database {name}, namespace {settings.namespace}")
    run = FaultRun(settings, config, log_dir=args.logs)
    try:
        report = await run.run()
    finally:
        await run.cleanup()
        if not args.keep:
            await Topology(settings.namespace, settings.retry_delays).delete(settings.amqp_url)
            await db.drop_database(settings.database_url)
    print(report.render())
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

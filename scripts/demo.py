"""Run the whole Leadwire system on this machine with sample traffic.

Starts every service as its own process (`faststream run services.<name>.main:app`), applies the
example catalog, serves a demo buyer endpoint, publishes a stream of sample leads (some invalid,
some duplicates) to the inbound exchange, and prints a live summary of what was sold to whom.
The Client Portal runs too (uvicorn, at PORTAL_BASE_URL), with a demo buyer login for Sunrise
Solar; now and then an appointment is booked on one of Sunrise's leads, so its dashboard fills up.
The admin console runs too (uvicorn, at ADMIN_BASE_URL), with a demo owner login. The HTTP
intake runs on 127.0.0.1:8082; every third lead of source "web" is posted there with a source key.

Each process writes its log to .run/logs/<process>.log (not the terminal, which keeps the summary
readable). Unless an SMTP server already listens on SMTP_HOST:SMTP_PORT (127.0.0.1:1025), a demo
mailbox does, and keeps every email Leadwire sends as a file in .run/mail/ (password resets,
invites, new-lead and appointment emails), so nothing the demo sends is dead-lettered for want of
a mail server.

  scripts/run                      # until Ctrl-C
  scripts/run --duration 30 --rate 20
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from harness.broker import consumer_count  # noqa: E402
from harness.buyer import Answer, FakeBuyer, ReceivedRequest  # noqa: E402
from harness.catalog import apply_catalog_text  # noqa: E402
from harness.processes import Processes, service_env  # noqa: E402
from services.admin.config import AdminConfig  # noqa: E402
from shared import api_keys, db, metrics  # noqa: E402
from shared.settings import Settings  # noqa: E402
from shared.topology import Topology  # noqa: E402

RUN_DIR = ROOT / ".run"  # the demo's logs and mailbox (in .gitignore)
SERVICES = ("router", "delivery", "returns", "portal_auth", "notifier")
# The demo buyer's portal login (a user of client "sunrise" in examples/catalog.yaml).
DEMO_CLIENT = "sunrise"
DEMO_EMAIL = "demo@sunrise.example"
DEMO_PASSWORD = "leadwire-demo"
# The demo buyer's team (same password): Dana sees her downline (Sam); Sam sees his own leads.
DEMO_TEAM = (
    ("dana@sunrise.example", "Dana Lead", ["--view-downline", "--parent", DEMO_EMAIL]),
    ("sam@sunrise.example", "Sam Seller", ["--parent", "dana@sunrise.example"]),
)
# The admin console's demo owner (docs/admin.md).
DEMO_STAFF_EMAIL = "admin@leadwire.example"
DEMO_STAFF_PASSWORD = "leadwire-admin-demo"
FIRST_NAMES = ["Ada", "Grace", "Alan", "Edsger", "Barbara", "Ken", "Margaret", "Linus", "Radia", "Dennis"]
STATES = ["CA", "CA", "NV", "AZ", "CO", "UT", "TX", "NY"]


def demo_buyer_answer(request: ReceivedRequest) -> Answer:
    """Answers like real buyers do: mostly yes, sometimes no, Sunrise re-prices."""
    buyer = request.path.split("?")[0].rsplit("/", 1)[-1]
    roll = random.random()
    if buyer == "sunrise":
        if roll > 0.15:
            return 200, json.dumps({"status": "accepted", "price": round(random.uniform(40, 55), 2)}), 0.0
        return 200, json.dumps({"status": "rejected", "reason": "zip not served"}), 0.0
    if buyer == "brightpath":
        return (200, "OK", 0.0) if roll > 0.2 else (200, "DENIED", 0.0)
    return (200, "accepted", 0.0) if roll > 0.05 else (503, "busy", 0.0)


def sample_lead(n: int, recent: list[dict[str, Any]]) -> dict[str, Any]:
    if recent and random.random() < 0.05:
        return random.choice(recent)  # a duplicate: same person, sent again
    if random.random() < 0.8:
        fields: dict[str, Any] = {
            "first_name": random.choice(FIRST_NAMES),
            "last_name": f"Demo{n}",
            "email": f"person{n}-{uuid.uuid4().hex[:6]}@example.com",
            "phone": f"415{random.randint(2000000, 9999999)}",
            "state": random.choice(STATES),
            "zip": f"9{random.randint(1000, 9999)}",
            "monthly_bill": str(random.randint(60, 400)),
            "homeowner": random.choice(["yes", "yes", "yes", "no"]),
        }
        if random.random() < 0.04:
            fields["phone"] = "555"  # invalid: rejected with the reason
        lead: dict[str, Any] = {"lead_type": "solar", "source": random.choice(["web", "partner-a"]), "fields": fields}
    else:
        lead = {
            "lead_type": "auto_insurance",
            "source": "web",
            "fields": {
                "first_name": random.choice(FIRST_NAMES),
                "phone": f"212{random.randint(2000000, 9999999)}",
                "state": random.choice(STATES),
                "vehicles": random.randint(1, 3),
            },
        }
    recent.append(lead)
    del recent[:-50]
    return lead


# The HTTP intake's address: INTAKE_BASE_URL (default http://127.0.0.1:8082; the admin console has 8081).
INTAKE_URL = os.environ.get("INTAKE_BASE_URL", "http://127.0.0.1:8082").rstrip("/")
INTAKE_ADDRESS = [
    "--host",
    urlsplit(INTAKE_URL).hostname or "127.0.0.1",
    "--port",
    str(urlsplit(INTAKE_URL).port or 80),
]
INTAKE_ADDRESS += ["--log-level", "warning"]


async def post_over_http(http: aiohttp.ClientSession, key: str, lead: dict[str, Any]) -> None:
    """A lead of source "web" posted to the intake service (docs/intake.md), answered at once."""
    try:
        async with http.post(
            f"{INTAKE_URL}/v1/leads/{lead['lead_type']}?wait=0",
            json={"fields": lead["fields"]},
            headers={"Authorization": f"Bearer {key}", "Idempotency-Key": f"demo-http-{uuid.uuid4()}"},
        ) as answer:
            await answer.read()
    except aiohttp.ClientError as exc:
        print(f"!!! HTTP post failed: {exc}", flush=True)


async def publish_leads(
    settings: Settings, rate: float, stop: asyncio.Event, counter: list[int], http_key: str | None = None
) -> None:
    connection = await aio_pika.connect_robust(settings.amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(f"{settings.namespace}.inbound")
    recent: list[dict[str, Any]] = []
    http = aiohttp.ClientSession()
    posts: set[asyncio.Task[None]] = set()
    try:
        while not stop.is_set():
            lead = sample_lead(counter[0], recent)
            if http_key and lead["source"] == "web" and counter[0] % 3 == 0:
                # Every third lead of source "web" comes over HTTP, with its source key.
                task = asyncio.create_task(post_over_http(http, http_key, lead))
                posts.add(task)
                task.add_done_callback(posts.discard)
                counter[0] += 1
                try:
                    await asyncio.wait_for(stop.wait(), 1 / rate)
                except TimeoutError:
                    pass
                continue
            await exchange.publish(
                aio_pika.Message(
                    json.dumps(lead).encode(),
                    content_type="application/json",
                    headers={"idempotency-key": f"demo-{uuid.uuid4()}"},
                    delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                ),
                routing_key=f"lead.{lead['lead_type']}",
            )
            counter[0] += 1
            try:
                await asyncio.wait_for(stop.wait(), 1 / rate)
            except TimeoutError:
                pass
    finally:
        await asyncio.gather(*posts)
        await http.close()
        await connection.close()


def create_demo_staff(env: dict[str, str]) -> str:
    """The admin console's demo owner, made with the command a seller uses for the first owner."""
    argv = [sys.executable, "-m", "shared.cli", "staff", "create", "--email", DEMO_STAFF_EMAIL, "--role", "owner"]
    result = subprocess.run(
        argv, cwd=ROOT, env={**env, "LEADWIRE_PASSWORD": DEMO_STAFF_PASSWORD}, capture_output=True, text=True
    )
    if result.returncode == 0:
        return "created"
    if "exists already" in result.stderr:
        return "exists"
    raise RuntimeError(f"could not create the demo staff login: {result.stderr.strip()}")


def create_demo_login(env: dict[str, str], email: str = DEMO_EMAIL, name: str = "Demo Buyer", *extra: str) -> str:
    """A demo portal user (the demo buyer, an admin, by default), made with the same command a
    seller uses."""
    argv = [sys.executable, "-m", "shared.cli", "portal", "create-user", "--client", DEMO_CLIENT]
    argv += ["--email", email, "--name", name, *(extra or ("--admin",))]
    result = subprocess.run(
        argv, cwd=ROOT, env={**env, "LEADWIRE_PASSWORD": DEMO_PASSWORD}, capture_output=True, text=True
    )
    if result.returncode == 0:
        return "created"
    if "already in use" in result.stderr:
        return "exists"
    raise RuntimeError(f"could not create the demo portal login: {result.stderr.strip()}")


async def book_appointments(settings: Settings, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """5 s after the start and then every 20 s, an appointment on the demo client's newest lead, a
    few days ahead, sent to notifier as the portal's appointment command (the portal's own page
    books them too); notifier emails it to the user it is assigned to."""
    connection = await aio_pika.connect_robust(settings.amqp_url)
    channel = await connection.channel(publisher_confirms=True)
    exchange = await channel.get_exchange(f"{settings.namespace}.events")
    wait = 5.0
    try:
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), wait)
                break
            except TimeoutError:
                wait = 20.0
            lead = await pool.fetchval(
                "SELECT lead_id FROM deliveries WHERE client_id = $1 AND status = 'succeeded'"
                " ORDER BY completed_at DESC LIMIT 1",
                DEMO_CLIENT,
            )
            users = await pool.fetch(
                "SELECT id FROM portal_users WHERE client_id = $1 AND enabled ORDER BY created_at", DEMO_CLIENT
            )
            user = random.choice(users)["id"] if users else None
            if lead is None or user is None:
                continue
            now = datetime.now(UTC)
            starts = now + timedelta(days=random.randint(1, 6), hours=random.randint(0, 8))
            body = {
                "appointment_id": str(uuid.uuid4()),
                "client_id": DEMO_CLIENT,
                "lead_id": str(lead),
                "assigned_user_id": str(user),
                "starts_at": starts.replace(minute=0, second=0, microsecond=0).isoformat(),
                "title": random.choice(["Site survey", "First call", "Quote review", "Roof check"]),
                "requested_at": now.isoformat(),
            }
            message = aio_pika.Message(
                json.dumps(body).encode(),
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            )
            await exchange.publish(message, routing_key="appointment.create")
    finally:
        await connection.close()


CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


async def assign_leads(portal_url: str, pool: asyncpg.Pool, stop: asyncio.Event) -> None:
    """Every 15 s the demo buyer (an admin) assigns Sunrise's newest unassigned lead to Dana or Sam
    through the portal itself (sign in, the lead page's Assign form), so their scoped views and
    new-lead notifications have something to show."""
    import httpx  # a test dependency, installed by scripts/bootstrap.sh

    async with httpx.AsyncClient(base_url=portal_url, timeout=10) as http:
        signed_in = False
        turn = 0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 15)
                break
            except TimeoutError:
                pass
            team = await pool.fetch(
                "SELECT id FROM portal_users WHERE client_id = $1 AND lower(email) = ANY($2::text[]) ORDER BY email",
                DEMO_CLIENT,
                [email for email, _, _ in DEMO_TEAM],
            )
            lead = await pool.fetchval(
                "SELECT d.lead_id FROM deliveries d WHERE d.client_id = $1 AND d.status = 'succeeded' AND NOT EXISTS"
                " (SELECT 1 FROM lead_assignments a WHERE a.client_id = d.client_id AND a.lead_id = d.lead_id)"
                " ORDER BY d.completed_at DESC LIMIT 1",
                DEMO_CLIENT,
            )
            if not team or lead is None:
                continue
            try:
                if not signed_in:
                    page = await http.get("/login")
                    token = CSRF_FIELD.search(page.text)
                    form = {"email": DEMO_EMAIL, "password": DEMO_PASSWORD, "csrf": token.group(1) if token else ""}
                    signed_in = (await http.post("/login", data=form)).status_code == 303
                page = await http.get(f"/leads/{lead}")
                token = CSRF_FIELD.search(page.text)
                if page.status_code != 200 or token is None:
                    signed_in = False
                    continue
                turn += 1
                assignee = team[turn % len(team)]["id"]
                await http.post(f"/leads/{lead}/assign", data={"csrf": token.group(1), "assignee": str(assignee)})
            except httpx.HTTPError:
                signed_in = False


class DemoMailbox:
    """An SMTP server for the demo that keeps each email it is given as `<n>.eml` in a folder."""

    def __init__(self, host: str, port: int, folder: Path) -> None:
        self.host, self.port, self.folder = host, port, folder
        self.count = 0
        self._controller: Any = None

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.count += 1
        (self.folder / f"{self.count:05d}.eml").write_bytes(envelope.original_content or envelope.content)
        return "250 OK"

    def start(self) -> DemoMailbox:
        from aiosmtpd.controller import Controller  # a test extra, installed by scripts/run's set-up

        self.folder.mkdir(parents=True, exist_ok=True)
        for old in self.folder.glob("*.eml"):
            old.unlink()
        self._controller = Controller(self, hostname=self.host, port=self.port)
        self._controller.start()
        return self

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()


def listening(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


async def summary(pool: asyncpg.Pool, published: int, started: float, mailbox: DemoMailbox | None = None) -> str:
    statuses = dict(await pool.fetch("SELECT status, count(*) FROM leads GROUP BY status"))
    sold = await pool.fetch(
        "SELECT d.client_id, count(*) AS leads, sum(d.price) AS revenue FROM deliveries d"
        " WHERE d.status = 'succeeded' GROUP BY d.client_id ORDER BY revenue DESC"
    )
    lines = [
        f"--- {time.monotonic() - started:5.0f}s  published {published}  leads in database: "
        + "  ".join(f"{s}: {statuses.get(s, 0)}" for s in ("sold", "unsold", "duplicate", "rejected", "routing")),
    ]
    for row in sold:
        lines.append(f"    sold to {row['client_id']:<12} {row['leads']:>5} leads  ${row['revenue']:>10}")
    if mailbox is not None:
        lines.append(f"    emails sent: {mailbox.count} (in {mailbox.folder.relative_to(ROOT)}/)")
    return "\n".join(lines)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=0, help="seconds to run (default: until Ctrl-C)")
    parser.add_argument("--rate", type=float, default=5, help="sample leads per second")
    parser.add_argument("--buyer-port", type=int, default=18099)
    parser.add_argument("--catalog", type=Path, default=ROOT / "examples" / "catalog.yaml")
    args = parser.parse_args()

    settings = Settings()
    print(f"==> database {db.database_name(settings.database_url)}, broker namespace {settings.namespace}")
    await db.ensure_database(settings.database_url)
    await db.migrate(settings.database_url)
    text = args.catalog.read_text().replace("127.0.0.1:18099", f"127.0.0.1:{args.buyer_port}")
    version = await apply_catalog_text(settings.database_url, text)
    print(f"==> catalog {args.catalog.name} " + (f"applied as version {version}" if version else "already current"))

    buyer = FakeBuyer(port=args.buyer_port, default=demo_buyer_answer, record=False).start()
    print(f"==> demo buyer endpoint on http://127.0.0.1:{args.buyer_port}/buyers/<client>")

    mailbox: DemoMailbox | None = None
    if listening(settings.smtp_host, settings.smtp_port):
        print(f"==> emails go to the SMTP server already on {settings.smtp_host}:{settings.smtp_port}")
    else:
        mailbox = DemoMailbox(settings.smtp_host, settings.smtp_port, RUN_DIR / "mail").start()
        print(f"==> demo mailbox on smtp://{settings.smtp_host}:{settings.smtp_port}: each email is kept in .run/mail/")

    env = service_env(settings)
    (RUN_DIR / "logs").mkdir(parents=True, exist_ok=True)
    for old in (RUN_DIR / "logs").glob("*.log"):
        old.unlink()  # this run's logs only
    processes = Processes(env, log_dir=RUN_DIR / "logs")
    print("==> each process logs to .run/logs/<process>.log")
    for name in SERVICES:
        processes.service(name)
    portal_url = settings.portal_base_url.rstrip("/")
    portal = urlsplit(portal_url)
    address = ["--host", portal.hostname or "127.0.0.1", "--port", str(portal.port or 80)]
    processes.spawn(
        "portal",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "services.portal.web:create_app",
            *address,
            "--log-level",
            "warning",
        ],
    )
    admin_url = AdminConfig().base_url.rstrip("/")
    admin = urlsplit(admin_url)
    processes.spawn(
        "admin",
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "services.admin.web:create_app",
            *["--host", admin.hostname or "127.0.0.1", "--port", str(admin.port or 80)],
            "--log-level",
            "warning",
        ],
    )
    processes.spawn(
        "intake",
        [sys.executable, "-m", "uvicorn", "--factory", "services.intake.web:create_app", *INTAKE_ADDRESS],
    )
    print(f"==> started {', '.join(f'{n} (pid {pid})' for n, pid in processes.pids().items())}")
    login = create_demo_login(env)
    for email, name, flags in DEMO_TEAM:
        create_demo_login(env, email, name, *flags)
    print(f"==> Client Portal: {portal_url}/login  (demo buyer {DEMO_EMAIL} / {DEMO_PASSWORD}, {login})")
    team = ", ".join(f"{email} ({name})" for email, name, _ in DEMO_TEAM)
    print(f"    its team, same password: {team}")
    staff = create_demo_staff(env)
    print(f"==> Admin console: {admin_url}/login  (demo owner {DEMO_STAFF_EMAIL} / {DEMO_STAFF_PASSWORD}, {staff})")
    print(metrics_summary(settings, processes.slots))

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    pool = await db.create_pool(settings.database_url, min_size=1, max_size=2)
    source_key = (await api_keys.create_source_key(pool, "web", label="scripts/run demo", rate_per_second=100)).token
    print(f"==> HTTP intake: {INTAKE_URL}/  (posting instructions; a source key of web posts a third of its leads)")
    published = [0]
    started = time.monotonic()
    publisher: asyncio.Task[None] | None = None
    booker: asyncio.Task[None] | None = None
    assigner: asyncio.Task[None] | None = None
    status = 0
    try:
        # Wait until the services have declared the topology before publishing.
        await wait_for_exchange(settings, stop)
        publisher = asyncio.create_task(publish_leads(settings, args.rate, stop, published, source_key))
        booker = asyncio.create_task(book_appointments(settings, pool, stop))
        assigner = asyncio.create_task(assign_leads(portal_url, pool, stop))
        print(f"==> publishing {args.rate:g} sample leads/s to {settings.namespace}.inbound; Ctrl-C to stop")
        deadline = started + args.duration if args.duration else None
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 2)
            except TimeoutError:
                pass
            print(await summary(pool, published[0], started, mailbox), flush=True)
            dead = processes.exited()
            if dead:
                print(f"!!! service(s) exited: {', '.join(dead)}", flush=True)
                status = 1
                stop.set()
            if deadline and time.monotonic() >= deadline:
                stop.set()
    finally:
        stop.set()
        try:
            if publisher is not None:
                await publisher
            if booker is not None:
                await booker
            if assigner is not None:
                await assigner
            await asyncio.sleep(1.5)  # let in-flight leads finish before the final summary
            print((await summary(pool, published[0], started, mailbox)).replace("---", "=== final"), flush=True)
            await pool.close()
        finally:
            # SIGTERM lets each service finish its in-flight messages; SIGKILL only if it hangs.
            processes.stop(grace=20)
            buyer.stop()
            if mailbox is not None:
                mailbox.stop()
    return status


def metrics_summary(settings: Settings, services: list[str]) -> str:
    """Where each process serves its Prometheus metrics (docs/operations.md)."""
    ports = {name: metrics.port_for(name, settings.metrics_port) for name in services}
    if all(port is None for port in ports.values()):
        return "==> metrics: off (LEADWIRE_METRICS_PORT=off)"
    where = "  ".join(f"{name} http://127.0.0.1:{port}/metrics" for name, port in ports.items() if port)
    return f"==> Prometheus metrics (docs/operations.md): {where}"


async def wait_for_exchange(settings: Settings, stop: asyncio.Event) -> None:
    queue = Topology(settings.namespace, settings.retry_delays).queue_name("router.leads")
    for _ in range(120):
        if stop.is_set():
            return
        if await consumer_count(settings.amqp_url, queue) is not None:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError("services did not declare the topology in time")


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))

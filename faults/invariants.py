"""What a fault run must leave behind, checked from the database, the broker, the buyer endpoint's
own record of sales and the SMTP sink — each from the side that would notice a loss or a double."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from typing import TYPE_CHECKING, Any

import aio_pika
import asyncpg

from faults.catalog import CAP, ORDER_DOLLARS, ORDER_TOTAL, RETURN_PCT
from services.notifier.rules import appointment_notification_id, message_id_header
from shared import db
from shared.topology import DELAY_TIERS, DELAYED_QUEUES, WORK_QUEUES

if TYPE_CHECKING:
    from faults.run import FaultRun

SENDER = "leadwire@faults.example.com"


@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


@dataclass
class Report:
    checks: list[Check] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    @property
    def violations(self) -> list[Check]:
        return [c for c in self.checks if not c.ok]

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append(Check(name, bool(ok), detail))

    def render(self) -> str:
        lines = ["", "=== fault run figures"]
        lines += [f"    {k:<34} {v}" for k, v in self.figures.items()]
        lines.append(f"=== invariants: {len(self.checks)} checked, {len(self.violations)} violated")
        for c in self.checks:
            lines.append(f"  {'ok  ' if c.ok else 'FAIL'} {c.name}" + (f"  ({c.detail})" if c.detail else ""))
        lines.append("=== PASS" if self.ok else "=== FAIL")
        return "\n".join(lines)


def reminder_message_id(appointment_id: str) -> str:
    return message_id_header(appointment_notification_id(uuid.UUID(appointment_id), "reminder", 0), SENDER)


def created_message_id(appointment_id: str) -> str:
    return message_id_header(appointment_notification_id(uuid.UUID(appointment_id), "created", 0), SENDER)


async def queue_depths(run: FaultRun) -> dict[str, int]:
    """Ready messages in every work, retry and delay queue (not the dead-letter queues)."""
    names = []
    for logical in WORK_QUEUES:
        names.append(run.topology.queue_name(logical))
        names += [run.topology.retry_name(logical, t) for t in range(len(run.topology.retry_delays))]
        if logical in DELAYED_QUEUES:
            names += [run.topology.delay_name(logical, t) for t in DELAY_TIERS]
    connection = await aio_pika.connect(run.settings.amqp_url)
    try:
        channel = await connection.channel()
        depths = {}
        for name in names:
            q = await channel.declare_queue(name, passive=True)
            depths[name] = q.declaration_result.message_count or 0
        return depths
    finally:
        await connection.close()


async def _pending(run: FaultRun, conn: asyncpg.Connection) -> dict[str, int]:
    t = run.traffic
    reminders = [appointment_notification_id(uuid.UUID(a), "reminder", 0) for a in t.appointments]
    return {
        "leads not terminal": len(t.lead_keys)
        - await conn.fetchval(
            "SELECT count(*) FROM leads WHERE idempotency_key = ANY($1::text[]) AND status <> 'routing'", t.lead_keys
        ),
        "deliveries in flight": await conn.fetchval(
            "SELECT count(*) FROM deliveries WHERE status IN ('requested', 'posting')"
        ),
        "outbox rows": await conn.fetchval("SELECT count(*) FROM outbox"),
        "returns not recorded": len(t.return_ids)
        - await conn.fetchval("SELECT count(*) FROM returns WHERE id = ANY($1::uuid[])", t.return_ids),
        "reminders not sent": len(reminders)
        - await conn.fetchval(
            "SELECT count(*) FROM notification_sends WHERE notification_id = ANY($1::uuid[]) AND status <> 'pending'",
            reminders,
        ),
    }


async def drained(run: FaultRun, timeout: float) -> bool:
    """True once every piece of work is finished and every queue is empty, twice in a row."""
    deadline = time.monotonic() + timeout
    quiet = 0
    last: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            conn = await db.connect(run.settings.database_url)
            try:
                last = await _pending(run, conn)
            finally:
                await conn.close()
            depths = await queue_depths(run)
            last["queued messages"] = sum(depths.values())
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, aio_pika.exceptions.AMQPError):
            quiet = 0
            await asyncio.sleep(1)
            continue
        if run.services is not None:
            run.unexpected_exits += run.services.restart_exited()
        quiet = quiet + 1 if not any(last.values()) else 0
        if quiet >= 2:
            return True
        await asyncio.sleep(1)
    run.say(f"still pending: {last}")
    return False


async def _drain_queue(channel: aio_pika.abc.AbstractChannel, name: str) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Every message of a queue, taken without acknowledging (they return when the channel closes)."""
    queue = await channel.declare_queue(name, passive=True)
    messages = []
    while (message := await queue.get(no_ack=False, fail=False)) is not None:
        messages.append(message)
    return messages


async def check_all(run: FaultRun) -> Report:
    report = Report()
    t, f = run.traffic, run.faults
    conn = await db.connect(run.settings.database_url)
    try:
        await _check_leads(run, conn, report)
        await _check_sales(run, conn, report)
        await _check_rules(conn, report)
        await _check_returns(run, conn, report)
        await _check_appointments(run, conn, report)
        statuses = dict(
            await conn.fetch(
                "SELECT status, count(*) FROM leads WHERE idempotency_key = ANY($1::text[]) GROUP BY status",
                t.lead_keys,
            )
        )
        dead_letter_rows = await conn.fetchval("SELECT count(*) FROM dead_letters")
    finally:
        await conn.close()
    await _check_queues(run, report)
    c = run.config
    report.add(
        "the faults asked for were injected",
        (sum(f.kills.values()) > 0 or not c.kill_every)
        and f.rabbit_restarts == int(c.rabbit_restart)
        and f.db_drops == int(c.db_drop)
        and (len(f.poison) == 6 or not c.poison),
        f"kills {sum(f.kills.values())}, RabbitMQ restarts {f.rabbit_restarts}, drops {f.db_drops},"
        f" poison {len(f.poison)}",
    )
    report.add("no service process exited on its own", not run.unexpected_exits, ", ".join(run.unexpected_exits))
    report.add(
        "every process stopped within the grace period on SIGTERM", not run.hung_on_stop, ", ".join(run.hung_on_stop)
    )
    report.figures.update(
        {
            "leads published (distinct keys)": len(t.lead_keys),
            "  of which duplicates / invalid": f"{t.duplicates} ({t.quick_duplicates} at once) / {t.invalid}",
            "  re-sent with the same key": t.resent,
            "lead outcomes": ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())),
            "return requests (distinct)": len(t.return_ids),
            "appointments": len(t.appointments),
            "buyer posts / failed / hung / refused": (
                f"{run.buyer.posts} / {run.buyer.failed} / {run.buyer.hung} / {run.buyer.refused}"
            ),
            "buyer sales / repeats of a sale": f"{len(run.buyer.sales)} / {sum(run.buyer.repeats.values())}",
            "SIGKILLs": f"{sum(f.kills.values())} ({', '.join(f'{k} {v}' for k, v in sorted(f.kills.items()))})",
            "RabbitMQ restarts": f.rabbit_restarts,
            "database connection drops": f"{f.db_drops} ({f.connections_dropped} connections)",
            "poison messages": len(f.poison),
            "dead_letters rows": dead_letter_rows,
            "source publish retries": t.publish_retries,
            "duration": f"{time.monotonic() - run.started:.0f}s",
        }
    )
    return report


async def _check_leads(run: FaultRun, conn: asyncpg.Connection, report: Report) -> None:
    keys = run.traffic.lead_keys
    rows = await conn.fetch(
        "SELECT id, idempotency_key, status FROM leads WHERE idempotency_key = ANY($1::text[])", keys
    )
    per_key = Counter(r["idempotency_key"] for r in rows)
    missing = [k for k in keys if per_key[k] == 0]
    doubled = [k for k, n in per_key.items() if n > 1]
    report.add(
        "every published lead is recorded exactly once",
        not missing and not doubled,
        f"{len(missing)} missing, {len(doubled)} doubled",
    )
    open_ = [r for r in rows if r["status"] == "routing"]
    report.add("every lead reached a terminal status", not open_, f"{len(open_)} still routing")
    stray = await conn.fetchval("SELECT count(*) FROM leads WHERE NOT (idempotency_key = ANY($1::text[]))", keys)
    report.add("no lead the sources did not send", stray == 0, f"{stray} unknown")

    # The outcome events as a subscriber sees them: at-least-once copies share a message id, and
    # each lead has exactly one distinct outcome, agreeing with the database.
    status_by_key = {r["idempotency_key"]: r["status"] for r in rows}
    connection = await aio_pika.connect(run.settings.amqp_url)
    try:
        channel = await connection.channel()
        messages = await _drain_queue(channel, run.tap)
    finally:
        await connection.close()
    outcomes: dict[str, set[tuple[str, str]]] = defaultdict(set)
    for m in messages:
        body = json.loads(m.body)
        outcomes[body["idempotency_key"]].add((str(m.message_id), body["status"]))
    without = [k for k in keys if not outcomes.get(k)]
    several = [k for k, v in outcomes.items() if len(v) > 1]
    disagree = [k for k, v in outcomes.items() if len(v) == 1 and next(iter(v))[1] != status_by_key.get(k)]
    report.add(
        "every lead has exactly one terminal outcome event",
        not without and not several and not disagree,
        f"{len(without)} without, {len(several)} with several, {len(disagree)} disagreeing;"
        f" {len(messages)} copies of {len(outcomes)} outcomes",
    )


async def _check_sales(run: FaultRun, conn: asyncpg.Connection, report: Report) -> None:
    deliveries = await conn.fetch("SELECT id, lead_id, client_id, group_id, status FROM deliveries")
    in_flight = [d for d in deliveries if d["status"] not in ("succeeded", "failed")]
    report.add("no delivery left in flight", not in_flight, f"{len(in_flight)} in flight")
    succeeded = [d for d in deliveries if d["status"] == "succeeded"]
    ours = {str(d["id"]) for d in succeeded}
    bought = set(run.buyer.sales)
    report.add(
        "every sale Leadwire recorded, the buyer made", ours <= bought, f"{len(ours - bought)} unknown to the buyer"
    )
    report.add("every sale the buyer made, Leadwire recorded", bought <= ours, f"{len(bought - ours)} lost")
    per_buyer_lead = Counter((s.buyer, s.lead_id) for s in run.buyer.sales.values())
    twice = [k for k, n in per_buyer_lead.items() if n > 1]
    report.add("no buyer bought the same lead twice (distinct idempotency keys)", not twice, f"{len(twice)} doubled")
    exclusive = Counter(d["lead_id"] for d in succeeded if d["group_id"] == "exclusive")
    report.add("exclusive group never sold a lead twice", max(exclusive.values(), default=0) <= 1)
    pairs = Counter((d["lead_id"], d["client_id"]) for d in succeeded)
    report.add("no client got the same lead twice", max(pairs.values(), default=0) <= 1)
    per_lead = Counter(d["lead_id"] for d in succeeded)
    report.add("max sales per lead held (2)", max(per_lead.values(), default=0) <= 2)
    sold = {r["id"] for r in await conn.fetch("SELECT id FROM leads WHERE status = 'sold'")}
    report.add("sold exactly when a delivery succeeded", sold == set(per_lead), f"{len(sold ^ set(per_lead))} disagree")
    await _check_one_person_per_client(conn, report)


async def _check_one_person_per_client(conn: asyncpg.Connection, report: Report) -> None:
    """Route Duplicate Leads (docs/routing.md section 2): a person is sold to a client once per
    duplicate window, whichever of its leads was first. The run lasts minutes, far inside the
    catalog's 30-day window, so any two sold leads of one person to one client are a violation."""
    people = await conn.fetch(
        "SELECT d.client_id, l.fingerprint, count(*) AS sold FROM deliveries d JOIN leads l ON l.id = d.lead_id"
        " WHERE d.status = 'succeeded' AND l.fingerprint IS NOT NULL GROUP BY 1, 2"
    )
    twice = [r for r in people if r["sold"] > 1]
    routed = await conn.fetchval("SELECT count(*) FROM leads WHERE status = 'sold' AND original_lead_id IS NOT NULL")
    report.add(
        "no client holds two sold leads with one fingerprint in the duplicate window",
        not twice,
        f"{len(twice)} client-person pairs sold twice; {routed} duplicates routed and sold",
    )
    report.add("routed duplicates were sold (the rule was exercised)", routed > 0, f"{routed}")


async def _check_rules(conn: asyncpg.Connection, report: Report) -> None:
    per_day = await conn.fetch(
        "SELECT delivery_account_id, (created_at AT TIME ZONE 'UTC')::date AS day, count(*) AS n FROM deliveries"
        " WHERE status = 'succeeded' AND delivery_account_id IN ('a1', 'd1') GROUP BY 1, 2"
    )
    report.add(
        f"daily caps never exceeded ({CAP})",
        all(r["n"] <= CAP for r in per_day),
        ", ".join(f"{r['delivery_account_id']} {r['n']}" for r in per_day),
    )
    usage = await conn.fetch("SELECT delivery_account_id, used FROM cap_usage")
    report.add("cap counters within the cap", all(0 <= r["used"] <= CAP for r in usage))
    orders = {r["id"]: r for r in await conn.fetch("SELECT id, total, received, reserved FROM orders")}
    balanced = all(0 <= o["received"] <= o["total"] and o["reserved"] == 0 for o in orders.values())
    report.add(
        "order balances never below zero nor past their total, nothing left reserved",
        balanced,
        ", ".join(f"{k} {o['received']}/{o['total']} reserved {o['reserved']}" for k, o in orders.items()),
    )
    report.add(
        "orders filled (the rules were exercised)",
        orders["c-order"]["received"] >= 1 and orders["e-order"]["received"] >= 1,
        f"c {orders['c-order']['received']}/{ORDER_TOTAL}, e {orders['e-order']['received']}/{ORDER_DOLLARS}",
    )


async def _check_returns(run: FaultRun, conn: asyncpg.Connection, report: Report) -> None:
    ids = run.traffic.return_ids
    rows = await conn.fetch("SELECT id, client_id, lead_id, delivery_account_id, status, holds_lead FROM returns")
    recorded = {str(r["id"]) for r in rows}
    report.add(
        "every return request recorded once",
        set(ids) <= recorded and len(rows) == len(recorded),
        f"{len(set(ids) - recorded)} missing",
    )
    holding = Counter((r["client_id"], r["lead_id"]) for r in rows if r["holds_lead"])
    report.add("at most one return holds each sold lead", max(holding.values(), default=0) <= 1)
    delivered = dict(
        await conn.fetch("SELECT delivery_account_id, count(*) FROM deliveries WHERE status = 'succeeded' GROUP BY 1")
    )
    counted = Counter(r["delivery_account_id"] for r in rows if r["holds_lead"])
    over = {
        a: (n, delivered.get(a, 0))
        for a, n in counted.items()
        if n > int((Decimal(delivered.get(a, 0)) * RETURN_PCT / 100).to_integral_value(rounding=ROUND_FLOOR))
    }
    report.add(
        f"return caps held ({RETURN_PCT}% of delivered per account)",
        not over,
        ", ".join(f"{a} {n}/{d}" for a, (n, d) in over.items())
        or ", ".join(f"{a} {n}/{delivered.get(a, 0)}" for a, n in sorted(counted.items())),
    )
    statuses = Counter(r["status"] for r in rows)
    report.figures["returns"] = ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))


async def _check_appointments(run: FaultRun, conn: asyncpg.Connection, report: Report) -> None:
    ids = run.traffic.appointments
    stored = await conn.fetchval("SELECT count(*) FROM appointments WHERE id = ANY($1::uuid[])", ids)
    report.add("every appointment stored once", stored == len(ids), f"{stored} of {len(ids)}")
    reminders = run.mail.message_ids("appointment_reminder")
    expected = {reminder_message_id(a) for a in ids}
    missing = expected - set(reminders)
    strangers = set(reminders) - expected
    report.add(
        "each reminder sent, under one Message-ID",
        not missing and not strangers,
        f"{len(missing)} missing, {len(strangers)} unexpected",
    )
    repeats = sum(n - 1 for n in reminders.values())
    created = run.mail.message_ids("appointment_created")
    created_missing = {created_message_id(a) for a in ids} - set(created)
    report.add("each appointment's confirmation email sent", not created_missing, f"{len(created_missing)} missing")
    # SMTP hand-over and the send record cannot commit together: a notifier killed between them
    # repeats that one email with the same Message-ID (docs/notifier.md). Repeats are allowed only
    # when notifiers were killed.
    notifier_kills = run.faults.kills.get("notifier", 0)
    report.add(
        "each reminder sent once (a same-Message-ID repeat only after a notifier SIGKILL)",
        repeats <= notifier_kills,
        f"{repeats} repeats, {notifier_kills} notifier kills",
    )
    report.figures["emails (reminders / repeats)"] = f"{len(run.mail.received)} ({len(reminders)} / {repeats})"


async def _check_queues(run: FaultRun, report: Report) -> None:
    depths = await queue_depths(run)
    left = {k: v for k, v in depths.items() if v}
    report.add("all work, retry and delay queues drained", not left, ", ".join(f"{k} {v}" for k, v in left.items()))
    connection = await aio_pika.connect(run.settings.amqp_url)
    try:
        channel = await connection.channel()
        found: dict[str, str] = {}
        reasons: dict[str, str] = {}
        for logical in WORK_QUEUES:
            for m in await _drain_queue(channel, run.topology.dlq_name(logical)):
                found[str(m.message_id)] = logical
                reasons[str(m.message_id)] = str((m.headers or {}).get("x-error") or "")
    finally:
        await connection.close()
    expected = run.faults.poison
    unexpected = {k: v for k, v in found.items() if k not in expected}
    misplaced = {k for k, v in expected.items() if found.get(k) != v}
    report.add(
        "dead-letter queues hold exactly the poison messages",
        not unexpected and not misplaced,
        f"{len(unexpected)} unexpected ({'; '.join(reasons[k][:120] for k in list(unexpected)[:3])}),"
        f" {len(misplaced)} poison missing",
    )
    report.add(
        "every dead letter carries its reason (x-error)",
        all(reasons.values()),
        "; ".join(f"{found[k]}: {r[:60]}" for k, r in list(reasons.items())[:6]),
    )

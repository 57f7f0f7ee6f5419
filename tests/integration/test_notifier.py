"""notifier on the real broker and database, sending to a real SMTP server (aiosmtpd) and reading
what it received."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio

from services.notifier.main import build
from services.notifier.usecases import notify_assigned_lead
from shared import db
from shared.catalog.store import load_latest
from shared.contracts import LeadAssigned, LeadOutcome, NotificationRequested, SoldDelivery
from shared.portal_links import read_link_token
from shared.topology import Topology
from tests.notifier_support import (
    SmtpSink,
    add_portal_user,
    add_sold_lead,
    free_port,
    publish_event,
    with_smtp,
)
from tests.support import EventTap, FakeBuyer, apply_yaml, catalog_yaml, dead_letters, wait_for

pytestmark = pytest.mark.integration

EVIL = '<script>alert("pwned")</script>'


@pytest.fixture
def smtp():
    sink = SmtpSink(free_port())
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def nsettings(settings, smtp):
    return with_smtp(settings, smtp.port)


@pytest_asyncio.fixture
async def catalog(settings):
    clients = [
        {"id": "acme", "name": "Acme Solar", "external_ref": "ACME", "time_zone": "America/New_York"},
        {"id": "bolt", "name": "Bolt", "external_ref": "BOLT"},
    ]
    await apply_yaml(settings.database_url, catalog_yaml(FakeBuyer(port=9), clients=clients))


def notification(kind: str, **kw) -> dict:
    body = dict(
        notification_id=uuid.uuid4(),
        kind=kind,
        to=["buyer@example.com"],
        client_id="acme",
        lead_id=uuid.uuid4(),
        lead_fields={"first_name": "Ada", "phone": "4155550100"},
        portal_link="https://portal.example.com/link/tok",
    )
    body.update(kw)
    return NotificationRequested(**body).model_dump(mode="json")


# --- emails ----------------------------------------------------------------------------------------


async def test_each_email_kind_is_sent_once_with_a_stable_message_id(nsettings, smtp, conn):
    requests = {
        "lead_delivery": notification("lead_delivery", data={"lead_type_name": "Solar", "expires_in_days": 7}),
        "new_lead": notification("new_lead", data={"user_name": "Bea", "client_name": "Acme Solar"}),
        "lead_forward": notification(
            "lead_forward", to=["partner@example.com"], message="Worth a call", data={"from_name": "Bea"}
        ),
        "lead_contact": notification(
            "lead_contact",
            to=["ada@example.com"],
            subject="Your solar quote",
            message="Hello Ada, here is your quote.",
            data={"from_name": "Bea", "reply_to": "bea@acme.example.com"},
        ),
        "password_reset": notification(
            "password_reset",
            to=["bea@acme.example.com"],
            portal_link="https://portal.example.com/reset/abc",
            data={"expires_in_minutes": 30},
        ),
        "account_paused": notification(
            "account_paused", to=[], data={"delivery_account_id": "acme-post", "reason": "5 failures in a row"}
        ),
        "order_filled": notification("order_filled", to=[], data={"order_id": "acme-nov", "filled": 100}),
    }
    async with build(nsettings).running():
        for kind, body in requests.items():
            await publish_event(nsettings, f"notify.{kind}", body)
        # The same request again, as a relay repeating a publish would send it.
        await publish_event(nsettings, "notify.lead_delivery", requests["lead_delivery"])
        await wait_for(lambda: len(smtp.received) >= len(requests))
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 7 FROM notification_sends WHERE status = 'sent'"))
        await asyncio.sleep(0.3)  # give a second copy time to (wrongly) arrive

    assert sorted(m.kind for m in smtp.received) == sorted(requests)
    by_kind = {m.kind: m for m in smtp.received}
    for kind, body in requests.items():
        email = by_kind[kind]
        assert email.message_id == f"<{body['notification_id']}@mail.example.com>"
        assert email.mail_from == "leadwire@mail.example.com"
        assert email.text() and email.html().startswith("<!doctype html>")
    assert by_kind["lead_delivery"].rcpt_tos == ["buyer@example.com"]
    assert by_kind["lead_delivery"].subject == "New Solar lead: Ada"
    assert "https://portal.example.com/link/tok" in by_kind["lead_delivery"].text()
    assert "The link works for 7 days." in by_kind["lead_delivery"].text()
    assert by_kind["lead_forward"].rcpt_tos == ["partner@example.com"]
    assert "Bea forwarded this lead to you." in by_kind["lead_forward"].text()
    contact = by_kind["lead_contact"]
    assert contact.rcpt_tos == ["ada@example.com"] and contact.subject == "Your solar quote"
    assert contact.message["Reply-To"] == "bea@acme.example.com"
    assert "4155550100" not in contact.text()  # the contact gets the message, not the lead record
    assert "https://portal.example.com/reset/abc" in by_kind["password_reset"].text()
    assert by_kind["account_paused"].rcpt_tos == ["ops@example.com"]
    assert "5 failures in a row" in by_kind["account_paused"].text()
    assert by_kind["order_filled"].rcpt_tos == ["ops@example.com"]
    assert by_kind["order_filled"].subject == "Order acme-nov filled"


async def test_lead_fields_stay_text_in_the_html_part(nsettings, smtp):
    body = notification("lead_delivery", lead_fields={"first_name": EVIL, "city": "<b>Springfield</b>"})
    async with build(nsettings).running():
        await publish_event(nsettings, "notify.lead_delivery", body)
        await wait_for(lambda: smtp.received)
    [email] = smtp.received
    assert "<script>" not in email.html() and "<b>Springfield" not in email.html()
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in email.html()
    assert "&lt;b&gt;Springfield&lt;/b&gt;" in email.html()
    assert EVIL in email.text()


async def test_new_lead_notifications_reach_only_the_buying_clients_subscribed_admins(nsettings, smtp, conn, catalog):
    await add_portal_user(conn, "acme", "bea@acme.example.com", name="Bea", notify_new_leads=True, is_admin=True)
    await add_portal_user(conn, "acme", "quiet@acme.example.com", notify_new_leads=False, is_admin=True)
    await add_portal_user(conn, "acme", "gone@acme.example.com", notify_new_leads=True, enabled=False, is_admin=True)
    # Not an admin: sees no lead until one is assigned to them, so is told then (lead.assigned).
    await add_portal_user(conn, "acme", "sam@acme.example.com", notify_new_leads=True)
    await add_portal_user(conn, "bolt", "bolt@bolt.example.com", notify_new_leads=True, is_admin=True)
    lead_id, delivery_id = await add_sold_lead(conn, "acme", {"first_name": EVIL, "phone": "4155550100"})
    outcome = LeadOutcome(
        lead_id=lead_id,
        status="sold",
        source="web",
        idempotency_key="k1",
        lead_type="solar",
        deliveries=[
            SoldDelivery(delivery_id=delivery_id, client_id="acme", delivery_account_id="acme-post", price="25.00")
        ],
        decided_at=datetime.now(UTC),
    ).model_dump(mode="json")
    async with build(nsettings).running(), EventTap(nsettings, "notify.new_lead") as tap:
        message_id = await publish_event(nsettings, "lead.sold", outcome)
        await publish_event(nsettings, "lead.sold", outcome, message_id=message_id)  # a repeat
        await wait_for(lambda: smtp.received)
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
        await asyncio.sleep(0.3)  # give a wrongly queued second email time to arrive

    assert len(tap.messages) == 1
    [email] = smtp.received
    assert email.rcpt_tos == ["bea@acme.example.com"] and email.kind == "new_lead"
    assert email.subject == f"New lead: {EVIL}"
    assert "A new Solar lead was delivered to Acme Solar." in email.text()
    assert "<script>" not in email.html()
    link = next(line for line in email.text().splitlines() if "/link/" in line).split(": ", 1)[1]
    claims = read_link_token(nsettings.portal_link_secret, link.rsplit("/", 1)[1])
    assert claims is not None and (claims.client_id, claims.lead_id) == ("acme", lead_id)
    record = await conn.fetchrow("SELECT kind, status, recipients FROM notification_sends")
    assert (record["kind"], record["status"], record["recipients"]) == ("new_lead", "sent", ["bea@acme.example.com"])


def _json(value):
    return json.loads(value) if isinstance(value, str) else value


async def test_an_assignment_tells_the_assignee_and_the_view_downline_users_above_once(settings, conn, catalog):
    """lead.assigned: new-lead emails to the subscribed users the assignment brings the lead to —
    the assignee and the View Downline users above them; not admins (told at the sale), not a user
    above without View Downline, not a colleague elsewhere. A repeat queues nothing."""
    admin = await add_portal_user(conn, "acme", "admin@acme.example.com", notify_new_leads=True, is_admin=True)
    boss = await add_portal_user(conn, "acme", "boss@acme.example.com", notify_new_leads=True)
    dana = await add_portal_user(conn, "acme", "dana@acme.example.com", notify_new_leads=True)
    carl = await add_portal_user(conn, "acme", "carl@acme.example.com", name="Carl", notify_new_leads=True)
    await add_portal_user(conn, "acme", "eve@acme.example.com", notify_new_leads=True)
    quiet = await add_portal_user(conn, "acme", "quiet@acme.example.com")
    # boss (no View Downline) > dana (View Downline) > quiet > carl
    for user, parent, downline in (
        (dana, boss, True),
        (quiet, dana, False),
        (carl, quiet, False),
        (boss, admin, False),
    ):
        await conn.execute(
            "UPDATE portal_users SET parent_user_id = $2, view_downline = $3 WHERE id = $1", user, parent, downline
        )
    lead_id, delivery_id = await add_sold_lead(conn, "acme", {"first_name": "Assigned", "phone": "4155550100"})
    event = LeadAssigned(
        assignment_id=uuid.uuid4(),
        client_id="acme",
        lead_id=lead_id,
        delivery_id=delivery_id,
        user_id=carl,
        assigned_by=admin,
        assigned_at=datetime.now(UTC),
    )
    pool = await db.create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        _, catalog_now = await load_latest(pool)
        assert await notify_assigned_lead(pool, catalog_now, settings, event, "m1") == 2
        assert await notify_assigned_lead(pool, catalog_now, settings, event, "m1") == 0  # a repeat
        # Reassigned to Dana herself and back to Carl: nobody is told twice.
        again = event.model_copy(update={"assignment_id": uuid.uuid4(), "user_id": dana})
        assert await notify_assigned_lead(pool, catalog_now, settings, again, "m2") == 1  # Dana, queued again ...
    finally:
        await pool.close()
    rows = await conn.fetch("SELECT payload FROM outbox WHERE routing_key = 'notify.new_lead'")
    requests = [NotificationRequested.model_validate(_json(r["payload"])) for r in rows]
    assert sorted(r.to[0] for r in requests) == [
        "carl@acme.example.com",
        "dana@acme.example.com",
        "dana@acme.example.com",
    ]
    # ... but with the same notification id for Dana: notifier's send record sends it once.
    assert len({r.notification_id for r in requests}) == 2
    carls = next(r for r in requests if r.to == ["carl@acme.example.com"])
    assert carls.data.model_dump(exclude_unset=True)["assigned_to"] == "you"


# --- SMTP failures ---------------------------------------------------------------------------------


async def test_smtp_down_then_up_is_retried_through_the_retry_queues(settings, conn):
    port = free_port()
    # Longer tiers than the fixture's, so the server can come back between two attempts.
    slow = with_smtp(settings, port, retry_delays=(1.0, 3.0))
    body = notification("lead_delivery")
    sink = SmtpSink(port)
    try:
        async with build(slow).running():
            await publish_event(slow, "notify.lead_delivery", body)
            await wait_for(
                lambda: conn.fetchval(
                    "SELECT attempts >= 1 FROM notification_sends WHERE notification_id = $1", body["notification_id"]
                )
            )
            sink.start()
            await wait_for(lambda: sink.received)
            await wait_for(
                lambda: conn.fetchval(
                    "SELECT status = 'sent' FROM notification_sends WHERE notification_id = $1", body["notification_id"]
                )
            )
    finally:
        sink.stop()
        await Topology(slow.namespace, slow.retry_delays).delete(slow.amqp_url)
    assert len(sink.received) == 1
    record = await conn.fetchrow("SELECT attempts, last_error FROM notification_sends")
    assert record["attempts"] >= 2 and record["last_error"] is None
    assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 0


async def test_temporary_smtp_refusal_is_retried(nsettings, smtp, conn):
    smtp.answers.append("451 4.3.0 Try again later")
    body = notification("password_reset")
    async with build(nsettings).running():
        await publish_event(nsettings, "notify.password_reset", body)
        await wait_for(lambda: smtp.received)
    assert smtp.refused_data == 1 and len(smtp.received) == 1
    record = await conn.fetchrow("SELECT status, attempts FROM notification_sends")
    assert (record["status"], record["attempts"]) == ("sent", 2)


async def test_smtp_down_for_good_dead_letters_with_the_reason(settings, conn):
    down = with_smtp(settings, free_port())  # nothing listens there
    body = notification("order_filled", to=[])
    async with build(down).running():
        await publish_event(down, "notify.order_filled", body)
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 1 FROM dead_letters"))
    [dead] = await dead_letters(down, "notifier.requests")
    assert "TransientError: SMTP server 127.0.0.1" in dead.headers["x-error"]
    assert "unreachable" in dead.headers["x-error"]
    assert dead.headers["x-retry-count"] == len(down.retry_delays)
    assert dead.headers["x-original-routing-key"] == "notify.order_filled"
    record = await conn.fetchrow("SELECT status, attempts, last_error FROM notification_sends")
    assert record["status"] == "pending" and record["attempts"] == 1 + len(down.retry_delays)
    assert "unreachable" in record["last_error"]


async def test_permanent_smtp_refusal_and_bad_recipient_dead_letter_at_once(nsettings, smtp, conn):
    smtp.answers.append("550 5.1.1 No such mailbox")
    refused = notification("lead_forward", to=["nobody@example.com"])
    invalid = notification("lead_forward", to=["not an address"])
    async with build(nsettings).running():
        await publish_event(nsettings, "notify.lead_forward", refused)
        await publish_event(nsettings, "notify.lead_forward", invalid)
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 2 FROM dead_letters"))
    errors = sorted(m.headers["x-error"] for m in await dead_letters(nsettings, "notifier.requests"))
    assert errors[0].startswith("EmailRefused: SMTP server answered 550")
    assert errors[1].startswith("InvalidNotification: invalid recipient address 'not an address'")
    assert smtp.received == []


# --- appointments ----------------------------------------------------------------------------------


def _create(appointment_id, lead_id, user_id, starts_at, minutes=60, **kw) -> dict:
    return {
        "appointment_id": str(appointment_id),
        "client_id": "acme",
        "lead_id": str(lead_id),
        "assigned_user_id": str(user_id),
        "starts_at": starts_at.isoformat(),
        "reminder_minutes_before": minutes,
        "title": kw.pop("title", "Site visit"),
        "requested_at": kw.pop("requested_at", datetime.now(UTC)).isoformat(),
        **kw,
    }


async def test_appointment_created_updated_and_cancelled_emails_and_reminder(nsettings, smtp, conn, catalog):
    bea = await add_portal_user(conn, "acme", "bea@acme.example.com", name="Bea")
    cy = await add_portal_user(conn, "acme", "cy@acme.example.com", name="Cy")
    lead_id, _ = await add_sold_lead(conn, "acme", {"first_name": "Ada", "phone": "4155550100"})
    appointment_id = uuid.uuid4()
    starts = (datetime.now(UTC) + timedelta(hours=3)).replace(microsecond=0)
    runtime = build(nsettings)
    async with runtime.running():
        await publish_event(
            nsettings, "appointment.create", _create(appointment_id, lead_id, bea, starts, created_by_user_id=str(cy))
        )
        await wait_for(lambda: smtp.of_kind("appointment_created"))
        row = await conn.fetchrow("SELECT status, reminder_due_at, reminder_revision FROM appointments")
        assert row["reminder_due_at"] == starts - timedelta(minutes=60) and row["reminder_revision"] == 0

        moved = starts + timedelta(hours=1)
        await publish_event(
            nsettings,
            "appointment.update",
            {
                "appointment_id": str(appointment_id),
                "client_id": "acme",
                "assigned_user_id": str(cy),
                "starts_at": moved.isoformat(),
                "requested_at": datetime.now(UTC).isoformat(),
            },
        )
        await wait_for(lambda: smtp.of_kind("appointment_updated"))
        row = await conn.fetchrow("SELECT assigned_user_id, reminder_due_at, reminder_revision FROM appointments")
        assert row["assigned_user_id"] == cy and row["reminder_due_at"] == moved - timedelta(minutes=60)
        assert row["reminder_revision"] == 1

        # An update older than the one applied changes nothing.
        await publish_event(
            nsettings,
            "appointment.update",
            {
                "appointment_id": str(appointment_id),
                "client_id": "acme",
                "title": "stale",
                "requested_at": (datetime.now(UTC) - timedelta(hours=1)).isoformat(),
            },
        )
        await publish_event(
            nsettings,
            "appointment.cancel",
            {"appointment_id": str(appointment_id), "client_id": "acme", "requested_at": datetime.now(UTC).isoformat()},
        )
        await wait_for(lambda: smtp.of_kind("appointment_cancelled"))

        # The clock reaches the reminder time of the cancelled appointment: no reminder.
        await conn.execute("UPDATE appointments SET reminder_due_at = now() - interval '1 minute'")
        cycles = runtime.loops["reminders"].rounds
        await wait_for(lambda: runtime.loops["reminders"].rounds >= cycles + 3)

    (created,) = smtp.of_kind("appointment_created")
    assert created.rcpt_tos == ["bea@acme.example.com"]
    assert "Cy assigned you an appointment." in created.text()
    local = starts.astimezone(ZoneInfo("America/New_York"))
    assert f"{local:%a %d %b %Y %H:%M} (America/New_York)" in created.subject
    assert "4155550100" in created.text()
    (updated,) = smtp.of_kind("appointment_updated")
    assert updated.rcpt_tos == ["cy@acme.example.com"]
    assert "changed (assigned user id, starts at)" in updated.text()
    (cancelled,) = smtp.of_kind("appointment_cancelled")
    assert cancelled.rcpt_tos == ["cy@acme.example.com"]
    assert smtp.of_kind("appointment_reminder") == []
    assert runtime.loops["reminders"].done == 0
    row = await conn.fetchrow("SELECT status, title FROM appointments")
    assert (row["status"], row["title"]) == ("cancelled", "Site visit")


async def test_appointment_for_another_clients_user_or_lead_is_refused(nsettings, smtp, conn, catalog):
    bolt_user = await add_portal_user(conn, "bolt", "b@bolt.example.com")
    acme_user = await add_portal_user(conn, "acme", "a@acme.example.com")
    bolt_lead, _ = await add_sold_lead(conn, "bolt", {"first_name": "Zed"})
    acme_lead, _ = await add_sold_lead(conn, "acme", {"first_name": "Ada"})
    starts = datetime.now(UTC) + timedelta(days=1)
    async with build(nsettings).running():
        await publish_event(nsettings, "appointment.create", _create(uuid.uuid4(), acme_lead, bolt_user, starts))
        await publish_event(nsettings, "appointment.create", _create(uuid.uuid4(), bolt_lead, acme_user, starts))
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 2 FROM dead_letters"))
    errors = sorted(m.headers["x-error"] for m in await dead_letters(nsettings, "notifier.requests"))
    assert errors[0].startswith("AppointmentRefused: lead ") and "was not delivered to client 'acme'" in errors[0]
    assert errors[1].startswith("AppointmentRefused: portal user ") and "not a user of client 'acme'" in errors[1]
    assert await conn.fetchval("SELECT count(*) FROM appointments") == 0
    assert smtp.received == []


async def test_two_notifier_replicas_send_each_reminder_once(nsettings, smtp, conn, catalog):
    user = await add_portal_user(conn, "acme", "bea@acme.example.com", name="Bea")
    lead_id, _ = await add_sold_lead(conn, "acme", {"first_name": "Ada"})
    count = 12
    # Starting within the reminder offset: each reminder is due the moment it is created.
    soon = datetime.now(UTC) + timedelta(minutes=20)
    first, second = build(nsettings), build(nsettings)
    async with first.running(), second.running(), EventTap(nsettings, "notify.appointment_reminder") as tap:
        for _ in range(count):
            await publish_event(nsettings, "appointment.create", _create(uuid.uuid4(), lead_id, user, soon))
        await wait_for(lambda: len(smtp.of_kind("appointment_reminder")) >= count, timeout=30)
        # Both schedulers go round a few more times with nothing left to claim.
        c1, c2 = first.loops["reminders"].rounds, second.loops["reminders"].rounds
        await wait_for(lambda: first.loops["reminders"].rounds >= c1 + 3 and second.loops["reminders"].rounds >= c2 + 3)
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
        await wait_for(lambda: len(tap.messages) >= count)

    assert first.loops["reminders"].done + second.loops["reminders"].done == count
    assert len(tap.messages) == count
    reminders = smtp.of_kind("appointment_reminder")
    assert len(reminders) == count and len({m.message_id for m in reminders}) == count
    assert not any(m.subject.startswith("Late") for m in reminders)
    assert await conn.fetchval("SELECT count(*) FROM appointments WHERE reminder_queued_at IS NOT NULL") == count


async def test_reminder_that_fell_due_while_notifier_was_down_is_sent_late_on_recovery(nsettings, smtp, conn, catalog):
    user = await add_portal_user(conn, "acme", "bea@acme.example.com", name="Bea")
    lead_id, _ = await add_sold_lead(conn, "acme", {"first_name": "Ada"})
    starts = datetime.now(UTC) + timedelta(hours=3)
    async with build(nsettings).running():
        await publish_event(nsettings, "appointment.create", _create(uuid.uuid4(), lead_id, user, starts))
        await wait_for(lambda: smtp.of_kind("appointment_created"))
    # notifier is down for two and a half hours: the reminder (due an hour before the start)
    # passes unsent.
    await conn.execute(
        "UPDATE appointments SET starts_at = starts_at - interval '150 minutes',"
        " reminder_due_at = reminder_due_at - interval '150 minutes'"
    )
    assert smtp.of_kind("appointment_reminder") == []
    async with build(nsettings).running():
        await wait_for(lambda: smtp.of_kind("appointment_reminder"))
    (reminder,) = smtp.of_kind("appointment_reminder")
    assert reminder.subject.startswith("Late reminder: Site visit")
    assert "This reminder is late" in reminder.text()
    assert await conn.fetchval("SELECT reminder_late FROM appointments") is True


# --- CLI -------------------------------------------------------------------------------------------


async def test_cli_test_email_and_unsent_list(nsettings, settings, smtp, conn, capsys):
    from argparse import Namespace

    from services.notifier import cli

    assert await cli._test_email(Namespace(address="ops@example.com"), nsettings) == 0
    assert [m.rcpt_tos for m in smtp.received] == [["ops@example.com"]]
    assert await cli._test_email(Namespace(address="ops@example.com"), with_smtp(settings, free_port())) == 1
    assert "unreachable" in capsys.readouterr().err

    await conn.execute(
        "INSERT INTO notification_sends (notification_id, kind, recipients, message_id, status, attempts, last_error)"
        " VALUES ($1, 'new_lead', '{a@x.com}', '<m@x>', 'pending', 3, 'SMTP server answered 451')",
        uuid.uuid4(),
    )
    assert await cli._unsent(Namespace(limit=10), nsettings) == 0
    out = capsys.readouterr().out
    assert "new_lead\ta@x.com\t3" in out and "SMTP server answered 451" in out

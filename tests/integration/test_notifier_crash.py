"""notifier killed after the SMTP server took an email but before the send was recorded: the email
is repeated once after restart (same Message-ID), never lost. And a reminder whose appointment
changed after it was queued is dropped at send time."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import uuid

import pytest

from harness.processes import Processes, output, service_env
from services.notifier.main import build
from shared.contracts import NotificationRequested
from shared.service import Runtime
from tests.notifier_support import SmtpSink, free_port, publish_event, with_smtp
from tests.support import wait_for

pytestmark = pytest.mark.integration


def _start_notifier(settings, **extra: str) -> subprocess.Popen[bytes]:
    return Processes(service_env(settings, **extra), output=subprocess.PIPE).service("notifier")


async def test_killed_between_send_and_record_repeats_the_email_once_never_loses_it(settings, conn):
    sink = SmtpSink(free_port())
    sink.start()
    s = with_smtp(settings, sink.port)
    request = NotificationRequested(
        notification_id=uuid.uuid4(),
        kind="password_reset",
        to=["bea@example.com"],
        portal_link="https://portal.example.com/reset/x",
    )
    try:
        async with Runtime("setup", s).running():
            pass  # declare the topology, so the request waits in notifier's queue
        crashing = _start_notifier(s, LEADWIRE_CRASH_POINT="notifier.after_send")
        await publish_event(s, "notify.password_reset", request.model_dump(mode="json"))
        code = await asyncio.to_thread(crashing.wait, 60)
        assert code == 86, output(crashing)
        assert len(sink.received) == 1
        assert await conn.fetchval("SELECT status FROM notification_sends") == "pending"

        restarted = _start_notifier(s)
        try:
            await wait_for(lambda: conn.fetchval("SELECT status = 'sent' FROM notification_sends"), timeout=60)
        finally:
            restarted.send_signal(signal.SIGTERM)
            await asyncio.to_thread(restarted.wait, 30)
    finally:
        sink.stop()
    assert len(sink.received) == 2
    assert {m.message_id for m in sink.received} == {f"<{request.notification_id}@mail.example.com>"}


async def test_reminder_for_a_moved_or_cancelled_appointment_is_dropped_at_send_time(settings, conn):
    sink = SmtpSink(free_port())
    sink.start()
    s = with_smtp(settings, sink.port)
    user_id, appointment_id, lead_id = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO portal_users (id, client_id, email) VALUES ($1, 'acme', 'bea@example.com')", user_id
    )
    # Moved once since the reminder of revision 0 was queued.
    await conn.execute(
        "INSERT INTO appointments (id, client_id, lead_id, assigned_user_id, starts_at, reminder_minutes, status,"
        " reminder_revision, last_requested_at) VALUES ($1, 'acme', $2, $3, now() + interval '1 day', 60,"
        " 'scheduled', 1, now())",
        appointment_id,
        lead_id,
        user_id,
    )

    def reminder(revision: int) -> dict:
        return NotificationRequested(
            notification_id=uuid.uuid4(),
            kind="appointment_reminder",
            to=["bea@example.com"],
            client_id="acme",
            lead_id=lead_id,
            data={
                "appointment_id": str(appointment_id),
                "revision": revision,
                "starts_at": "2026-11-24T17:00:00+00:00",
            },
        ).model_dump(mode="json")

    stale, current = reminder(0), reminder(1)
    try:
        async with build(s).running():
            await publish_event(s, "notify.appointment_reminder", stale)
            await publish_event(s, "notify.appointment_reminder", current)
            await wait_for(
                lambda: conn.fetchval("SELECT count(*) = 2 FROM notification_sends WHERE status <> 'pending'")
            )
    finally:
        sink.stop()
    statuses = {
        r["notification_id"]: r["status"]
        for r in await conn.fetch("SELECT notification_id, status FROM notification_sends")
    }
    assert statuses == {uuid.UUID(stale["notification_id"]): "skipped", uuid.UUID(current["notification_id"]): "sent"}
    assert len(sink.received) == 1

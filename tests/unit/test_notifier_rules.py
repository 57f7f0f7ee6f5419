"""notifier's pure decisions: recipients, stable ids, reminder times, lateness, updates, SMTP codes."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.notifier import rules

NOW = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)
ADMIN = "admin@example.com"


@pytest.mark.parametrize(
    ("kind", "to", "expected"),
    [
        ("new_lead", ["a@x.com"], ["a@x.com"]),
        ("new_lead", [" a@x.com ", "A@X.com", "b@x.com"], ["a@x.com", "b@x.com"]),
        ("account_paused", [], [ADMIN]),
        ("order_filled", ["ops@x.com"], ["ops@x.com", ADMIN]),
        ("order_filled", ["Admin@Example.com"], ["Admin@Example.com"]),
    ],
)
def test_recipients(kind, to, expected):
    assert rules.recipients(kind, to, ADMIN) == expected


@pytest.mark.parametrize(
    ("kind", "to"),
    [
        ("new_lead", []),
        ("lead_forward", ["not-an-address"]),
        ("lead_forward", ["a@x.com\r\nBcc: victim@y.com"]),
        ("lead_forward", ["Ada <a@x.com>"]),
        ("lead_contact", ["a@x.com", "b@"]),
    ],
)
def test_recipients_refused(kind, to):
    with pytest.raises(rules.InvalidNotification):
        rules.recipients(kind, to, ADMIN)


def test_derived_ids_are_stable_and_distinct():
    d, u1, u2 = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    assert rules.new_lead_notification_id(d, u1) == rules.new_lead_notification_id(d, u1)
    assert rules.new_lead_notification_id(d, u1) != rules.new_lead_notification_id(d, u2)
    a = uuid.uuid4()
    ids = {
        rules.appointment_notification_id(a, e, m)
        for e, m in [("created", 0), ("reminder", 0), ("reminder", 1), ("updated", "t1"), ("updated", "t2")]
    }
    assert len(ids) == 5


@pytest.mark.parametrize(
    ("sender", "domain"),
    [
        ("leadwire@mail.example.com", "mail.example.com"),
        ("Leadwire <noreply@example.org>", "example.org"),
        ("nobody", "leadwire.invalid"),
    ],
)
def test_message_id_header(sender, domain):
    nid = uuid.UUID("12345678-1234-5678-1234-567812345678")
    assert rules.message_id_header(nid, sender) == f"<{nid}@{domain}>"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello", "Hello"),
        ("Hi\r\nBcc: x@y.com", "Hi Bcc: x@y.com"),
        ("  many   spaces\tand\ttabs ", "many spaces and tabs"),
        ("x" * 250, "x" * 199 + "…"),
    ],
)
def test_clean_header(text, expected):
    assert rules.clean_header(text) == expected


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://portal.example.com/link/abc", "https://portal.example.com/link/abc"),
        ("http://127.0.0.1:8080/portal/link/x", "http://127.0.0.1:8080/portal/link/x"),
        ("javascript:alert(1)", None),
        ("data:text/html,<b>x</b>", None),
        ("https://a.com/x y", None),
        (None, None),
        ("", None),
    ],
)
def test_safe_link(url, expected):
    assert rules.safe_link(url) == expected


@pytest.mark.parametrize(
    ("code", "transient"),
    [
        (421, True),
        (450, True),
        (451, True),
        (452, True),
        (500, False),
        (535, False),
        (550, False),
        (554, False),
        (0, True),
        (-1, True),
    ],
)
def test_smtp_codes(code, transient):
    assert rules.smtp_code_is_transient(code) is transient


@pytest.mark.parametrize(
    ("starts_in", "minutes", "due_in"),
    [
        (timedelta(hours=3), 60, timedelta(hours=2)),  # the normal case
        (timedelta(minutes=30), 60, timedelta(0)),  # short notice: at once
        (timedelta(hours=1), 0, timedelta(hours=1)),  # reminded at the start
        (timedelta(0), 60, None),  # starting now: nothing to remind of
        (timedelta(hours=-1), 30, None),  # in the past
    ],
)
def test_plan_reminder(starts_in, minutes, due_in):
    due = rules.plan_reminder(NOW + starts_in, minutes, NOW)
    assert due == (None if due_in is None else NOW + due_in)


@pytest.mark.parametrize(
    ("handed_over_after_due", "late"),
    [
        (timedelta(0), False),
        (timedelta(seconds=30), False),
        (rules.LATE_AFTER, False),
        (rules.LATE_AFTER + timedelta(seconds=1), True),
        (timedelta(hours=5), True),
    ],
)
def test_is_late(handed_over_after_due, late):
    assert rules.is_late(NOW, NOW + handed_over_after_due) is late


USER, OTHER = uuid.uuid4(), uuid.uuid4()
BASE = rules.Appointment(
    assigned_user_id=USER,
    starts_at=NOW + timedelta(days=1),
    reminder_minutes=60,
    title="Site visit",
    notes="",
    reminder_due_at=NOW + timedelta(days=1, hours=-1),
    reminder_queued=True,
    reminder_revision=3,
)


@pytest.mark.parametrize(
    ("changes", "changed", "replanned", "due"),
    [
        ({}, (), False, BASE.reminder_due_at),
        ({"title": "Site visit"}, (), False, BASE.reminder_due_at),  # same value: no change
        ({"title": "Call back", "notes": "bring quote"}, ("title", "notes"), False, BASE.reminder_due_at),
        ({"assigned_user_id": OTHER}, ("assigned_user_id",), False, BASE.reminder_due_at),
        ({"starts_at": NOW + timedelta(days=2)}, ("starts_at",), True, NOW + timedelta(days=2, hours=-1)),
        ({"reminder_minutes": 15}, ("reminder_minutes",), True, NOW + timedelta(days=1, minutes=-15)),
        ({"starts_at": NOW - timedelta(hours=1)}, ("starts_at",), True, None),
    ],
)
def test_plan_update(changes, changed, replanned, due):
    plan = rules.plan_update(BASE, NOW, **changes)
    assert plan.changed == changed
    assert plan.replanned is replanned
    assert plan.appointment.reminder_due_at == due
    # A moved reminder is a new one: not yet queued, under a new revision (a new email id).
    assert plan.appointment.reminder_queued is (not replanned)
    assert plan.appointment.reminder_revision == BASE.reminder_revision + (1 if replanned else 0)
    for name, value in changes.items():
        assert getattr(plan.appointment, name) == value


# --- who hears of a return decision ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "told"),
    [("admin", True), ("auto_approved", False), ("cap_exceeded", False), ("window_expired", False)],
)
def test_only_the_sellers_decisions_are_emailed(reason, told):
    assert rules.told_of_return_decision(reason) is told


@pytest.mark.parametrize(
    ("is_admin", "email", "requested_by", "told"),
    [
        (True, "ann@acme.example", None, True),  # admins see every return of the client
        (False, "sam@acme.example", "Sam@Acme.example ", True),  # the requester, case and spaces aside
        (False, "cal@acme.example", "sam@acme.example", False),  # a colleague
        (False, "sam@acme.example", None, False),  # no requester recorded (an API or CLI request)
        (False, "sam@acme.example", "cli:root", False),
    ],
)
def test_the_clients_admins_and_the_requester_hear_of_a_decision(is_admin, email, requested_by, told):
    assert rules.told_of_return(is_admin, email, requested_by) is told


def test_one_return_decision_email_per_return_and_user():
    r, u = uuid.uuid4(), uuid.uuid4()
    assert rules.return_decided_notification_id(r, u) == rules.return_decided_notification_id(r, u)
    assert rules.return_decided_notification_id(r, u) != rules.return_decided_notification_id(r, uuid.uuid4())

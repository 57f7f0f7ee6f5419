"""Email templates: every kind renders text and HTML, every value is escaped in HTML, headers stay
one line, and the composed message carries the stable Message-ID."""

from __future__ import annotations

import email
import uuid
from datetime import UTC, datetime
from email import policy
from typing import get_args

import pytest

from services.notifier import templates
from shared.contracts import NotificationRequested
from shared.contracts.notifier import NotificationKind

EVIL = '<script>alert("x")</script>'
FIELDS = {"first_name": EVIL, "last_name": "O'Hara & Sons", "phone": "4155550100", "state": "CA"}
KINDS = list(get_args(NotificationKind))


def request(kind: str, **kw) -> NotificationRequested:
    base = dict(
        notification_id=uuid.uuid4(),
        kind=kind,
        to=["a@example.com"],
        client_id="acme",
        lead_id=uuid.uuid4(),
        lead_fields=FIELDS,
        portal_link="https://portal.example.com/link/t0k",
        message=f"note {EVIL}",
        data={
            "starts_at": "2026-11-24T17:00:00+00:00",
            "time_zone": "America/New_York",
            "title": f"Visit {EVIL}",
            "reminder_minutes": 30,
            "user_name": EVIL,
            "delivery_account_id": EVIL,
            "order_id": "o-1",
        },
    )
    base.update(kw)
    return NotificationRequested(**base)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_escapes_every_value_in_html(kind):
    rendered = templates.render(request(kind))
    assert rendered.subject and "\n" not in rendered.subject
    assert "<script>" not in rendered.html
    assert rendered.html.count("<a ") <= 1
    # Whatever the kind shows of the hostile values, it shows as text.
    if EVIL in rendered.text:
        assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in rendered.html


@pytest.mark.parametrize(
    ("kind", "shows_lead", "shows_link"),
    [
        ("lead_delivery", True, True),
        ("new_lead", True, True),
        ("lead_forward", True, False),
        ("lead_contact", False, False),  # to the lead themselves: no lead record, no portal link
        ("password_reset", False, True),
        ("account_paused", False, False),
        ("order_filled", False, False),
        ("appointment_created", True, True),
        ("appointment_reminder", True, True),
        ("appointment_cancelled", False, True),
        ("return_decided", False, True),  # the lead's name and id, not its record
    ],
)
def test_what_each_kind_shows(kind, shows_lead, shows_link):
    rendered = templates.render(request(kind))
    assert ("4155550100" in rendered.text) is shows_lead
    assert ("https://portal.example.com/link/t0k" in rendered.text) is shows_link
    assert ('href="https://portal.example.com/link/t0k"' in rendered.html) is shows_link


def test_lead_fields_are_labelled_in_text_and_escaped_in_html():
    rendered = templates.render(request("lead_delivery", data={"lead_type_name": "Solar"}))
    assert rendered.subject == f"New Solar lead: {EVIL} O'Hara & Sons"
    assert f"First name: {EVIL}" in rendered.text
    assert "Last name:  O'Hara & Sons" in rendered.text
    assert "<td>O&#x27;Hara &amp; Sons</td>" in rendered.html


def test_hostile_link_is_not_rendered():
    rendered = templates.render(request("lead_delivery", portal_link="javascript:alert(1)"))
    assert "javascript" not in rendered.html and "javascript" not in rendered.text


def test_subject_given_by_the_requester_is_flattened():
    rendered = templates.render(request("lead_contact", subject="Quote\r\nBcc: victim@example.com"))
    assert rendered.subject == "Quote Bcc: victim@example.com"


def test_appointment_time_is_shown_in_the_clients_zone():
    rendered = templates.render(request("appointment_reminder"))
    assert "Tue 24 Nov 2026 12:00 (America/New_York)" in rendered.text
    assert rendered.subject.startswith("Reminder: Visit ")


def test_late_reminder_says_so():
    late = request(
        "appointment_reminder",
        data={
            "starts_at": "2026-11-24T17:00:00+00:00",
            "time_zone": "UTC",
            "late": True,
            "reminder_due_at": "2026-11-24T16:00:00+00:00",
        },
    )
    rendered = templates.render(late)
    assert rendered.subject.startswith("Late reminder:")
    assert "This reminder is late: it was due Tue 24 Nov 2026 16:00 (UTC)" in rendered.text


def test_unknown_time_zone_falls_back_to_utc():
    assert templates.format_when("2026-11-24T17:00:00+00:00", "Mars/Olympus") == "Tue 24 Nov 2026 17:00 (UTC)"


def test_compose_builds_a_multipart_message_with_stable_headers():
    rendered = templates.render(request("new_lead"))
    msg = templates.compose(
        rendered,
        kind="new_lead",
        sender="leadwire@example.com",
        recipients=["a@x.com", "b@x.com"],
        message_id="<id-1@example.com>",
        date=datetime(2026, 11, 23, tzinfo=UTC),
        reply_to="rep@example.com",
    )
    parsed = email.message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert parsed["Message-ID"] == "<id-1@example.com>"
    assert parsed["To"] == "a@x.com, b@x.com"
    assert parsed["Reply-To"] == "rep@example.com"
    assert parsed["Auto-Submitted"] == "auto-generated"
    assert parsed.get_content_type() == "multipart/alternative"
    plain, html = parsed.get_body(("plain",)), parsed.get_body(("html",))
    assert plain is not None and html is not None
    text, body = plain.get_content(), html.get_content()
    assert EVIL in text and "<script>" not in body


def test_human_mail_is_not_marked_automatic_and_bad_reply_to_is_dropped():
    rendered = templates.render(request("lead_contact"))
    msg = templates.compose(
        rendered,
        kind="lead_contact",
        sender="leadwire@example.com",
        recipients=["a@x.com"],
        message_id="<id-2@example.com>",
        date=datetime(2026, 11, 23, tzinfo=UTC),
        reply_to="x@y.com\r\nBcc: z@w.com",
    )
    assert msg["Auto-Submitted"] is None and msg["Reply-To"] is None


def test_return_decided_shows_the_decision_the_note_and_the_credit():
    approved = templates.render(
        request(
            "return_decided",
            data={"status": "approved", "note": "Verified: bad phone", "credit": "25.00", "reason": "bad phone"},
        )
    )
    assert approved.subject.startswith("Return approved: ")
    assert "Verified: bad phone" in approved.text and "25.00 was credited to your balance." in approved.text
    denied = templates.render(request("return_decided", data={"status": "denied", "note": ""}))
    assert denied.subject.startswith("Return denied: ")
    assert "Note from the seller: (none)" in denied.text and "Credit" not in denied.text

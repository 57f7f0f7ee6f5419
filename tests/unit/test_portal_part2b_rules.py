"""Table tests of the Client Portal's rules for settings, users, lead assignment and appointments
(services/portal/rules.py, part 2b)."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, time

import pytest

from services.notifier.rules import Subscriber, told_at_sale, told_on_assignment
from services.portal import rules


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the current password is wrong", "The current password is wrong."),
        ("Done.", "Done."),
        ("  ", ""),
        ("is it?", "Is it?"),
    ],
)
def test_sentence(text, expected):
    assert rules.sentence(text) == expected


@pytest.mark.parametrize(
    ("name", "phone", "errors"),
    [
        ("Sam  Seller ", "+1 (415) 555-0199", set()),
        ("", "", set()),
        ("x" * 201, "", {"name"}),
        ("Sam", "1" * 51, {"phone"}),
        ("Sam", "call me", {"phone"}),
        ("Sam", "415 555 0100 x12", set()),
    ],
)
def test_contact_details(name, phone, errors):
    checked, found = rules.check_contact_details(name, phone)
    assert set(found) == errors
    if not errors:
        assert checked is not None and checked.name == " ".join(name.split())


@pytest.mark.parametrize(
    ("current", "new", "confirm", "errors"),
    [
        ("old password", "new password!", "new password!", set()),
        ("", "new password!", "new password!", {"current"}),
        ("old", "", "", {"password"}),
        ("old", "a" * 1025, "a" * 1025, {"password"}),
        ("old", "new password!", "other", {"confirm"}),
        ("o" * 1025, "new password!", "new password!", {"current"}),
    ],
)
def test_new_password_form(current, new, confirm, errors):
    assert set(rules.check_new_password(current, new, confirm)) == errors


PARENT = uuid.UUID("11111111-1111-1111-1111-111111111111")


@pytest.mark.parametrize(
    ("form", "creating", "errors"),
    [
        ({"name": "Nina", "email": "nina@acme.test", "enabled": "on"}, True, set()),
        ({"name": "Nina", "email": ""}, True, {"email"}),
        ({"name": "Nina", "email": "nope"}, True, {"email"}),
        ({"name": "Nina", "email": ""}, False, set()),  # the email is not edited
        ({"name": "Nina", "email": "n@a.test", "parent": str(PARENT)}, True, set()),
        ({"name": "Nina", "email": "n@a.test", "parent": str(uuid.uuid4())}, True, {"parent"}),
        ({"name": "Nina", "email": "n@a.test", "parent": "../x"}, True, {"parent"}),
        ({"name": "x" * 300, "email": "n@a.test", "phone": "abc"}, True, {"name", "phone"}),
    ],
)
def test_user_form(form, creating, errors):
    checked, found = rules.check_user_form(form, creating=creating, parents=[PARENT])
    assert set(found) == errors
    assert (checked is None) == bool(errors)


def test_user_form_reads_checkboxes_and_parent():
    checked, _ = rules.check_user_form(
        {"email": "n@a.test", "is_admin": "on", "enabled": "on", "parent": str(PARENT)}, creating=True, parents=[PARENT]
    )
    assert checked is not None
    assert (checked.is_admin, checked.view_downline, checked.enabled, checked.notify_new_leads) == (
        True,
        False,
        True,
        False,
    )
    assert checked.parent_user_id == PARENT


@pytest.mark.parametrize(
    ("error", "message", "where"),
    [
        ("conflict", "", "email"),
        ("forbidden", "a client needs at least one enabled admin user", "form"),
        ("forbidden", "only an admin user may change this", "form"),
        ("bad_request", "a user cannot be below themselves", "parent"),
        ("bad_request", "the parent user is not a user of this client", "parent"),
        ("unavailable", "", "form"),
    ],
)
def test_user_refusals(error, message, where):
    found, sentence = rules.user_refusal(error, message)
    assert found == where and sentence


# --- notifier: who hears of a new lead -------------------------------------------------------------

ADMIN, DANA, CARL, EVE = (uuid.UUID(int=n) for n in range(1, 5))


@pytest.mark.parametrize(
    ("user", "at_sale", "on_carl"),
    [
        (Subscriber(ADMIN, True, False), True, False),  # admins: told at the sale, not again
        (Subscriber(DANA, False, True), False, True),  # View Downline above Carl
        (Subscriber(DANA, False, False), False, False),  # above Carl but without View Downline
        (Subscriber(CARL, False, False), False, True),  # the assignee
        (Subscriber(EVE, False, True), False, False),  # View Downline, but Carl is not below her
    ],
)
def test_who_hears_of_a_new_lead(user, at_sale, on_carl):
    assert told_at_sale(user) is at_sale
    assert told_on_assignment(user, CARL, chain=[DANA, ADMIN]) is on_carl


def test_who_may_assign():
    def viewer(scope):
        return rules.Viewer("acme", scope, None if scope == "all" else (CARL,), CARL)

    assert [rules.may_assign(viewer(s)) for s in ("all", "downline", "own")] == [True, True, False]


# --- appointments ------------------------------------------------------------------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
LA = "America/Los_Angeles"


def test_local_instant_in_the_clients_zone_with_dst():
    assert rules.local_instant(date(2026, 7, 1), time(10, 30), LA) == datetime(2026, 7, 1, 17, 30, tzinfo=UTC)
    assert rules.local_instant(date(2026, 1, 15), time(10, 30), LA) == datetime(2026, 1, 15, 18, 30, tzinfo=UTC)
    # 02:30 does not exist on the day clocks go forward; 01:30 happens twice when they go back.
    assert rules.local_instant(date(2026, 3, 8), time(2, 30), LA) is None
    assert rules.local_instant(date(2026, 11, 1), time(1, 30), LA) == datetime(2026, 11, 1, 8, 30, tzinfo=UTC)


GOOD = {"title": "Visit", "date": "2026-03-02", "time": "09:15", "reminder": "60", "notes": "", "assignee": str(CARL)}


@pytest.mark.parametrize(
    ("changes", "errors"),
    [
        ({}, set()),
        ({"title": "  "}, {"title"}),
        ({"title": "x" * 201}, {"title"}),
        ({"date": "2026-02-30"}, {"date"}),
        ({"date": "yesterday"}, {"date"}),
        ({"time": "9:15"}, {"time"}),
        ({"time": "24:00"}, {"time"}),
        ({"date": "2026-03-01", "time": "03:59"}, {"date"}),  # 11:59 UTC: already past
        ({"date": "2026-03-08", "time": "02:30"}, {"time"}),  # skipped by DST
        ({"reminder": "45"}, {"reminder"}),
        ({"reminder": "-1"}, {"reminder"}),
        ({"notes": "n" * 4001}, {"notes"}),
        ({"assignee": str(EVE)}, {"assignee"}),
        ({"assignee": "me"}, {"assignee"}),
    ],
)
def test_appointment_form(changes, errors):
    checked, found = rules.check_appointment_form({**GOOD, **changes}, zone=LA, now=NOW, assignees=[CARL, DANA])
    assert set(found) == errors
    if not errors:
        assert checked == rules.AppointmentForm("Visit", datetime(2026, 3, 2, 17, 15, tzinfo=UTC), 60, "", CARL)


def test_an_edit_may_keep_a_past_time():
    past = {**GOOD, "date": "2026-03-01", "time": "03:00"}
    start = datetime(2026, 3, 1, 11, 0, tzinfo=UTC)
    checked, found = rules.check_appointment_form(past, zone=LA, now=NOW, assignees=[CARL], current_start=start)
    assert found == {} and checked is not None and checked.starts_at == start


@pytest.mark.parametrize(
    ("message", "words"),
    [
        ("portal user 123 is disabled", "disabled"),
        ("portal user 1 is not a user of client 'acme'", "not one of your company's users"),
        ("lead 1 was not delivered to client 'acme'", "not one of your company's leads"),
        ("something else", "Something else."),
    ],
)
def test_appointment_refusals(message, words):
    assert words in rules.appointment_refusal(message)


def test_bulk_outcome_and_its_notice():
    outcome = rules.BulkOutcome().add("assigned").add("assigned").add("skipped")
    assert outcome.params() == {"bulk_assigned": "2", "bulk_skipped": "1"}
    notice, error = rules.bulk_notice(outcome.params())
    assert notice == "2 leads assigned. 1 could not be (no longer yours to assign, or the user was refused)."
    assert error is None
    assert rules.bulk_notice({"bulk_assigned": "1", "bulk_skipped": "0"}) == ("1 lead assigned.", None)
    assert rules.bulk_notice(rules.BulkOutcome(problem="choose").params()) == (None, "Tick the leads to assign first.")
    assert rules.bulk_notice({"bulk_assigned": "lots"}) == (None, None)
    assert rules.bulk_notice({}) == (None, None)

"""The portal's return rules, table-tested: the form check, returnable until, whether a lead may be
asked for again, the answer sentences, the Returns screen's filter, and F1's "returns allowed"."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import yaml

from services.portal import rules
from shared.catalog.loader import parse_catalog


@pytest.mark.parametrize(
    ("reason", "comment", "reasons", "error"),
    [
        ("wrong_number", "", ["wrong_number", "out_of_area"], None),
        ("", "", ["wrong_number"], ("reason", "Choose a reason.")),
        ("", "", [], ("reason", "Give a reason.")),
        ("changed my mind", "", ["wrong_number"], ("reason", "Choose one of the listed reasons.")),
        ("anything at all", "", [], None),
        ("x" * 201, "", [], ("reason", "Keep the reason under 200 characters.")),
        ("bad\x00", "", [], ("reason", "The reason holds a character that cannot be stored.")),
        ("ok", "c" * 2001, [], ("comment", "Keep the comment under 2000 characters.")),
        ("ok", "nul\x00", [], ("comment", "The comment holds a character that cannot be stored.")),
    ],
)
def test_check_return_form(reason, comment, reasons, error):
    form, errors = rules.check_return_form(reason, comment, reasons)
    if error is None:
        assert errors == {} and form is not None and form.reason == reason.strip()
        assert form.comment is None
    else:
        assert form is None and errors[error[0]] == error[1]


def test_returnable_until_is_delivery_plus_the_window():
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert rules.returnable_until(at, 30) == datetime(2026, 3, 31, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("latest", "may"),
    [
        (None, True),
        ({"status": "pending", "decision_reason": None}, False),
        ({"status": "approved", "decision_reason": "auto_approved"}, False),
        ({"status": "denied", "decision_reason": "admin"}, False),
        ({"status": "denied", "decision_reason": "cap_exceeded"}, True),
        ({"status": "denied", "decision_reason": "window_expired"}, True),
    ],
)
def test_may_request_return(latest, may):
    assert rules.may_request_return(latest) is may


@pytest.mark.parametrize(
    ("status", "reason", "credit", "kind", "sentence"),
    [
        ("pending", None, None, "accepted", "Return accepted: it is pending review by your lead provider."),
        ("approved", "auto_approved", Decimal("25"), "accepted", "Return accepted and approved. $25.00 credited."),
        ("denied", "cap_exceeded", None, "refused", "Return refused: this month's return allowance is used up."),
        ("denied", "window_expired", None, "refused", "Return refused: the return window for this lead has closed."),
        ("denied", "already_returned", None, "refused", "Return refused: this lead was already returned."),
        ("denied", "admin", None, "refused", "Return denied by your lead provider."),
    ],
)
def test_return_answer(status, reason, credit, kind, sentence):
    assert rules.return_answer(status, reason, credit) == (kind, sentence)


def test_allowance_words_and_floor():
    cap = rules.allowance("delivery_account", "Solar", Decimal("10"), 19, 1, date(2026, 3, 1))
    assert (cap.allowed, cap.words(), cap.full) == (1, "1 of 1 used", True)


def test_returns_filter_parses_and_refuses():
    f, errors = rules.parse_returns_filter({"status": "approved", "from": "2026-03-01", "to": "2026-03-31"})
    assert errors == {} and f is not None
    assert f.params() == {"status": "approved", "from": "2026-03-01", "to": "2026-03-31"}
    start, end = f.bounds("America/Los_Angeles")
    assert start == datetime(2026, 3, 1, 8, tzinfo=UTC) and end == datetime(2026, 4, 1, 7, tzinfo=UTC)
    at, ident = datetime(2026, 3, 2, tzinfo=UTC), uuid.uuid4()
    f, _ = rules.parse_returns_filter({"after": rules.encode_returns_cursor(at, ident)})
    assert f is not None and f.after == (at, ident)
    _, errors = rules.parse_returns_filter({"status": "lost", "from": "yesterday", "after": "nope"})
    assert set(errors) == {"status", "from", "after"}
    _, errors = rules.parse_returns_filter({"from": "2026-03-02", "to": "2026-03-01"})
    assert errors == {"to": "The end date is before the start date."}
    assert rules.parse_returns_filter({})[0] == rules.ReturnsFilter(None, None, None, None)


def _catalog(client_options: dict, account_pct: str | None = None):
    account = {
        "id": "a1",
        "client": "acme",
        "lead_type": "solar",
        "price": "10",
        "delivery": {"method": "email", "to": ["x@acme.example"]},
    }
    if account_pct is not None:
        account["max_return_pct"] = account_pct
    doc = {
        "lead_types": [{"id": "solar", "name": "Solar", "fields": [{"name": "phone", "type": "phone"}]}],
        "sources": [{"id": "web", "name": "Web"}],
        "clients": [{"id": "acme", "name": "Acme", "options": client_options}, {"id": "bolt", "name": "Bolt"}],
        "delivery_accounts": [account],
    }
    return parse_catalog(yaml.safe_dump(doc))


@pytest.mark.parametrize(
    ("options", "account_pct", "offered"),
    [
        ({}, None, True),  # the global default, 10 %
        ({"return_pct_delivery_accounts": "0"}, None, False),
        ({"return_pct_delivery_accounts": "0"}, "5", True),  # the account's own % wins
        ({}, "0", False),
    ],
)
def test_returns_offered_follows_the_effective_account_percent(options, account_pct, offered):
    catalog = _catalog(options, account_pct)
    assert rules.returns_offered(catalog, "acme") is offered
    assert rules.returns_offered(catalog, "bolt") is False  # no delivery account: nothing to return


@pytest.mark.parametrize(
    ("order_type", "value", "text"),
    [
        ("lead_quantity", Decimal("100"), "100 leads"),
        ("lead_quantity", Decimal("1"), "1 lead"),
        ("lead_quantity", Decimal("1500.00"), "1,500 leads"),
        ("dollar_amount", Decimal("1234.5"), "$1,234.50"),
        ("dollar_amount", Decimal("0"), "$0.00"),
    ],
)
def test_order_amount_in_its_units(order_type, value, text):
    assert rules.order_amount(order_type, value) == text


@pytest.mark.parametrize(
    ("status", "is_admin", "actions"),
    [("open", True, ["pause"]), ("paused", True, ["resume"]), ("closed", True, []), ("open", False, [])],
)
def test_order_actions_are_for_admins(status, is_admin, actions):
    assert rules.order_actions(status, is_admin) == actions


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        ("cannot resume an order that is closed", "This order is closed, so it cannot be resumed."),
        ("cannot pause an order that is closed", "This order is closed, so it cannot be paused."),
        ("something else", "The order could not be changed."),
        (None, "The order could not be changed."),
    ],
)
def test_order_refusal(error, sentence):
    assert rules.order_refusal(error) == sentence


@pytest.mark.parametrize(
    ("text", "ok"), [("acme-q1", True), ("a.b:c_d", True), ("../x", False), ("", False), ("x" * 65, False)]
)
def test_valid_order_id(text, ok):
    assert rules.valid_order_id(text) is ok

"""The return rules as plain tables: cap arithmetic, percentages at every level, the month, and
the request checks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from services.returns import rules
from shared.catalog.model import Catalog

D = Decimal


@pytest.mark.parametrize(
    ("delivered", "pct", "allowed"),
    [
        (0, D("10"), 0),  # zero deliveries: nothing may be returned
        (1, D("10"), 0),
        (9, D("10"), 0),
        (10, D("10"), 1),  # exact boundary
        (19, D("10"), 1),  # rounds down, never up
        (20, D("10"), 2),
        (100, D("10"), 10),
        (100, D("0"), 0),
        (100, D("100"), 100),
        (3, D("33.33"), 0),  # 0.9999 rounds down
        (3, D("33.34"), 1),  # 1.0002
        (7, D("14.29"), 1),
        (1000, D("2.5"), 25),
    ],
)
def test_allowed_returns_is_floor_of_pct_of_delivered(delivered, pct, allowed):
    assert rules.allowed_returns(delivered, pct) == allowed


@pytest.mark.parametrize(
    ("delivered", "counted", "pct", "admits"),
    [
        (100, 9, D("10"), True),  # the 10th return fits
        (100, 10, D("10"), False),  # an 11th does not
        (0, 0, D("10"), False),
        (10, 0, D("10"), True),
        (9, 0, D("10"), False),
        (100, 0, D("0"), False),
    ],
)
def test_cap_admits_one_more_while_counted_plus_one_fits(delivered, counted, pct, admits):
    assert rules.Cap("delivery_account", pct, delivered, counted).admits_one_more() is admits


def _catalog(*, global_pct=None, client_pct=None, account_pct=None, order_global=None, order_client=None) -> Catalog:
    options = {}
    if global_pct is not None:
        options["default_return_pct_delivery_accounts"] = global_pct
    if order_global is not None:
        options["default_return_pct_orders"] = order_global
    client_opts = {}
    if client_pct is not None:
        client_opts["return_pct_delivery_accounts"] = client_pct
    if order_client is not None:
        client_opts["return_pct_orders"] = order_client
    account = {
        "id": "acct",
        "client": "acme",
        "lead_type": "solar",
        "price": "10",
        "delivery": {"method": "email", "to": ["a@example.com"]},
    }
    if account_pct is not None:
        account["max_return_pct"] = account_pct
    return Catalog.model_validate(
        {
            "options": options,
            "lead_types": [{"id": "solar", "name": "Solar", "fields": [{"name": "phone"}]}],
            "clients": [{"id": "acme", "name": "Acme", "options": client_opts}, {"id": "bolt", "name": "Bolt"}],
            "delivery_accounts": [account],
        }
    )


@pytest.mark.parametrize(
    ("levels", "client", "account", "expected"),
    [
        ({}, "acme", "acct", D("10")),  # built-in default
        ({"global_pct": "15"}, "acme", "acct", D("15")),  # global option
        ({"global_pct": "15", "client_pct": "20"}, "acme", "acct", D("20")),  # client override wins
        ({"global_pct": "15", "client_pct": "20", "account_pct": "5"}, "acme", "acct", D("5")),  # account wins
        ({"global_pct": "15", "client_pct": "0"}, "acme", "acct", D("0")),  # 0 is an override, not unset
        ({"global_pct": "15", "client_pct": "20"}, "bolt", None, D("15")),  # other client: global
        ({"account_pct": "5"}, "acme", "gone", D("10")),  # account no longer in catalog
    ],
)
def test_delivery_account_pct_at_every_level(levels, client, account, expected):
    assert rules.account_pct(_catalog(**levels), client, account) == expected


@pytest.mark.parametrize(
    ("levels", "order_pct", "expected"),
    [
        ({}, None, D("10")),
        ({"order_global": "12"}, None, D("12")),
        ({"order_global": "12", "order_client": "7"}, None, D("7")),
        ({"order_global": "12", "order_client": "7"}, "3.5", D("3.5")),  # the order's own wins
        ({"order_global": "12"}, "0", D("0")),
    ],
)
def test_order_pct_at_every_level(levels, order_pct, expected):
    assert rules.order_pct(_catalog(**levels), "acme", order_pct) == expected


@pytest.mark.parametrize(
    ("at", "zone", "start", "end"),
    [
        ("2026-03-15T12:00:00+00:00", "UTC", "2026-03-01T00:00:00+00:00", "2026-04-01T00:00:00+00:00"),
        # 03:00 UTC on April 1st is still March 31st in Los Angeles (PDT, UTC-7).
        ("2026-04-01T03:00:00+00:00", "America/Los_Angeles", "2026-03-01T08:00:00+00:00", "2026-04-01T07:00:00+00:00"),
        ("2026-12-31T23:30:00+00:00", "Asia/Tokyo", "2027-01-01T00:00:00+09:00", "2027-02-01T00:00:00+09:00"),
        ("2026-12-10T00:00:00+00:00", "UTC", "2026-12-01T00:00:00+00:00", "2027-01-01T00:00:00+00:00"),
    ],
)
def test_month_bounds_in_the_clients_zone(at, zone, start, end):
    got = rules.month_bounds(datetime.fromisoformat(at), zone)
    assert got == (datetime.fromisoformat(start), datetime.fromisoformat(end))


NOW = datetime(2026, 5, 20, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("delivered_days_ago", "held", "reasons", "window", "reason", "expected"),
    [
        (None, False, ("bad phone",), 30, "bad phone", "not_delivered"),
        (1, True, ("bad phone",), 30, "bad phone", "already_returned"),
        (1, False, ("bad phone", "out of area"), 30, "moved", "invalid_reason"),
        (1, False, (), 30, "anything at all", None),  # no list: any reason
        (30, False, ("bad phone",), 30, "bad phone", None),  # exactly at the window
        (30.001, False, ("bad phone",), 30, "bad phone", "window_expired"),
        (0, False, ("bad phone",), 0, "bad phone", None),
        (1, False, ("bad phone",), 0, "bad phone", "window_expired"),
    ],
)
def test_request_checks(delivered_days_ago, held, reasons, window, reason, expected):
    from shared.catalog.model import LeadType

    lead_type = LeadType(
        id="solar", name="Solar", fields=[{"name": "phone"}], return_reasons=reasons, return_window_days=window
    )
    delivered_at = None if delivered_days_ago is None else NOW - timedelta(days=delivered_days_ago)
    decision = rules.check_request(
        delivered_at=delivered_at, already_returned=held, lead_type=lead_type, reason=reason, now=NOW
    )
    assert (decision.reason if decision else None) == expected
    if decision:
        assert decision.status == "denied" and not decision.holds_lead


@pytest.mark.parametrize(
    ("caps", "auto", "status", "reason"),
    [
        ([(100, 9), (50, 4)], False, "pending", None),
        ([(100, 9), (50, 4)], True, "approved", "auto_approved"),
        ([(100, 10), (50, 0)], True, "denied", "cap_exceeded"),  # the account cap is full
        ([(100, 0), (50, 5)], False, "denied", "cap_exceeded"),  # the order cap is full
        ([(100, 0)], False, "pending", None),  # no order
        ([(0, 0)], True, "denied", "cap_exceeded"),
    ],
)
def test_decide(caps, auto, status, reason):
    scopes: tuple[rules.Scope, ...] = ("delivery_account", "order")
    decision = rules.decide([rules.Cap(scopes[i], D("10"), d, c) for i, (d, c) in enumerate(caps)], auto_approve=auto)
    assert (decision.status, decision.reason) == (status, reason)
    assert decision.holds_lead is (status != "denied")

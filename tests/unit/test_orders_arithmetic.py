"""Order arithmetic as plain tables: what a sale takes, what a confirmed sale charges, when an
order is filled, what follows a fill, and status transitions."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

import pytest

from shared import orders

D = Decimal


@pytest.mark.parametrize(
    ("kind", "total", "received", "reserved", "price", "taken"),
    [
        ("lead_quantity", D("10"), D("0"), D("0"), D("25"), D("1")),
        ("lead_quantity", D("10"), D("9"), D("0"), D("25"), D("1")),
        ("lead_quantity", D("10"), D("9"), D("1"), D("25"), None),  # last lead in flight
        ("lead_quantity", D("10"), D("10"), D("0"), D("25"), None),
        ("lead_quantity", D("10.5"), D("10"), D("0"), D("25"), None),  # half a lead is no room
        ("lead_quantity", D("5"), D("8"), D("0"), D("25"), None),  # total lowered under sales
        ("dollar_amount", D("100"), D("0"), D("0"), D("25"), D("25")),
        ("dollar_amount", D("100"), D("50"), D("25"), D("25"), D("25")),  # exactly fills
        ("dollar_amount", D("100"), D("80"), D("0"), D("25"), D("20")),  # takes what is left
        ("dollar_amount", D("100"), D("100"), D("0"), D("25"), None),
        ("dollar_amount", D("100"), D("75"), D("25"), D("1"), None),
        ("dollar_amount", D("100"), D("0"), D("0"), D("0"), D("0")),  # a free lead takes nothing
    ],
)
def test_take_for_sale(kind, total, received, reserved, price, taken):
    assert orders.take_for_sale(kind, total, received, reserved, price) == taken


@pytest.mark.parametrize(
    ("kind", "total", "received", "reserved", "taken", "final", "charged"),
    [
        ("lead_quantity", D("10"), D("3"), D("1"), D("1"), D("25"), D("1")),
        ("lead_quantity", D("10"), D("3"), D("1"), D("1"), D("99"), D("1")),  # price does not matter
        ("lead_quantity", D("2"), D("3"), D("1"), D("1"), D("25"), D("0")),  # total lowered: overage
        ("dollar_amount", D("100"), D("0"), D("25"), D("25"), D("25"), D("25")),
        ("dollar_amount", D("100"), D("0"), D("25"), D("25"), D("30"), D("30")),  # confirmed higher, room left
        ("dollar_amount", D("100"), D("0"), D("25"), D("25"), D("20"), D("20")),  # confirmed lower
        ("dollar_amount", D("100"), D("50"), D("50"), D("25"), D("40"), D("25")),  # others hold the rest
        ("dollar_amount", D("100"), D("70"), D("30"), D("30"), D("45"), D("30")),  # capped at the total
        ("dollar_amount", D("100"), D("80"), D("20"), D("20"), D("25"), D("20")),
    ],
)
def test_charge_on_success_never_passes_the_total(kind, total, received, reserved, taken, final, charged):
    got = orders.charge_on_success(kind, total, received, reserved, taken, final)
    assert got == charged
    assert received + got <= max(total, received)


@pytest.mark.parametrize(
    ("kind", "total", "received", "filled"),
    [
        ("lead_quantity", D("10"), D("9"), False),
        ("lead_quantity", D("10"), D("10"), True),
        ("lead_quantity", D("10.5"), D("10"), True),
        ("dollar_amount", D("100"), D("99.99"), False),
        ("dollar_amount", D("100"), D("100"), True),
        ("dollar_amount", D("0"), D("0"), True),
    ],
)
def test_is_filled(kind, total, received, filled):
    assert orders.is_filled(kind, total, received) is filled


@pytest.mark.parametrize(
    ("renewal", "step"),
    [
        ("on_fill", "renew"),
        ("close_at_end", "stay_open"),
        ("none", "close"),
    ],
)
def test_after_fill(renewal, step):
    assert orders.after_fill(renewal) == step


@pytest.mark.parametrize(
    ("today", "start", "end", "new"),
    [
        (date(2026, 3, 10), date(2026, 3, 1), date(2026, 3, 31), (date(2026, 3, 10), date(2026, 4, 9))),
        (date(2026, 3, 10), date(2026, 1, 1), None, (date(2026, 3, 10), None)),
        (date(2026, 3, 1), date(2026, 3, 1), date(2026, 3, 1), (date(2026, 3, 1), date(2026, 3, 1))),
    ],
)
def test_renewed_period_keeps_the_length(today, start, end, new):
    assert orders.renewed_period(today, start, end) == new


@pytest.mark.parametrize(
    ("action", "current", "target"),
    [
        ("pause", "open", "paused"),
        ("pause", "paused", "paused"),
        ("pause", "closed", None),
        ("resume", "paused", "open"),
        ("resume", "open", "open"),
        ("resume", "closed", None),
        ("close", "open", "closed"),
        ("close", "paused", "closed"),
        ("close", "closed", "closed"),
    ],
)
def test_transition(action, current, target):
    assert orders.transition(action, current) == target

"""The return rules, without I/O: who may return what, and the cap arithmetic.

The cap period is the calendar month, in the client's time zone, in which the returned lead was
delivered. For one delivery account (and, when an order paid for the lead, for that order):

    allowed  = floor(delivered × pct / 100)
    a request is within the cap when  counted + 1 <= allowed

where `delivered` is the leads delivered (succeeded) in that month to the account (or charged to
the order), and `counted` is the pending and approved returns of leads delivered in that month
(admin-denied and rule-denied returns do not count).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_FLOOR, Decimal
from typing import Any, Literal
from zoneinfo import ZoneInfo

from shared.catalog.model import Catalog, LeadType

DEFAULT_WINDOW_DAYS: int = LeadType.model_fields["return_window_days"].default


Scope = Literal["delivery_account", "order"]


@dataclass(frozen=True)
class Cap:
    scope: Scope
    pct: Decimal
    delivered: int
    counted: int

    @property
    def allowed(self) -> int:
        return allowed_returns(self.delivered, self.pct)

    def admits_one_more(self) -> bool:
        return self.counted + 1 <= self.allowed

    def describe(self) -> str:
        return (
            f"{self.scope} cap {self.pct}%: {self.counted} returned of {self.delivered} delivered this month,"
            f" {self.allowed} allowed"
        )


@dataclass(frozen=True)
class Decision:
    status: Literal["pending", "approved", "denied"]
    reason: str | None  # a DecisionReason, None while pending
    detail: str | None = None

    @property
    def holds_lead(self) -> bool:
        return self.status != "denied"


def allowed_returns(delivered: int, pct: Decimal) -> int:
    """floor(delivered × pct / 100), exact in decimal (10% of 19 is 1, never 2)."""
    if delivered <= 0 or pct <= 0:
        return 0
    return int((Decimal(delivered) * Decimal(pct) / Decimal(100)).to_integral_value(rounding=ROUND_FLOOR))


def account_pct(catalog: Catalog, client_id: str, account_id: str | None) -> Decimal:
    """The delivery account's Max Return %, else the client's override, else the global default."""
    account = catalog.accounts_by_id.get(account_id) if account_id else None
    if account is not None and account.max_return_pct is not None:
        return Decimal(account.max_return_pct)
    return catalog.client_options(client_id).return_pct_delivery_accounts


def order_pct(catalog: Catalog, client_id: str, order_max_return_pct: Any) -> Decimal:
    """The order's Max Return %, else the client's override, else the global default."""
    if order_max_return_pct is not None:
        return Decimal(str(order_max_return_pct))
    return catalog.client_options(client_id).return_pct_orders


def month_bounds(at: datetime, time_zone: str) -> tuple[datetime, datetime]:
    """[first instant, first instant of the next month) of the calendar month containing `at`,
    in `time_zone`."""
    zone = ZoneInfo(time_zone)
    local = at.astimezone(zone)
    year, month = local.year, local.month
    next_year, next_month = (year + 1, 1) if month == 12 else (year, month + 1)
    # Built from the wall clock, so each bound carries its own UTC offset across a DST change.
    return datetime(year, month, 1, tzinfo=zone), datetime(next_year, next_month, 1, tzinfo=zone)


def check_request(
    *, delivered_at: datetime | None, already_returned: bool, lead_type: LeadType | None, reason: str, now: datetime
) -> Decision | None:
    """A denial for a request no cap needs to look at, or None when the request is admissible.
    A lead type without return reasons accepts any reason."""
    if delivered_at is None:
        return Decision("denied", "not_delivered", "this lead was not delivered to this client")
    if already_returned:
        return Decision("denied", "already_returned", "a return of this lead already exists")
    reasons = lead_type.return_reasons if lead_type is not None else ()
    if reasons and reason not in reasons:
        return Decision("denied", "invalid_reason", f"reason must be one of: {', '.join(reasons)}")
    window = lead_type.return_window_days if lead_type is not None else DEFAULT_WINDOW_DAYS
    if now - delivered_at > timedelta(days=window):
        return Decision(
            "denied", "window_expired", f"delivered {delivered_at.isoformat()}, return window is {window} days"
        )
    return None


def decide(caps: list[Cap], *, auto_approve: bool) -> Decision:
    """Denied when any cap is full; otherwise approved at once for a trusted client, else pending."""
    for cap in caps:
        if not cap.admits_one_more():
            return Decision("denied", "cap_exceeded", cap.describe())
    if auto_approve:
        return Decision("approved", "auto_approved")
    return Decision("pending", None)

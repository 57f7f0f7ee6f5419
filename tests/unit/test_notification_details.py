"""Notifications carry facts, notifier writes the words: the typed details of each kind, and the
alerts' sentences composed in notifier's templates (they used to be written by delivery and by
shared/orders.py). Plus the delivery formats' exhaustive dispatch."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from pydantic import ValidationError

from services.delivery import posting
from services.notifier import templates
from shared.contracts import NotificationRequested
from shared.contracts.notifier import AccountPausedData, NewLeadData, OrderFilledData


def notification(kind: str, data: object, **kw: object) -> NotificationRequested:
    return NotificationRequested.model_validate(
        {"notification_id": uuid.uuid4(), "kind": kind, "to": [], "client_id": "acme", "data": data, **kw}
    )


def test_each_kind_reads_its_details_typed_and_keeps_what_its_model_does_not_name():
    n = notification("new_lead", {"user_name": "Bea", "expires_in_days": "7", "campaign": "spring"})
    details = n.details(NewLeadData)
    assert (details.user_name, details.expires_in_days) == ("Bea", 7)
    assert n.model_dump(mode="json")["data"] == {"user_name": "Bea", "expires_in_days": 7, "campaign": "spring"}


def test_a_named_detail_of_the_wrong_type_is_refused():
    with pytest.raises(ValidationError, match="expires_in_days"):
        notification("lead_delivery", {"expires_in_days": "soon"})


@pytest.mark.parametrize(
    ("renewed", "status", "outcome"),
    [
        (True, "open", "It renews now for a new period."),
        (False, "open", "It stays open until its end date."),
        (False, "closed", "It is now closed."),
    ],
)
def test_the_order_filled_email_says_what_filled_and_what_happens_next(renewed, status, outcome):
    data = OrderFilledData(
        order_id="o-1",
        client_id="acme",
        order_type="lead_quantity",
        total=Decimal("100.00"),
        received=Decimal("100.00"),
        cost=Decimal("2500.00"),
        renewed=renewed,
        status=status,
    )
    rendered = templates.render(notification("order_filled", data))
    assert rendered.subject == "Order o-1 filled"
    assert f"Order o-1 of client acme received 100.00 of 100.00 leads (cost 2500.00). {outcome}" in rendered.text


def test_the_account_paused_email_says_how_to_resume():
    data = AccountPausedData(
        delivery_account_id="acme-post", consecutive_failures=2, last_error="buyer answered HTTP 503"
    )
    rendered = templates.render(notification("account_paused", data))
    assert rendered.subject == "Delivery account acme-post paused"
    assert (
        "Leadwire paused delivery account acme-post (client acme) after 2 consecutive failed attempts;"
        " last: buyer answered HTTP 503. Resume it with: leadwire delivery resume acme-post"
    ) in rendered.text


def test_a_sender_that_writes_its_own_message_keeps_it():
    rendered = templates.render(notification("account_paused", {"delivery_account_id": "x"}, message="custom words"))
    assert "custom words" in rendered.text and "Resume it with" not in rendered.text


def test_a_delivery_format_cannot_fall_through_to_another():
    """Every format has its own case (mypy's assert_never checks the match is exhaustive); an
    unknown one fails loudly instead of being sent as XML."""
    with pytest.raises(AssertionError):
        posting.content_type("csv")  # type: ignore[arg-type]

"""A return the seller decides is emailed to the client: the returns service and notifier on the
real broker and database, sending to the real SMTP sink (harness/smtp.py)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import pytest_asyncio

from services.notifier.main import build as build_notifier
from services.returns import usecases as returns
from services.returns.main import build as build_returns
from shared import db
from shared.contracts import ReturnDecide, ReturnRequest
from shared.process import Standalone
from tests.notifier_support import SmtpSink, add_portal_user, free_port, publish_event, with_smtp
from tests.returns_support import catalog_of, returns_catalog, sell
from tests.support import EventTap, apply_yaml, wait_for

pytestmark = pytest.mark.integration

EVIL_NOTE = '<script>alert("x")</script> phone was valid, we called it'


@pytest.fixture
def smtp():
    sink = SmtpSink(free_port())
    sink.start()
    yield sink
    sink.stop()


@pytest.fixture
def nsettings(settings, smtp):
    return with_smtp(settings, smtp.port, portal_base_url="https://portal.example.com/portal")


@pytest_asyncio.fixture
async def pool(settings):
    p = await db.create_pool(settings.database_url, min_size=1, max_size=4)
    yield p
    await p.close()


async def _users(conn) -> dict[str, uuid.UUID]:
    return {
        "admin": await add_portal_user(conn, "acme", "ann@acme.example.com", name="Ann", is_admin=True),
        "requester": await add_portal_user(conn, "acme", "Sam@Acme.example.com", name="Sam"),
        "colleague": await add_portal_user(conn, "acme", "cal@acme.example.com", name="Cal"),
        "disabled": await add_portal_user(conn, "acme", "old@acme.example.com", is_admin=True, enabled=False),
        "other": await add_portal_user(conn, "bolt", "bo@bolt.example.com", name="Bo", is_admin=True),
    }


async def _request(settings, pool, conn, **client) -> ReturnRequest:
    # One lead sold, one returned: within the allowance only if the allowance is the whole month.
    options = {"default_return_pct_delivery_accounts": "100"}
    await apply_yaml(settings.database_url, returns_catalog(options=options, client=client or None))
    [(lead_id, _)] = await sell(conn, at=datetime.now(UTC) - timedelta(hours=1))
    request = ReturnRequest(
        return_id=uuid.uuid4(),
        client_id="acme",
        lead_id=lead_id,
        reason="bad phone",
        requested_by="sam@acme.example.com",  # the portal records the user's email
    )
    await returns.request_return(returns.Deps(Standalone(pool, await catalog_of(conn))), request)
    return request


async def test_a_denied_return_emails_the_clients_admins_and_the_requester_once(nsettings, smtp, conn, pool):
    users = await _users(conn)
    request = await _request(nsettings, pool, conn)
    assert await conn.fetchval("SELECT status FROM returns WHERE id = $1", request.return_id) == "pending"
    decide = ReturnDecide(
        return_id=request.return_id, decision="deny", note=EVIL_NOTE, decided_by="staff@seller.example.com"
    ).model_dump(mode="json")

    async with (
        build_returns(nsettings).running(),
        build_notifier(nsettings).running(),
        EventTap(nsettings, "return.decided") as decided,
        EventTap(nsettings, "notify.return_decided") as requests,
    ):
        await publish_event(nsettings, "return.decide", decide)
        await wait_for(lambda: len(smtp.received) >= 2)
        # The decided event again, redelivered with its message id, and once more as a fresh copy.
        await wait_for(lambda: decided.messages)
        [event] = decided.bodies("return.decided")
        message_id = decided.messages[0][2].message_id
        await publish_event(nsettings, "return.decided", event, message_id=message_id)
        fresh = await publish_event(nsettings, "return.decided", event)
        # The fresh copy passes the inbox and queues the same two requests again (same ids):
        # the send records stop them.
        await wait_for(lambda: len(requests.messages) == 4)
        inbox = "SELECT count(*) FROM inbox WHERE consumer = 'notifier.return-decided' AND message_id = ANY($1)"
        assert await conn.fetchval(inbox, [message_id, fresh]) == 2
        assert len({b["notification_id"] for b in requests.bodies()}) == 2
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
        await asyncio.sleep(0.5)  # give a wrongly queued second email time to arrive

    assert sorted(r for m in smtp.received for r in m.rcpt_tos) == ["Sam@Acme.example.com", "ann@acme.example.com"]
    assert {m.kind for m in smtp.received} == {"return_decided"}
    assert await conn.fetchval("SELECT count(*) FROM notification_sends WHERE kind = 'return_decided'") == 2
    for email in smtp.received:
        text = email.text()
        assert email.subject == "Return denied: Ada"
        assert f"Ada ({request.lead_id})" in text
        assert "Decision:" in text and "Denied" in text
        assert EVIL_NOTE in text and "bad phone" in text
        assert "See your returns in the portal: https://portal.example.com/portal/returns" in text
        assert "<script>" not in email.html()
        assert "Credit" not in text
    by_rcpt = {m.rcpt_tos[0]: m for m in smtp.received}
    assert by_rcpt["ann@acme.example.com"].text().startswith("Hello Ann,")
    assert by_rcpt["Sam@Acme.example.com"].text().startswith("Hello Sam,")
    assert users["other"]  # Bo (bolt), Cal (not admin, not the requester), the disabled admin: nothing


async def test_an_approved_return_says_the_credit(nsettings, smtp, conn, pool):
    await _users(conn)
    request = await _request(nsettings, pool, conn)
    decide = ReturnDecide(return_id=request.return_id, decision="approve", note="Refunded").model_dump(mode="json")
    async with build_returns(nsettings).running(), build_notifier(nsettings).running():
        await publish_event(nsettings, "return.decide", decide)
        await wait_for(lambda: len(smtp.received) >= 2)
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
    for email in smtp.received:
        assert email.subject == "Return approved: Ada"
        assert "Refunded" in email.text() and "25.00 was credited to your balance." in email.text()


async def test_a_return_approved_within_the_allowance_is_not_emailed(nsettings, smtp, conn, pool):
    await _users(conn)
    async with build_notifier(nsettings).running(), EventTap(nsettings, "return.decided") as decided:
        # Decided by the rules at request time; notifier's outbox relay publishes the event.
        request = await _request(nsettings, pool, conn, auto_approve_returns=True)
        await wait_for(lambda: decided.messages)
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
        await asyncio.sleep(0.5)
    assert decided.bodies("return.decided")[0]["decision_reason"] == "auto_approved"
    assert await conn.fetchval("SELECT status FROM returns WHERE id = $1", request.return_id) == "approved"
    assert smtp.received == []

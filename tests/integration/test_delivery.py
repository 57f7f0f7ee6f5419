"""Delivery on the real broker and database, posting to real HTTP buyers the tests start."""

from __future__ import annotations

import asyncio
import functools
import signal
import subprocess
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from harness.processes import Processes, output, service_env
from services.delivery import store as delivery_store
from services.delivery.main import build as build_delivery
from services.router.main import build as build_router
from shared.contracts import ConfirmPrice
from shared.outbox import event
from shared.portal_links import read_link_token
from shared.service import Runtime
from tests.delivery_support import IdempotentBuyer, account, catalog, seed_delivery
from tests.support import EventTap, apply_yaml, lead_body, new_key, publish_event, publish_raw, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]


async def deliveries(conn, *requests) -> list[tuple[str, Decimal]]:
    rows = [await conn.fetchrow("SELECT status, price FROM deliveries WHERE id = $1", r.delivery_id) for r in requests]
    return [(r["status"], r["price"]) for r in rows]


async def attempts(conn, request) -> list[dict]:
    rows = await conn.fetch(
        "SELECT attempt, outcome, status_code, request, response, error FROM delivery_attempts"
        " WHERE delivery_id = $1 ORDER BY id",
        request.delivery_id,
    )
    return [dict(r) for r in rows]


def finished_keys(tap: EventTap, request) -> list[str]:
    return [
        k
        for k, b, _ in tap.messages
        if k in ("delivery.succeeded", "delivery.failed") and b["delivery_id"] == str(request.delivery_id)
    ]


def finished(tap: EventTap, request) -> list[dict]:
    return [
        b
        for k, b, _ in tap.messages
        if k in ("delivery.succeeded", "delivery.failed") and b["delivery_id"] == str(request.delivery_id)
    ]


# --- posting and judging -------------------------------------------------------------------------


async def test_success_posts_with_auth_and_key_and_logs_the_attempt_masked(settings, buyer, conn):
    await apply_yaml(
        settings.database_url,
        catalog(
            account(
                "acme-post",
                "acme",
                buyer,
                http_method="PUT",
                format="form",
                headers={"X-Api-Key": "key-acme-777"},
                auth={"type": "bearer", "token": "tok-acme-999"},
                success={"regex": r'"status":\s*"accepted"'},
            )
        ),
    )
    buyer.on("/acme-post", body='{"status": "accepted", "echo": "tok-acme-999"}')
    async with build_delivery(settings).running(), EventTap(settings, "delivery.*") as tap:
        request = await seed_delivery(conn, "acme-post", "acme")
        await publish_event(settings, "delivery.requested", request)
        await wait_for(lambda: finished(tap, request))
    [event] = finished(tap, request)
    assert finished_keys(tap, request) == ["delivery.succeeded"]
    assert (event["price"], event["attempts"]) == ("25.00", 1)
    [post] = buyer.received
    assert post.method == "PUT" and post.headers["Authorization"] == "Bearer tok-acme-999"
    assert post.headers["Idempotency-Key"] == str(request.delivery_id)
    assert post.body.decode().startswith("first_name=Ada&phone=4155550100")
    [log] = await attempts(conn, request)
    assert (log["outcome"], log["status_code"]) == ("accepted", 200)
    assert "tok-acme-999" not in log["request"] + log["response"] and "key-acme-777" not in log["request"]
    assert "first_name=Ada" in log["request"] and str(request.delivery_id) in log["request"]
    assert await deliveries(conn, request) == [("succeeded", Decimal("25.00"))]


async def test_rejection_by_regex_and_by_json_path_is_reported_not_retried(settings, buyer, conn):
    await apply_yaml(
        settings.database_url,
        catalog(
            account(
                "by-regex",
                "acme",
                buyer,
                success={"regex": "^OK"},
                rejection_reason={"regex": r"reason=(\w+)"},
                retry={"count": 3, "delay_seconds": 1},
            ),
            account(
                "by-path",
                "bolt",
                buyer,
                success={"json_path": "result.accepted", "json_equals": True},
                rejection_reason={"json_path": "result.message"},
                retry={"count": 3, "delay_seconds": 1},
            ),
        ),
    )
    buyer.on("/by-regex", body="ERR reason=duplicate")
    buyer.on("/by-path", body='{"result": {"accepted": false, "message": "out of area"}}')
    async with build_delivery(settings).running(), EventTap(settings, "delivery.*") as tap:
        first = await seed_delivery(conn, "by-regex", "acme")
        second = await seed_delivery(conn, "by-path", "bolt")
        for request in (first, second):
            await publish_event(settings, "delivery.requested", request)
        await wait_for(lambda: finished(tap, first) and finished(tap, second))
    reasons = [(e["reason"], e["rejected_by_buyer"], e["attempts"]) for r in (first, second) for e in finished(tap, r)]
    assert reasons == [("buyer rejected: duplicate", True, 1), ("buyer rejected: out of area", True, 1)]
    assert sorted(buyer.paths()) == ["/by-path", "/by-regex"]
    assert [s for s, _ in await deliveries(conn, first, second)] == ["failed", "failed"]


async def test_price_in_the_response_counts_only_when_the_client_allows_it(settings, buyer, conn):
    price_rule = {"json_path": "bid.price"}
    await apply_yaml(
        settings.database_url,
        catalog(
            account("on-post", "acme", buyer, price=price_rule),
            account("off-post", "bolt", buyer, price=price_rule),
            account("bad-post", "cord", buyer, price=price_rule),
            clients=[
                {"id": "acme", "name": "Acme", "options": {"allow_confirm_price": True}},
                {"id": "bolt", "name": "Bolt"},
                {"id": "cord", "name": "Cord", "options": {"allow_confirm_price": True}},
            ],
        ),
    )
    buyer.on("/on-post", body='{"bid": {"price": "31.50"}}')
    buyer.on("/off-post", body='{"bid": {"price": "31.50"}}')
    buyer.on("/bad-post", body='{"bid": {"price": "-4"}}')
    async with build_delivery(settings).running(), EventTap(settings, "delivery.succeeded") as tap:
        on, off, bad = [
            await seed_delivery(conn, a, c)
            for a, c in (("on-post", "acme"), ("off-post", "bolt"), ("bad-post", "cord"))
        ]
        for request in (on, off, bad):
            await publish_event(settings, "delivery.requested", request)
        await wait_for(lambda: all(finished(tap, r) for r in (on, off, bad)))
    assert [finished(tap, r)[0]["price"] for r in (on, off, bad)] == ["31.50", "25.00", "25.00"]
    assert await deliveries(conn, on, off, bad) == [
        ("succeeded", Decimal("31.50")),
        ("succeeded", Decimal("25.00")),
        ("succeeded", Decimal("25.00")),
    ]
    assert await conn.fetchval("SELECT account_price FROM deliveries WHERE id = $1", on.delivery_id) == Decimal("25.00")
    notes = [(await attempts(conn, r))[0]["error"] for r in (on, off, bad)]
    assert "buyer confirmed price 31.50" in notes[0]
    assert "ignored: Allow Confirm Price is off (buyer said 31.50)" in notes[1]
    assert "refused: price '-4' is negative" in notes[2]


async def test_confirm_price_messages_apply_ignore_or_refuse_and_are_idempotent(settings, buyer, conn):
    await apply_yaml(
        settings.database_url,
        catalog(
            account("on-post", "acme", buyer),
            account("off-post", "bolt", buyer),
            clients=[
                {"id": "acme", "name": "Acme", "options": {"allow_confirm_price": True}},
                {"id": "bolt", "name": "Bolt"},
            ],
        ),
    )
    async with build_delivery(settings).running(), EventTap(settings, "delivery.*") as tap:
        on = await seed_delivery(conn, "on-post", "acme")
        off = await seed_delivery(conn, "off-post", "bolt")
        for request in (on, off):
            await publish_event(settings, "delivery.requested", request)
        await wait_for(lambda: finished(tap, on) and finished(tap, off))

        await publish_event(
            settings,
            "delivery.confirm-price",
            ConfirmPrice(delivery_id=on.delivery_id, price="40", confirmed_by="buyer-api"),
            message_id="confirm-1",
            copies=2,
        )
        await publish_event(settings, "delivery.confirm-price", ConfirmPrice(delivery_id=on.delivery_id, price="-1"))
        await publish_event(settings, "delivery.confirm-price", ConfirmPrice(delivery_id=on.delivery_id, price="lots"))
        await publish_event(settings, "delivery.confirm-price", ConfirmPrice(delivery_id=off.delivery_id, price=40))
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 4 FROM delivery_price_confirmations"))
        await wait_for(lambda: tap.bodies("delivery.price-confirmed"))
    log = await conn.fetch("SELECT delivery_id, outcome, reason FROM delivery_price_confirmations ORDER BY offered")
    by_outcome = sorted((r["delivery_id"] == on.delivery_id, r["outcome"]) for r in log)
    assert by_outcome == [(False, "ignored"), (True, "applied"), (True, "refused"), (True, "refused")]
    assert await deliveries(conn, on, off) == [("succeeded", Decimal("40.00")), ("succeeded", Decimal("25.00"))]
    [event] = tap.bodies("delivery.price-confirmed")
    assert (event["previous_price"], event["price"], event["confirmed_by"]) == ("25.00", "40.00", "buyer-api")


# --- retries -------------------------------------------------------------------------------------


async def test_5xx_then_success_is_retried_through_the_delay_queue(settings, buyer, conn):
    await apply_yaml(
        settings.database_url, catalog(account("acme-post", "acme", buyer, retry={"count": 2, "delay_seconds": 1}))
    )
    answers = iter([(502, "bad gateway", 0.0)])
    buyer.responses["/acme-post"] = lambda _r: next(answers, (200, '{"status": "accepted"}', 0.0))
    async with build_delivery(settings).running(), EventTap(settings, "delivery.*") as tap:
        request = await seed_delivery(conn, "acme-post", "acme")
        await publish_event(settings, "delivery.requested", request)
        await wait_for(lambda: finished(tap, request))
    assert [(e["attempts"]) for e in finished(tap, request)] == [2]
    assert [(a["outcome"], a["status_code"]) for a in await attempts(conn, request)] == [
        ("transient", 502),
        ("accepted", 200),
    ]
    assert {r.headers["Idempotency-Key"] for r in buyer.received} == {str(request.delivery_id)}


async def test_timeouts_are_retried_then_given_up_and_reported(settings, buyer, conn):
    await apply_yaml(
        settings.database_url,
        catalog(account("slow-post", "acme", buyer, timeout_seconds=0.3, retry={"count": 1, "delay_seconds": 1})),
    )
    buyer.on("/slow-post", delay=1.0)
    async with build_delivery(settings).running(), EventTap(settings, "delivery.*") as tap:
        request = await seed_delivery(conn, "slow-post", "acme")
        await publish_event(settings, "delivery.requested", request)
        await wait_for(lambda: finished(tap, request))
    [event] = finished(tap, request)
    assert finished_keys(tap, request) == ["delivery.failed"] and event["rejected_by_buyer"] is False
    assert event["attempts"] == 2 and "no answer within 0.3 s (gave up after 2 attempts)" in event["reason"]
    assert [a["outcome"] for a in await attempts(conn, request)] == ["transient", "transient"]
    assert buyer.paths() == ["/slow-post", "/slow-post"]


async def test_failed_buyer_falls_back_to_the_next_client_of_an_exclusive_group(settings, buyer, conn):
    await apply_yaml(
        settings.database_url,
        catalog(
            account("acme-post", "acme", buyer, priority=0, retry={"count": 1, "delay_seconds": 1}),
            account("bolt-post", "bolt", buyer, priority=1, amount="20.00"),
            groups=[
                {
                    "id": "solar-buyers",
                    "name": "Solar buyers",
                    "apply_groups_as_criteria": True,
                    "clients": ["acme", "bolt"],
                }
            ],
        ),
    )
    buyer.on("/acme-post", status=503, body="down")
    async with build_router(settings).running(), build_delivery(settings).running(), EventTap(settings) as tap:
        await publish_raw(settings, lead_body(), message_id=new_key())
        await wait_for(lambda: tap.bodies("lead.sold"))
    assert buyer.paths() == ["/acme-post", "/acme-post", "/bolt-post"]
    [sold] = tap.bodies("lead.sold")
    assert [(d["client_id"], d["price"]) for d in sold["deliveries"]] == [("bolt", "20.00")]
    rows = await conn.fetch("SELECT delivery_account_id, status FROM deliveries ORDER BY created_at")
    assert [(r["delivery_account_id"], r["status"]) for r in rows] == [
        ("acme-post", "failed"),
        ("bolt-post", "succeeded"),
    ]


# --- never post twice ----------------------------------------------------------------------------


async def test_same_delivery_message_delivered_twice_posts_once(settings, buyer, conn):
    await apply_yaml(settings.database_url, catalog(account("acme-post", "acme", buyer)))
    buyer.on("/acme-post", delay=0.3)  # both copies arrive while the first post is in flight
    async with build_delivery(settings).running(), EventTap(settings, "delivery.*") as tap:
        request = await seed_delivery(conn, "acme-post", "acme")
        await publish_event(settings, "delivery.requested", request, message_id="same", copies=2)
        await publish_event(settings, "delivery.requested", request)  # another copy, another id
        await wait_for(lambda: finished(tap, request))
        await publish_event(settings, "delivery.requested", request)  # and one after the success
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
        await asyncio.sleep(1.5)  # give a wrongly parked copy time to come back and post
    assert len(buyer.received) == 1
    assert len(finished(tap, request)) == 1
    assert await conn.fetchval("SELECT attempts FROM deliveries WHERE id = $1", request.delivery_id) == 1


async def test_retry_racing_a_late_success_reuses_the_idempotency_key(settings, buyer, conn):
    # The buyer takes the first post but answers after our timeout: we retry, and the buyer
    # recognises the repeat by its key. One sale, one success.
    late = IdempotentBuyer(first_delay=0.8)
    await apply_yaml(
        settings.database_url,
        catalog(account("acme-post", "acme", buyer, timeout_seconds=0.3, retry={"count": 2, "delay_seconds": 1})),
    )
    buyer.responses["/acme-post"] = late
    async with build_delivery(settings).running(), EventTap(settings, "delivery.*") as tap:
        request = await seed_delivery(conn, "acme-post", "acme")
        await publish_event(settings, "delivery.requested", request)
        await wait_for(lambda: finished(tap, request))
    assert late.sales == {str(request.delivery_id): 1} and late.repeats == 1
    assert [e["attempts"] for e in finished(tap, request)] == [2]
    assert [a["outcome"] for a in await attempts(conn, request)] == ["transient", "accepted"]


async def test_a_live_posters_delivery_is_not_taken_over_but_a_dead_ones_is(settings, buyer, conn):
    await apply_yaml(
        settings.database_url,
        catalog(account("acme-post", "acme", buyer, timeout_seconds=1, retry={"count": 1, "delay_seconds": 1})),
    )
    async with build_delivery(settings).running(), EventTap(settings, "delivery.*") as tap:
        # Another consumer claimed this one 0 s ago and holds a 3 s lease: it must be left alone
        # until the lease ends, then taken over.
        held = await seed_delivery(conn, "acme-post", "acme", status="posting", attempts=1, lease_seconds=3)
        # This one's consumer died long ago: its lease is over.
        stale = await seed_delivery(conn, "acme-post", "acme", status="posting", attempts=1, lease_seconds=-60)
        await publish_event(settings, "delivery.requested", held)
        await publish_event(settings, "delivery.requested", stale)
        await wait_for(lambda: finished(tap, stale))
        assert buyer.received[0].headers["Idempotency-Key"] == str(stale.delivery_id)
        assert await conn.fetchval("SELECT status FROM deliveries WHERE id = $1", held.delivery_id) == "posting"
        await wait_for(lambda: finished(tap, held))
    keys = [r.headers["Idempotency-Key"] for r in buyer.received]
    assert keys == [str(stale.delivery_id), str(held.delivery_id)]
    assert [e["attempts"] for r in (stale, held) for e in finished(tap, r)] == [2, 2]


async def test_an_answered_posts_one_statement_close_is_fenced_by_the_attempt(settings, buyer, conn):
    # A poster that stalled past its lease finishes after another consumer took the delivery over
    # (attempt 2): its answer is logged, but it neither closes the delivery nor writes an event.
    await apply_yaml(settings.database_url, catalog(account("acme-post", "acme", buyer)))
    request = await seed_delivery(conn, "acme-post", "acme", status="posting", attempts=2, lease_seconds=30)
    await conn.execute(
        "INSERT INTO delivery_account_state (delivery_account_id, consecutive_failures) VALUES ('acme-post', 3)"
    )

    def answered(attempt: int) -> delivery_store.AttemptLog:
        return delivery_store.AttemptLog(
            delivery_id=request.delivery_id,
            attempt=attempt,
            started_at=datetime.now(UTC),
            duration_ms=5,
            request="POST /",
            status_code=200,
            response="{}",
            outcome="accepted",
            error=None,
        )

    async def log_and_finish(attempt: int) -> bool:
        return await delivery_store.log_and_finish(
            conn,
            answered(attempt),
            reset_failures_of="acme-post",
            status="succeeded",
            price=Decimal("30.00"),
            reason=None,
            event=event("delivery.succeeded", {"delivery_id": str(request.delivery_id)}),
        )

    assert not await log_and_finish(attempt=1)
    row = await conn.fetchrow("SELECT status, price FROM deliveries WHERE id = $1", request.delivery_id)
    assert (row["status"], row["price"]) == ("posting", Decimal("25.00"))
    assert await conn.fetchval("SELECT count(*) FROM outbox") == 0
    assert [a["attempt"] for a in await attempts(conn, request)] == [1]

    assert await log_and_finish(attempt=2)
    row = await conn.fetchrow("SELECT status, price, account_price FROM deliveries WHERE id = $1", request.delivery_id)
    assert (row["status"], row["price"], row["account_price"]) == ("succeeded", Decimal("30.00"), Decimal("25.00"))
    assert await conn.fetchval("SELECT routing_key FROM outbox") == "delivery.succeeded"
    assert await conn.fetchval("SELECT consecutive_failures FROM delivery_account_state") == 0
    assert [a["attempt"] for a in await attempts(conn, request)] == [1, 2]


async def test_killed_after_the_buyer_answered_the_restarted_service_posts_again_with_the_same_key(
    settings, buyer, conn
):
    buyer_state = IdempotentBuyer()
    buyer.responses["/acme-post"] = buyer_state
    await apply_yaml(settings.database_url, catalog(account("acme-post", "acme", buyer, timeout_seconds=1)))
    async with Runtime("setup", settings).running():
        pass  # declare the topology so the request waits for the delivery process
    request = await seed_delivery(conn, "acme-post", "acme")
    crashing = Processes(
        service_env(settings, LEADWIRE_CRASH_POINT="delivery.after_post"), output=subprocess.PIPE
    ).service("delivery")
    try:
        await publish_event(settings, "delivery.requested", request)
        code = await asyncio.to_thread(crashing.wait, 60)
    finally:
        if crashing.poll() is None:
            crashing.send_signal(signal.SIGKILL)
    assert code == 86, output(crashing)
    assert await conn.fetchval("SELECT status FROM deliveries WHERE id = $1", request.delivery_id) == "posting"
    assert len(buyer.received) == 1
    async with build_delivery(settings).running(), EventTap(settings, "delivery.*") as tap:
        await wait_for(lambda: finished(tap, request), timeout=30)
    assert [e["attempts"] for e in finished(tap, request)] == [2]
    assert [r.headers["Idempotency-Key"] for r in buyer.received] == [str(request.delivery_id)] * 2
    assert buyer_state.sales == {str(request.delivery_id): 1} and buyer_state.repeats == 1


# --- a slow buyer does not slow the others -------------------------------------------------------


async def test_a_hanging_buyer_holds_only_its_own_slots(settings, buyer, conn):
    # More hanging leads than the process takes at once: without per-account limits they would
    # fill every consumer slot and the fast buyer would wait for the hanging one's timeouts.
    settings = settings.model_copy(update={"prefetch": 8})
    await apply_yaml(
        settings.database_url,
        catalog(
            account("hang-post", "acme", buyer, timeout_seconds=2, max_in_flight=1),
            account("fast-post", "bolt", buyer, max_in_flight=6),
        ),
    )
    buyer.on("/hang-post", delay=3.0)
    async with build_delivery(settings).running(), EventTap(settings, "delivery.*") as tap:
        slow = [await seed_delivery(conn, "hang-post", "acme") for _ in range(10)]
        fast = [await seed_delivery(conn, "fast-post", "bolt") for _ in range(6)]
        for request in slow + fast:
            await publish_event(settings, "delivery.requested", request)
        await wait_for(lambda: all(finished(tap, r) for r in fast))
        # Every fast delivery is done while the hanging buyer has not finished even one.
        assert not any(finished(tap, r) for r in slow)
        assert (
            await conn.fetchval(
                "SELECT count(*) FROM deliveries WHERE delivery_account_id = 'hang-post'"
                " AND status IN ('succeeded', 'failed')"
            )
            == 0
        )
    assert buyer.paths().count("/hang-post") <= 2  # one in flight at a time


# --- auto-pause ----------------------------------------------------------------------------------


async def test_account_pauses_after_consecutive_failures_alerts_and_resumes(settings, buyer, conn):
    await apply_yaml(settings.database_url, catalog(account("acme-post", "acme", buyer, pause_after_failures=2)))
    buyer.on("/acme-post", status=503, body="down")
    settings = settings.model_copy(update={"admin_email": "ops@leadwire.test"})
    async with build_delivery(settings).running(), EventTap(settings, "#") as tap:
        first, second = [await seed_delivery(conn, "acme-post", "acme") for _ in range(2)]
        await publish_event(settings, "delivery.requested", first)
        await wait_for(lambda: finished(tap, first))
        await publish_event(settings, "delivery.requested", second)
        await wait_for(lambda: finished(tap, second) and tap.bodies("notify.account_paused"))
        third = await seed_delivery(conn, "acme-post", "acme")
        await publish_event(settings, "delivery.requested", third)
        await wait_for(lambda: finished(tap, third))
    [alert] = tap.bodies("notify.account_paused")
    assert alert["kind"] == "account_paused" and alert["to"] == ["ops@leadwire.test"]
    assert alert["data"]["delivery_account_id"] == "acme-post" and alert["data"]["consecutive_failures"] == 2
    assert len(buyer.received) == 2  # the paused account gets no third post
    [third_event] = finished(tap, third)
    assert "paused" in third_event["reason"] and third_event["attempts"] == 0
    state = await conn.fetchrow("SELECT * FROM delivery_account_state WHERE delivery_account_id = 'acme-post'")
    assert state["paused"] and state["consecutive_failures"] == 2 and "HTTP 503" in state["paused_reason"]

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "shared.cli", "delivery", *args],
            cwd=ROOT,
            env=service_env(settings),
            capture_output=True,
            text=True,
            timeout=60,
        )

    assert "acme-post" in cli("paused").stdout
    assert cli("resume", "acme-post").returncode == 0
    assert cli("resume", "acme-post").returncode == 1  # not paused any more
    state = await conn.fetchrow("SELECT * FROM delivery_account_state WHERE delivery_account_id = 'acme-post'")
    assert not state["paused"] and state["consecutive_failures"] == 0


async def test_success_resets_the_failure_count(settings, buyer, conn):
    await apply_yaml(settings.database_url, catalog(account("acme-post", "acme", buyer, pause_after_failures=2)))
    answers = iter([(503, "down", 0.0), (200, "{}", 0.0), (503, "down", 0.0)])
    buyer.responses["/acme-post"] = lambda _r: next(answers)
    async with build_delivery(settings).running(), EventTap(settings, "#") as tap:
        for _ in range(3):
            request = await seed_delivery(conn, "acme-post", "acme")
            await publish_event(settings, "delivery.requested", request)
            await wait_for(functools.partial(finished, tap, request))
    assert not tap.bodies("notify.account_paused")
    assert await conn.fetchval("SELECT consecutive_failures FROM delivery_account_state") == 1


# --- email ---------------------------------------------------------------------------------------


async def test_email_account_hands_the_lead_to_notifier_with_a_signed_portal_link(settings, conn):
    await apply_yaml(
        settings.database_url,
        catalog(account("acme-mail", "acme", None, method="email", to=["leads@acme.test", "boss@acme.test"])),
    )
    async with build_delivery(settings).running(), EventTap(settings, "#") as tap:
        request = await seed_delivery(conn, "acme-mail", "acme")
        await publish_event(settings, "delivery.requested", request, copies=2)
        await wait_for(lambda: finished(tap, request) and tap.bodies("notify.lead_delivery"))
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 0 FROM outbox"))
    [note] = tap.bodies("notify.lead_delivery")
    assert note["to"] == ["leads@acme.test", "boss@acme.test"] and note["notification_id"] == str(request.delivery_id)
    assert note["lead_fields"] == request.fields and note["client_id"] == "acme"
    token = note["portal_link"].rsplit("/link/", 1)[1]
    claims = read_link_token(settings.portal_link_secret, token)
    assert claims is not None and (claims.client_id, claims.lead_id) == ("acme", request.lead_id)
    assert [(e["price"], e["attempts"]) for e in finished(tap, request)] == [("25.00", 1)]

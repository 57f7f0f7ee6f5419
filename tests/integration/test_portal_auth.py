"""portal_auth on real RabbitMQ and PostgreSQL, through its RPC client, with a clock the tests move."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import Awaitable
from datetime import timedelta
from typing import TypeVar

import pytest
from faststream.rabbit import RabbitBroker

from services.portal_auth.client import PortalAuthClient
from shared.contracts.portal_auth import (
    Done,
    ErrorCode,
    Failure,
    Identity,
    LinkGrant,
    LoginOk,
    PortalAuthReply,
    UserList,
    UserOk,
)
from shared.portal_links import issue_link_token, read_link_token
from shared.rpc import RequestReply
from tests.portal_auth_support import (
    PASSWORD,
    T0,
    apply_catalog_and_wait,
    fast_config,
    portal_catalog,
    running_portal,
    seed_user,
    sell_lead,
)
from tests.support import EventTap, apply_yaml, wait_for

pytestmark = pytest.mark.integration
T = TypeVar("T")


def ok(reply: object, kind: type[T]) -> T:
    assert isinstance(reply, kind), reply
    return reply


def refused(reply: object, error: str) -> Failure:
    assert isinstance(reply, Failure), reply
    assert reply.error == error, reply
    return reply


async def test_login_verify_logout(settings):
    admin_id = await seed_user(settings.database_url, "acme", "ann@acme.test")
    async with running_portal(settings, catalog=portal_catalog()) as portal:
        login = ok(await portal.client.login("Ann@Acme.test ", PASSWORD), LoginOk)
        assert login.identity.user_id == admin_id and login.identity.client_id == "acme"
        assert login.identity.is_admin and login.identity.scope == "all" and login.identity.visible_user_ids is None
        assert login.identity.session_expires_at == T0 + fast_config().session_policy().lifetime

        who = ok(await portal.client.verify(login.session_token), Identity)
        assert (who.user_id, who.client_id, who.session_id) == (admin_id, "acme", login.identity.session_id)

        assert ok(await portal.client.logout(login.session_token), Done).count == 1
        refused(await portal.client.verify(login.session_token), "session_invalid")
        refused(await portal.client.verify(login.session_token + "x"), "session_invalid")
        refused(await portal.client.verify("garbage"), "session_invalid")


async def test_wrong_password_and_unknown_email_get_the_same_refusal(settings):
    await seed_user(settings.database_url, "acme", "ann@acme.test")
    await seed_user(settings.database_url, "acme", "nopass@acme.test", password=None)
    async with running_portal(settings, catalog=portal_catalog()) as portal:
        wrong = refused(await portal.client.login("ann@acme.test", "not the password"), "invalid_credentials")
        unknown = refused(await portal.client.login("nobody@acme.test", "not the password"), "invalid_credentials")
        no_password = refused(await portal.client.login("nopass@acme.test", "anything at all"), "invalid_credentials")
        assert wrong.message == unknown.message == no_password.message


async def test_sessions_expire_absolutely_and_when_idle(settings):
    await seed_user(settings.database_url, "acme", "ann@acme.test")
    config = fast_config(session_hours=2, session_idle_minutes=30)
    async with running_portal(settings, catalog=portal_catalog(), config=config) as portal:
        login = ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk)
        token, ends = login.session_token, login.identity.session_expires_at
        # Verifying every 29 minutes keeps the session alive until the absolute expiry.
        for _ in range(4):
            portal.clock.advance(minutes=29)
            who = ok(await portal.client.verify(token), Identity)
            assert who.idle_expires_at == min(portal.clock.now + config.session_policy().idle, ends)
        portal.clock.advance(minutes=4)  # 2 h 0 min after login
        refused(await portal.client.verify(token), "session_expired")

        idle = ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk).session_token
        portal.clock.advance(minutes=30)
        refused(await portal.client.verify(idle), "session_expired")


@pytest.mark.parametrize("lock_inactive", [True, False])
async def test_inactive_client_session_dies_at_next_verify_only_with_the_option_on(settings, lock_inactive):
    await seed_user(settings.database_url, "acme", "ann@acme.test")
    catalog = portal_catalog(lock_inactive=lock_inactive)
    async with running_portal(settings, catalog=catalog) as portal:
        token = ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk).session_token
        ok(await portal.client.verify(token), Identity)

        await apply_catalog_and_wait(
            settings, portal.runtime, portal_catalog(acme_active=False, lock_inactive=lock_inactive)
        )
        if not lock_inactive:
            ok(await portal.client.verify(token), Identity)
            ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk)
            return
        refused(await portal.client.verify(token), "client_inactive")
        refused(await portal.client.login("ann@acme.test", PASSWORD), "client_inactive")
        # A wrong password still gets the generic answer: the refusal reveals nothing without it.
        refused(await portal.client.login("ann@acme.test", "not the password"), "invalid_credentials")

        # Reactivating the client lets its users log in again, but a killed session stays dead.
        await apply_catalog_and_wait(settings, portal.runtime, catalog)
        refused(await portal.client.verify(token), "session_invalid")
        ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk)


async def test_repeated_failures_slow_down_then_lock_for_known_and_unknown_emails(settings):
    await seed_user(settings.database_url, "acme", "ann@acme.test")
    # 2 free attempts, then 1 s, 2 s; the 4th failure locks for 15 minutes.
    async with running_portal(settings, catalog=portal_catalog()) as portal:

        async def attempts(email: str) -> list[ErrorCode]:
            portal.clock.now = T0
            seen = []
            for step in (0, 0, 0, 1, 0, 2, 0):
                portal.clock.advance(seconds=step)
                reply = await portal.client.login(email, "not the password")
                assert isinstance(reply, Failure), reply
                seen.append(reply.error)
            return seen

        expected = [
            "invalid_credentials",
            "invalid_credentials",
            "throttled",
            "invalid_credentials",
            "throttled",
            "invalid_credentials",
            "throttled",
        ]
        assert await attempts("ann@acme.test") == expected
        assert await attempts("ghost@acme.test") == expected  # no enumeration by throttling

        locked = refused(await portal.client.login("ann@acme.test", PASSWORD), "throttled")
        assert locked.retry_after == portal.clock.now + fast_config().login_policy().lock_for
        portal.clock.advance(minutes=14)
        refused(await portal.client.login("ann@acme.test", PASSWORD), "throttled")
        portal.clock.advance(minutes=1)
        ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk)
        # A success clears the counter: two fresh failures are free again.
        for _ in range(2):
            refused(await portal.client.login("ann@acme.test", "not the password"), "invalid_credentials")


async def test_parallel_guesses_each_spend_an_attempt(settings):
    await seed_user(settings.database_url, "acme", "ann@acme.test")
    async with running_portal(settings, catalog=portal_catalog()) as portal:
        # One multiplexed client: the guesses are in flight together, as a web tier's would be.
        replies = await asyncio.gather(*(portal.client.login("ann@acme.test", f"guess number {i}") for i in range(6)))
    # The clock stands still: 2 free attempts, and every other guess waits for the first delay.
    assert all(isinstance(r, Failure) for r in replies), replies
    assert sorted(r.error for r in replies if isinstance(r, Failure)) == ["invalid_credentials"] * 2 + ["throttled"] * 4


async def test_passwords_and_tokens_are_never_stored_or_logged_in_clear(settings, conn, caplog):
    caplog.set_level(logging.DEBUG)
    # aiormq's DEBUG log dumps every AMQP frame, bodies included, for any publisher: it must stay
    # off in production (docs/portal-auth.md). Everything else is captured at DEBUG.
    caplog.set_level(logging.INFO, logger="aiormq")
    await seed_user(settings.database_url, "acme", "ann@acme.test")
    new_password = "a brand new passphrase"
    async with running_portal(settings, catalog=portal_catalog()) as portal:
        token = ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk).session_token
        refused(await portal.client.login("ann@acme.test", "wrong " + PASSWORD), "invalid_credentials")
        ok(await portal.client.change_password(token, PASSWORD, new_password), Done)
        await portal.raw_request({"op": "login", "email": "ann@acme.test", "password": PASSWORD, "extra": 1})
    secret = token.split(".", 1)[1]
    dump = json.dumps(
        [
            dict(r)
            for r in await conn.fetch(
                "SELECT to_jsonb(t) AS row FROM (SELECT * FROM portal_users) t UNION ALL"
                " SELECT to_jsonb(t) FROM (SELECT id, user_id, encode(secret_hash, 'hex') AS h FROM portal_sessions) t"
                " UNION ALL SELECT to_jsonb(t) FROM (SELECT * FROM dead_letters) t"
                " UNION ALL SELECT to_jsonb(t) FROM (SELECT * FROM outbox) t"
            )
        ],
        default=str,
    )
    for clear in (PASSWORD, new_password, secret):
        assert clear not in dump
        assert clear not in caplog.text
    stored = await conn.fetchval("SELECT password_hash FROM portal_users WHERE email = 'ann@acme.test'")
    assert stored.startswith("$argon2id$")


async def test_change_password_needs_the_current_one_and_ends_other_sessions(settings):
    await seed_user(settings.database_url, "acme", "ann@acme.test")
    async with running_portal(settings, catalog=portal_catalog()) as portal:
        here = ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk).session_token
        elsewhere = ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk).session_token
        refused(
            await portal.client.change_password(here, "not the password", "a new long passphrase"),
            "invalid_credentials",
        )
        refused(await portal.client.change_password(here, PASSWORD, "short"), "weak_password")
        assert ok(await portal.client.change_password(here, PASSWORD, "a new long passphrase"), Done).count == 1
        ok(await portal.client.verify(here), Identity)
        refused(await portal.client.verify(elsewhere), "session_invalid")
        refused(await portal.client.login("ann@acme.test", PASSWORD), "invalid_credentials")
        ok(await portal.client.login("ann@acme.test", "a new long passphrase"), LoginOk)


async def test_revoke_all_ends_every_session_of_the_user(settings):
    await seed_user(settings.database_url, "acme", "ann@acme.test")
    await seed_user(settings.database_url, "acme", "bob@acme.test")
    async with running_portal(settings, catalog=portal_catalog()) as portal:
        tokens = [ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk).session_token for _ in range(3)]
        bob = ok(await portal.client.login("bob@acme.test", PASSWORD), LoginOk).session_token
        assert ok(await portal.client.revoke_all(tokens[0]), Done).count == 3
        for token in tokens:
            refused(await portal.client.verify(token), "session_invalid")
        ok(await portal.client.verify(bob), Identity)


async def test_password_reset_is_emailed_single_use_and_expires(settings):
    user_id = await seed_user(settings.database_url, "acme", "ann@acme.test")
    async with EventTap(settings, "notify.#") as tap, running_portal(settings, catalog=portal_catalog()) as portal:
        session = ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk).session_token
        ok(await portal.client.request_password_reset("nobody@acme.test"), Done)  # same answer, no email
        ok(await portal.client.request_password_reset("ANN@acme.test"), Done)
        await wait_for(lambda: tap.bodies("notify.password_reset"))
        email = tap.bodies("notify.password_reset")[0]
        assert email["kind"] == "password_reset" and email["to"] == ["ann@acme.test"]
        assert email["client_id"] == "acme" and email["data"]["user_id"] == str(user_id)
        reset_token = email["portal_link"].rsplit("/reset/", 1)[1]

        refused(await portal.client.reset_password(reset_token, "short"), "weak_password")
        ok(await portal.client.reset_password(reset_token, "reset passphrase one"), Done)
        refused(await portal.client.reset_password(reset_token, "reset passphrase two"), "reset_invalid")
        refused(await portal.client.verify(session), "session_invalid")  # a reset ends every session
        ok(await portal.client.login("ann@acme.test", "reset passphrase one"), LoginOk)

        portal.clock.advance(minutes=2)  # past the one-a-minute cooldown
        ok(await portal.client.request_password_reset("ann@acme.test"), Done)
        await wait_for(lambda: len(tap.bodies("notify.password_reset")) == 2)
        late = tap.bodies("notify.password_reset")[1]["portal_link"].rsplit("/reset/", 1)[1]
        portal.clock.advance(minutes=fast_config().reset_minutes)
        refused(await portal.client.reset_password(late, "reset passphrase three"), "reset_invalid")
        refused(await portal.client.reset_password("not-a-token", "reset passphrase three"), "reset_invalid")
    # Only the two requests for a real user produced an email.
    assert [b["to"] for b in tap.bodies("notify.password_reset")] == [["ann@acme.test"]] * 2


@pytest.mark.parametrize("days", [3, 0])
async def test_email_link_works_on_day_n_minus_1_and_not_on_day_n_plus_1(settings, conn, days):
    lead = await sell_lead(conn, "acme")
    token = issue_link_token(settings.portal_link_secret, client_id="acme", lead_id=lead, issued_at=T0)
    async with running_portal(settings, catalog=portal_catalog(link_days=days)) as portal:
        n = days or 3
        portal.clock.now = T0 + timedelta(days=n - 1)
        grant = ok(await portal.client.check_link(token, lead_id=lead), LinkGrant)
        assert (grant.client_id, grant.lead_id) == ("acme", lead)
        portal.clock.now = T0 + timedelta(days=n + 1)
        if days == 0:  # 0: links never expire
            assert grant.expires_at is None
            ok(await portal.client.check_link(token, lead_id=lead), LinkGrant)
        else:
            assert grant.expires_at == T0 + timedelta(days=days)
            refused(await portal.client.check_link(token, lead_id=lead), "link_expired")


async def test_a_link_for_client_a_is_refused_for_client_b(settings, conn):
    acme_lead = await sell_lead(conn, "acme")
    bolt_lead = await sell_lead(conn, "bolt")
    secret = settings.portal_link_secret
    token = issue_link_token(secret, client_id="acme", lead_id=acme_lead, issued_at=T0)
    async with running_portal(settings, catalog=portal_catalog()) as portal:
        ok(await portal.client.check_link(token, lead_id=acme_lead, client_id="acme"), LinkGrant)
        refused(await portal.client.check_link(token, lead_id=bolt_lead), "link_wrong_lead")
        refused(await portal.client.check_link(token, client_id="bolt"), "link_wrong_client")
        # Correctly signed but naming a lead acme never bought: the deliveries say no.
        stray = issue_link_token(secret, client_id="acme", lead_id=bolt_lead, issued_at=T0)
        refused(await portal.client.check_link(stray, lead_id=bolt_lead), "link_wrong_client")
        # Tampered: the payload says bolt, the signature is acme's.
        payload, signature = token.split(".")
        forged_payload = issue_link_token("guess", client_id="bolt", lead_id=bolt_lead, issued_at=T0).split(".")[0]
        refused(await portal.client.check_link(f"{forged_payload}.{signature}"), "link_invalid")
        refused(
            await portal.client.check_link(
                issue_link_token("another secret", client_id="bolt", lead_id=bolt_lead, issued_at=T0)
            ),
            "link_invalid",
        )
        refused(await portal.client.check_link(payload), "link_invalid")
        assert read_link_token(secret, token) is not None

        await apply_catalog_and_wait(settings, portal.runtime, portal_catalog(acme_active=False))
        refused(await portal.client.check_link(token, lead_id=acme_lead), "client_inactive")


async def test_admins_manage_only_their_own_clients_users(settings, conn):
    acme_admin = await seed_user(settings.database_url, "acme", "ann@acme.test")
    await seed_user(settings.database_url, "bolt", "bea@bolt.test")
    async with EventTap(settings, "notify.#") as tap, running_portal(settings, catalog=portal_catalog()) as portal:
        ann = ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk).session_token
        bea = ok(await portal.client.login("bea@bolt.test", PASSWORD), LoginOk).session_token
        assert ok(await portal.client.verify(bea), Identity).is_admin  # the first user of a client is an admin

        carl = ok(
            await portal.client.create_user(ann, "carl@acme.test", name="Carl", password="carl's passphrase"), UserOk
        ).user
        assert carl.client_id == "acme" and not carl.is_admin and carl.has_password
        dana = ok(await portal.client.create_user(ann, "dana@acme.test", name="Dana"), UserOk).user
        assert not dana.has_password
        await wait_for(lambda: tap.bodies("notify.password_reset"))
        assert tap.bodies("notify.password_reset")[0]["data"]["purpose"] == "invite"

        refused(await portal.client.create_user(ann, "CARL@acme.test"), "conflict")
        refused(await portal.client.update_user(bea, carl.id, name="hijacked"), "not_found")
        refused(await portal.client.update_user(bea, carl.id, enabled=False), "not_found")
        bolt_view = ok(await portal.client.list_users(bea), UserList)
        assert [u.email for u in bolt_view.users] == ["bea@bolt.test"]
        acme_view = ok(await portal.client.list_users(ann), UserList)
        assert {u.email for u in acme_view.users} == {"ann@acme.test", "carl@acme.test", "dana@acme.test"}

        carl_token = ok(await portal.client.login("carl@acme.test", "carl's passphrase"), LoginOk).session_token
        refused(await portal.client.create_user(carl_token, "eve@acme.test"), "forbidden")
        refused(await portal.client.update_user(carl_token, carl.id, is_admin=True), "forbidden")
        refused(await portal.client.update_user(carl_token, dana.id, name="x"), "forbidden")
        assert ok(
            await portal.client.update_user(carl_token, carl.id, phone="555-0100", notify_new_leads=True), UserOk
        ).user.notify_new_leads

        # Disabling a user kills their sessions now; they cannot log in again.
        assert not ok(await portal.client.update_user(ann, carl.id, enabled=False), UserOk).user.enabled
        refused(await portal.client.verify(carl_token), "session_invalid")
        refused(await portal.client.login("carl@acme.test", "carl's passphrase"), "account_disabled")
        refused(await portal.client.login("carl@acme.test", "not carl's passphrase"), "invalid_credentials")

        # The last enabled admin stays one.
        refused(await portal.client.update_user(ann, acme_admin, is_admin=False), "forbidden")
        refused(await portal.client.update_user(ann, acme_admin, enabled=False), "forbidden")
    assert await conn.fetchval("SELECT client_id FROM portal_users WHERE email = 'carl@acme.test'") == "acme"


async def test_verify_answers_what_each_user_may_see(settings):
    await seed_user(settings.database_url, "acme", "ann@acme.test")
    async with running_portal(settings, catalog=portal_catalog()) as portal:
        ann = ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk).session_token

        async def create(email: str, **fields) -> uuid.UUID:
            return ok(await portal.client.create_user(ann, email, password=PASSWORD, **fields), UserOk).user.id

        lead = await create("lead@acme.test", view_downline=True)
        mid = await create("mid@acme.test", parent_user_id=lead)
        low = await create("low@acme.test", parent_user_id=mid)
        side = await create("side@acme.test")

        async def identity(email: str) -> Identity:
            token = ok(await portal.client.login(email, PASSWORD), LoginOk).session_token
            return ok(await portal.client.verify(token), Identity)

        top = await identity("lead@acme.test")
        assert top.scope == "downline" and set(top.visible_user_ids or ()) == {lead, mid, low}
        middle = await identity("mid@acme.test")
        assert middle.scope == "own" and middle.visible_user_ids == [mid]
        assert (await identity("ann@acme.test")).scope == "all"

        refused(await portal.client.update_user(ann, lead, parent_user_id=low), "bad_request")  # a cycle
        ok(await portal.client.update_user(ann, side, parent_user_id=mid), UserOk)
        assert set((await identity("lead@acme.test")).visible_user_ids or ()) == {lead, mid, low, side}
        lead_token = ok(await portal.client.login("lead@acme.test", PASSWORD), LoginOk).session_token
        assert {u.id for u in ok(await portal.client.list_users(lead_token), UserList).users} == {lead, mid, low, side}


async def test_cli_creates_the_first_user_as_admin(settings, monkeypatch, capsys):
    from shared.cli import build_parser

    await apply_yaml(settings.database_url, portal_catalog())
    monkeypatch.setenv("LEADWIRE_PASSWORD", "seller chosen passphrase")
    for name, value in (("ARGON2_TIME_COST", "1"), ("ARGON2_MEMORY_KIB", "8192"), ("ARGON2_PARALLELISM", "1")):
        monkeypatch.setenv(f"PORTAL_{name}", value)

    async def cli(*argv: str) -> int:
        args = build_parser().parse_args(["portal", "create-user", *argv])
        return await args.handler(args, settings)

    assert await cli("--client", "acme", "--email", "first@acme.test", "--name", "First") == 0
    assert await cli("--client", "acme", "--email", "second@acme.test") == 0
    assert await cli("--client", "nope", "--email", "x@nope.test") == 1
    assert await cli("--client", "acme", "--email", "FIRST@acme.test") == 1
    monkeypatch.setenv("LEADWIRE_PASSWORD", "short")
    assert await cli("--client", "acme", "--email", "third@acme.test") == 1
    out = capsys.readouterr()
    assert "seller chosen passphrase" not in out.out + out.err
    async with running_portal(settings) as portal:
        first = ok(await portal.client.login("first@acme.test", "seller chosen passphrase"), LoginOk).identity
        second = ok(await portal.client.login("second@acme.test", "seller chosen passphrase"), LoginOk).identity
    assert first.is_admin and not second.is_admin


async def test_malformed_late_and_repeated_requests_get_answers(settings):
    await seed_user(settings.database_url, "acme", "ann@acme.test")
    async with running_portal(settings, catalog=portal_catalog()) as portal:
        bad = await portal.raw_request({"op": "nope"})
        assert bad["ok"] is False and bad["error"] == "bad_request" and "op" in bad["message"]
        late = await portal.raw_request(
            {"op": "verify", "token": "x"}, headers={"x-deadline-ms": int(time.time() * 1000) - 1}
        )
        assert late["error"] == "deadline_exceeded"

        token = ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk).session_token
        body = {"op": "create_user", "token": token, "email": "carl@acme.test", "password": PASSWORD}
        first = await portal.raw_request(body, message_id="create-carl-1")
        again = await portal.raw_request(body, message_id="create-carl-1")
        assert first["ok"] is True and again["error"] == "duplicate_request"


async def test_answers_a_burst_of_concurrent_requests_within_the_timeout(settings):
    await seed_user(settings.database_url, "acme", "ann@acme.test")
    for i in range(5):
        await seed_user(settings.database_url, "acme", f"user{i}@acme.test")
    async with running_portal(settings, catalog=portal_catalog(), timeout=10.0) as portal:
        token = ok(await portal.client.login("ann@acme.test", PASSWORD), LoginOk).session_token
        # One caller (think one web worker) with 185 calls in flight at once on one connection.
        client = portal.client
        calls: list[Awaitable[PortalAuthReply]] = [client.verify(token) for _ in range(160)]
        calls += [client.login(f"user{i}@acme.test", PASSWORD) for i in range(5)]
        calls += [client.check_link("tampered.token") for _ in range(20)]
        replies = await asyncio.gather(*calls)
    first = ok(replies[0], Identity)
    assert all(isinstance(r, Identity) and r.user_id == first.user_id for r in replies[:160])
    assert [ok(r, LoginOk).identity.email for r in replies[160:165]] == [f"user{i}@acme.test" for i in range(5)]
    assert all(isinstance(r, Failure) and r.error == "link_invalid" for r in replies[165:])


async def test_a_caller_gets_unavailable_not_a_hang_when_portal_auth_is_down(settings):
    from shared.topology import Topology

    topology = Topology(settings.namespace, settings.retry_delays)
    broker = RabbitBroker(settings.amqp_url)
    await broker.connect()
    rpc = RequestReply(settings.amqp_url, name="tests", namespace=settings.namespace)
    await rpc.start()
    try:
        await topology.declare(broker)  # the queue exists, nobody consumes it
        reply = await PortalAuthClient(rpc, topology, timeout=0.5).verify("whatever")
    finally:
        await rpc.close()
        await broker.stop()
    refused(reply, "unavailable")

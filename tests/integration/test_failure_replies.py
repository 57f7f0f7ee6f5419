"""Failure routing as a caller sees it (issue 14): whatever ends dead-lettered is dead-lettered
once, and a caller that set `reply_to` gets an error reply with the reason, under its correlation
id, as well as the dead letter."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import aio_pika
import pytest

from services.notifier.main import build as build_notifier
from services.portal_auth.main import build as build_portal_auth
from services.returns.main import build as build_returns
from services.router.main import build as build_router
from shared.rpc import RequestReply
from tests.notifier_support import SmtpSink, add_portal_user, add_sold_lead, free_port, with_smtp
from tests.portal_auth_support import fast_config
from tests.support import apply_yaml, catalog_yaml, dead_letters, wait_for

pytestmark = pytest.mark.integration


@dataclass
class Caller:
    """A caller on Direct Reply-To (`amq.rabbitmq.reply-to`), as an outside client does it."""

    channel: aio_pika.abc.AbstractChannel
    namespace: str
    replies: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage]

    async def send(
        self,
        exchange: str,
        routing_key: str,
        body: bytes | dict[str, Any] | list[Any],
        *,
        correlation_id: str = "corr-1",
        headers: dict[str, Any] | None = None,
        content_type: str | None = "application/json",
        message_id: str | None = None,
    ) -> str:
        message_id = message_id or str(uuid.uuid4())
        target = await self.channel.get_exchange(f"{self.namespace}.{exchange}", ensure=False)
        await target.publish(
            aio_pika.Message(
                body if isinstance(body, bytes) else json.dumps(body).encode(),
                message_id=message_id,
                correlation_id=correlation_id,
                reply_to="amq.rabbitmq.reply-to",
                headers=headers,
                content_type=content_type,
            ),
            routing_key=routing_key,
        )
        return message_id

    async def reply(self, timeout: float = 15) -> tuple[aio_pika.abc.AbstractIncomingMessage, Any]:
        message = await asyncio.wait_for(self.replies.get(), timeout)
        return message, json.loads(message.body)


@asynccontextmanager
async def direct_reply_caller(settings) -> AsyncIterator[Caller]:
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel()
        replies: asyncio.Queue[aio_pika.abc.AbstractIncomingMessage] = asyncio.Queue()
        reply_queue = await channel.get_queue("amq.rabbitmq.reply-to", ensure=False)
        await reply_queue.consume(replies.put, no_ack=True)
        yield Caller(channel, settings.namespace, replies)
    finally:
        await connection.close()


async def test_a_non_object_portal_auth_request_is_dead_lettered_once_and_answered(settings, conn):
    """Issue 14 item 5: with Direct Reply-To a non-object request was dead-lettered twice (once by
    failure routing, once by the broker after FastStream's own empty reply failed NO_ROUTE)."""
    runtime = build_portal_auth(settings, config=fast_config())
    async with runtime.running(), direct_reply_caller(settings) as caller:
        message_id = await caller.send("events", "portal_auth.login", [1, 2], correlation_id="auth-7")
        reply, body = await caller.reply()
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 1 FROM dead_letters"))
        await asyncio.sleep(1.0)  # a second copy, if any, would be dead-lettered by now
    assert reply.correlation_id == "auth-7"
    assert body["ok"] is False and body["error"] == "bad_request" and body["message"]
    copies = await dead_letters(settings, "portal_auth.rpc")
    assert [m.message_id for m in copies] == [message_id]
    assert (copies[0].headers or {}).get("x-error")
    assert await conn.fetchval("SELECT count(*) FROM dead_letters") == 1


async def test_a_malformed_deadline_header_is_a_bad_request(settings):
    """Issue 14 item 6: "soon" or [1, 2] in `x-deadline-ms` was read as no deadline at all."""
    runtime = build_portal_auth(settings, config=fast_config())
    login = {"op": "login", "email": "nobody@example.com", "password": "x"}
    async with runtime.running(), direct_reply_caller(settings) as caller:
        answers = []
        for deadline in ("soon", [1, 2]):
            await caller.send("events", "portal_auth.login", login, headers={"x-deadline-ms": deadline})
            answers.append((await caller.reply())[1])
    for body in answers:
        assert (body["ok"], body["error"]) == (False, "bad_request")
        assert "x-deadline-ms" in body["message"]


@pytest.mark.parametrize(
    ("routing_key", "body", "queue", "expected"),
    [
        ("return.request", {"lead_id": "nope"}, "returns.commands", "return_id"),
        ("order.command", {"order_id": "o-1", "action": "explode"}, "returns.commands", "action"),
        ("return.request", b"{not json", "returns.commands", "not JSON"),
        ("order.command", {"order_id": "o-1\u0000", "action": "pause"}, "returns.commands", "NUL"),
    ],
)
async def test_a_malformed_command_with_reply_to_is_answered_and_dead_lettered(
    settings, conn, routing_key, body, queue, expected
):
    """Issue 14 item 4: the caller waited for its own timeout; now it is told why, once."""
    async with build_returns(settings).running(), direct_reply_caller(settings) as caller:
        message_id = await caller.send("events", routing_key, body, correlation_id="ask-1")
        reply, answer = await caller.reply()
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 1 FROM dead_letters"))
    assert reply.correlation_id == "ask-1"
    assert (answer["version"], answer["ok"], answer["error"]) == (1, False, "bad_request")
    assert expected in answer["message"]
    assert [m.message_id for m in await dead_letters(settings, queue)] == [message_id]


async def test_a_lead_too_malformed_to_be_a_lead_is_answered_and_dead_lettered(settings, conn, buyer):
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    async with build_router(settings).running(), direct_reply_caller(settings) as caller:
        message_id = await caller.send("inbound", "lead.solar", {"lead_type": 5, "fields": []}, correlation_id="l-1")
        reply, answer = await caller.reply()
    assert reply.correlation_id == "l-1" and (answer["ok"], answer["error"]) == (False, "bad_request")
    assert "lead_type" in answer["message"] and "source" in answer["message"]
    assert [m.message_id for m in await dead_letters(settings, "router.leads")] == [message_id]
    assert await conn.fetchval("SELECT count(*) FROM leads") == 0


def _appointment(lead_id: uuid.UUID, user_id: uuid.UUID, appointment_id: uuid.UUID | None = None) -> dict:
    now = datetime.now(UTC)
    return {
        "appointment_id": str(appointment_id or uuid.uuid4()),
        "client_id": "acme",
        "lead_id": str(lead_id),
        "assigned_user_id": str(user_id),
        "starts_at": (now + timedelta(days=1)).isoformat(),
        "title": "Site visit",
        "requested_at": now.isoformat(),
    }


async def test_appointment_commands_answer_a_caller_accepted_or_refused_with_the_reason(settings, conn, buyer):
    """Issue 14 item 4, portal row D7: the portal learns whether its appointment command was
    applied, and why not. The caller is the portal's kind: shared/rpc.py's RequestReply."""
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    acme_user = await add_portal_user(conn, "acme", "a@acme.example.com")
    bolt_user = await add_portal_user(conn, "bolt", "b@bolt.example.com")
    acme_lead, _ = await add_sold_lead(conn, "acme", {"first_name": "Ada"})
    smtp = SmtpSink(free_port())
    smtp.start()
    rpc = RequestReply(settings.amqp_url, name="test", namespace=settings.namespace)
    events = f"{settings.namespace}.events"
    try:
        async with build_notifier(with_smtp(settings, smtp.port)).running():
            await rpc.start()
            create = _appointment(acme_lead, acme_user)
            accepted = (await rpc.request(events, "appointment.create", create, timeout=15)).json()
            again = (await rpc.request(events, "appointment.create", create, timeout=15)).json()
            refused = (
                await rpc.request(events, "appointment.create", _appointment(acme_lead, bolt_user), timeout=15)
            ).json()
            cancel = {k: create[k] for k in ("appointment_id", "client_id")} | {
                "requested_at": datetime.now(UTC).isoformat()
            }
            cancelled = (await rpc.request(events, "appointment.cancel", cancel, timeout=15)).json()
    finally:
        await rpc.close()
        smtp.stop()
    appointment_id = create["appointment_id"]
    assert accepted == {
        "version": 1,
        "ok": True,
        "appointment_id": appointment_id,
        "status": "scheduled",
        "applied": True,
    }
    assert again == {**accepted, "applied": False}  # a repeat changes nothing, and says so
    assert (refused["ok"], refused["error"]) == (False, "refused")
    assert "not a user of client 'acme'" in refused["message"]
    assert cancelled == {**accepted, "status": "cancelled"}
    # A refused command is still dead-lettered, with its reason, for an operator.
    [dead] = await dead_letters(settings, "notifier.requests")
    assert dead.headers["x-error"].startswith("AppointmentRefused: portal user")


# --- NUL characters (issue 14 item 2): a clear refusal, never a database error -----------------------


async def test_a_nul_in_a_portal_auth_request_is_a_bad_request_not_unavailable(settings):
    runtime = build_portal_auth(settings, config=fast_config())
    async with runtime.running(), direct_reply_caller(settings) as caller:
        await caller.send("events", "portal_auth.login", {"op": "login", "email": "a\u0000@x.com", "password": "pw"})
        _, body = await caller.reply()
    assert (body["ok"], body["error"]) == (False, "bad_request")
    assert "NUL" in body["message"]


async def test_a_nul_in_a_notification_request_is_refused_with_the_reason(settings, conn):
    request = {
        "notification_id": str(uuid.uuid4()),
        "kind": "lead_forward",
        "to": ["partner@example.com"],
        "message": "call\u0000 her",
    }
    async with build_notifier(settings).running(), direct_reply_caller(settings) as caller:
        message_id = await caller.send("events", "notify.lead_forward", request)
        _, body = await caller.reply()
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 1 FROM dead_letters"))
    assert (body["error"], "message" in body["message"] and "NUL" in body["message"]) == ("bad_request", True)
    assert [m.message_id for m in await dead_letters(settings, "notifier.requests")] == [message_id]


async def test_a_nul_in_the_properties_of_a_dead_letter_does_not_stop_its_row(settings, conn, buyer):
    """The `dead_letters` row failed to insert when the idempotency-key header held a NUL."""
    await apply_yaml(settings.database_url, catalog_yaml(buyer))
    async with build_router(settings).running(), direct_reply_caller(settings) as caller:
        await caller.send(
            "inbound", "lead.solar", b"not json", headers={"idempotency-key": "k\u0000"}, message_id="m\u0000"
        )
        _, body = await caller.reply()
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 1 FROM dead_letters"))
    row = await conn.fetchrow("SELECT message_id, headers, body FROM dead_letters")
    assert row["message_id"] == "m\ufffd" and row["headers"]["idempotency-key"] == "k\ufffd"
    assert row["body"] == b"not json" and body["error"] == "bad_request"
    [dead] = await dead_letters(settings, "router.leads")
    assert dead.message_id == "m\u0000"  # the dead-letter queue keeps the message as it came

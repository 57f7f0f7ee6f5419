"""Helpers for notifier tests: a real SMTP server (aiosmtpd) that records what it receives, a
publisher for the events exchange, and rows notifier reads from other services' tables."""

from __future__ import annotations

import email
import json
import socket
import threading
import uuid
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from typing import Any

import aio_pika
import asyncpg
from aiosmtpd.controller import Controller

from shared.settings import Settings


@dataclass
class ReceivedEmail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def message_id(self) -> str:
        return str(self.message["Message-ID"])

    @property
    def kind(self) -> str:
        return str(self.message["X-Leadwire-Kind"])

    def text(self) -> str:
        return self.message.get_body(("plain",)).get_content()

    def html(self) -> str:
        return self.message.get_body(("html",)).get_content()


@dataclass
class SmtpSink:
    """An SMTP server on 127.0.0.1. `answers` holds replies for the next DATA commands (e.g.
    "451 4.3.0 try later"); when it is empty the email is accepted and recorded."""

    port: int
    received: list[ReceivedEmail] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)
    refused_data: int = 0
    _controller: Controller | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self._lock:
            if self.answers:
                self.refused_data += 1
                return self.answers.pop(0)
            parsed = email.message_from_bytes(envelope.content, policy=policy.default)
            self.received.append(ReceivedEmail(envelope.mail_from, list(envelope.rcpt_tos), parsed))
        return "250 OK"

    def start(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def of_kind(self, kind: str) -> list[ReceivedEmail]:
        return [m for m in self.received if m.kind == kind]

    def to(self, address: str) -> list[ReceivedEmail]:
        return [m for m in self.received if address in m.rcpt_tos]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def with_smtp(settings: Settings, port: int, **extra: Any) -> Settings:
    return settings.model_copy(
        update={"smtp_port": port, "smtp_from": "leadwire@mail.example.com", "admin_email": "ops@example.com", **extra}
    )


async def publish_event(
    settings: Settings, routing_key: str, body: dict[str, Any], *, message_id: str | None = None
) -> str:
    """Publish to the events exchange as another service's outbox relay would."""
    message_id = message_id or str(uuid.uuid4())
    connection = await aio_pika.connect(settings.amqp_url)
    try:
        channel = await connection.channel(publisher_confirms=True)
        exchange = await channel.get_exchange(f"{settings.namespace}.events", ensure=True)
        await exchange.publish(
            aio_pika.Message(
                json.dumps(body, default=str).encode(),
                message_id=message_id,
                content_type="application/json",
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
            ),
            routing_key=routing_key,
        )
    finally:
        await connection.close()
    return message_id


async def add_portal_user(
    conn: asyncpg.Connection,
    client_id: str,
    email_address: str,
    *,
    name: str = "",
    enabled: bool = True,
    notify_new_leads: bool = False,
) -> uuid.UUID:
    user_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO portal_users (id, client_id, email, name, enabled, notify_new_leads)"
        " VALUES ($1, $2, $3, $4, $5, $6)",
        user_id,
        client_id,
        email_address,
        name,
        enabled,
        notify_new_leads,
    )
    return user_id


async def add_sold_lead(
    conn: asyncpg.Connection, client_id: str, fields: dict[str, Any], lead_type: str = "solar"
) -> tuple[uuid.UUID, uuid.UUID]:
    """A lead router sold to `client_id`: (lead id, delivery id)."""
    lead_id, delivery_id = uuid.uuid4(), uuid.uuid4()
    await conn.execute(
        "INSERT INTO leads (id, source_id, idempotency_key, lead_type_id, fields, status)"
        " VALUES ($1, 'web', $2, $3, $4, 'sold')",
        lead_id,
        str(lead_id),
        lead_type,
        fields,
    )
    await conn.execute(
        "INSERT INTO deliveries (id, lead_id, client_id, delivery_account_id, price, status)"
        " VALUES ($1, $2, $3, $4, 25, 'succeeded')",
        delivery_id,
        lead_id,
        client_id,
        f"{client_id}-post",
    )
    return lead_id, delivery_id

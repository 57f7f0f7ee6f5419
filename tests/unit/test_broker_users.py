"""Per-role broker users: the permission patterns and RabbitMQ's password hash."""

from __future__ import annotations

import base64
import hashlib
import re

import pytest

from shared import broker_users


@pytest.mark.parametrize(
    ("name", "may_write"),
    [
        ("lw.inbound", True),
        ("lw.events", False),
        ("lw.inbound.x", False),
        ("lwxinbound", False),
        ("amq.default", False),
        ("other.inbound", False),
        ("lw.router.leads", False),
    ],
)
def test_a_source_writes_to_the_inbound_exchange_only(name: str, may_write: bool) -> None:
    assert bool(re.match(broker_users.source_permissions("lw").write, name)) is may_write


@pytest.mark.parametrize(
    ("name", "may_read"), [("lw.router.leads", False), ("amq.gen-abc", True), ("amq.rabbitmq.reply-to", True)]
)
def test_a_source_reads_its_reply_queues_only(name: str, may_read: bool) -> None:
    assert bool(re.match(broker_users.source_permissions("lw").read, name)) is may_read


def test_a_service_is_kept_to_its_namespace() -> None:
    perms = broker_users.service_permissions("lw.x", "router")
    assert re.match(perms.write, "lw.x.events") and re.match(perms.write, "amq.default")
    assert not re.match(perms.write, "lwAx.events")  # the namespace is escaped
    assert not re.match(perms.configure, "other.events")


def test_password_hash_is_rabbitmqs_sha256() -> None:
    encoded = broker_users.password_hash("secret", salt=b"\x01\x02\x03\x04")
    raw = base64.b64decode(encoded)
    assert raw[:4] == b"\x01\x02\x03\x04"
    assert raw[4:] == hashlib.sha256(b"\x01\x02\x03\x04secret").digest()


def test_plan_and_urls() -> None:
    users = broker_users.plan("lw", ["web"], ["router"])
    assert [(u.name, u.role) for u in users] == [("lw-source-web", "source"), ("lw-router", "router")]
    url = broker_users.amqp_url_for("amqp://guest:guest@rabbit:5672/", users[0])
    assert url.startswith("amqp://lw-source-web:") and url.endswith("@rabbit:5672/")
    doc = broker_users.definitions(users)
    assert {p["user"] for p in doc["permissions"]} == {"lw-source-web", "lw-router"}


def test_every_process_that_connects_has_a_broker_user() -> None:
    """Each process with a metrics port is a broker client (the admin console included)."""
    from shared.metrics import DEFAULT_PORTS

    assert set(broker_users.SERVICES) == set(DEFAULT_PORTS)

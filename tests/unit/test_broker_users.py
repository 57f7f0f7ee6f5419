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


@pytest.mark.parametrize(
    ("service", "name", "may_read"),
    [
        ("router", "lw.router.leads", True),
        ("router", "lw.router.delivery-results", True),
        ("router", "lw.rpc-replies.router.abc", True),
        ("router", "lw.delivery.requests", False),
        ("router", "lw.router.leads.dlq", False),
        ("router", "lw.router.leads.retry.1s.q", False),
        ("router", "lw.rpc-replies.portal.abc", False),
        ("router", "lw.events", False),  # binding from it needs read on it: the set-up binds
        ("router", "amq.gen-abc", False),
        ("delivery", "lw.delivery.requests", True),
        ("delivery", "lw.delivery.confirm-price", True),
        ("delivery", "lw.router.leads", False),
        ("portal", "lw.rpc-replies.portal.abc", True),
        ("portal", "lw.rpc-replies.portal_auth.abc", False),
        ("portal", "lw.portal_auth.rpc", False),
        ("portal_auth", "lw.portal_auth.rpc", True),
        ("admin", "lw.delivery.requests.dlq", True),
        ("admin", "lw.delivery.requests", False),
        ("intake", "lw.router.leads", False),
    ],
)
def test_a_service_reads_its_own_queues_only(service: str, name: str, may_read: bool) -> None:
    assert bool(re.match(broker_users.service_permissions("lw", service).read, name)) is may_read


@pytest.mark.parametrize(
    ("service", "name", "may_write"),
    [
        ("router", "lw.events", True),
        ("router", "amq.default", True),
        ("router", "lw.inbound", False),
        ("intake", "lw.inbound", True),
        ("router", "lw.router.leads", False),  # no queue.bind: the set-up binds
    ],
)
def test_a_service_writes_to_the_exchanges_it_publishes_to(service: str, name: str, may_write: bool) -> None:
    assert bool(re.match(broker_users.service_permissions("lw", service).write, name)) is may_write


def test_a_service_configures_its_own_reply_queues_only() -> None:
    perms = broker_users.service_permissions("lw", "router")
    assert re.match(perms.configure, "lw.rpc-replies.router.0123")
    assert not re.match(perms.configure, "lw.router.leads")
    assert not re.match(perms.configure, "lw.events")


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

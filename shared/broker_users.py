r"""Per-role RabbitMQ users with permission patterns: `leadwire broker users` (README, "Broker users").

Nobody outside Leadwire should be able to publish to `<ns>.events`: whoever can publish there can
send any service any command. And a service should read its own queues only. So each lead source
gets a user that may publish to `<ns>.inbound` only, and each service a user of its own:

- a source: configure `^amq\.gen-.*$` (its own server-named reply queues), write
  `^<ns>\.inbound$`, read `^(amq\.gen-.*|amq\.rabbitmq\.reply-to)$`;
- a service `<s>`: configure its own request-reply queues `<ns>.rpc-replies.<s>.*` (shared/rpc.py);
  write `<ns>.events` (its events and commands) and `amq.default` (replies, and parking a failed
  message in its retry queue or DLQ), and `<ns>.inbound` for the intake (it publishes the leads
  posted over HTTP); read its own work queues (the ones whose logical name starts with `<s>.`,
  shared/topology.py) and its request-reply queues — and, for the admin console, every DLQ
  (replaying and purging dead letters).

Such a service cannot declare the topology: RabbitMQ requires configure and read permission on a
queue to declare it with a dead-letter exchange, which every work and retry queue has, and read
permission on an exchange to bind a queue to it. So the whole topology is declared once by a
privileged user (`leadwire broker setup`; `broker users` runs it too, as the AMQP_URL it is given),
and each service runs with `LEADWIRE_TOPOLOGY=own`: it checks with passive declarations (which need
no permission) that every queue exists, then consumes its own without declaring or binding them.
Write permission on `amq.default` lets a service publish to any queue by name, which is no more
than its write permission on `<ns>.events` allows (every work queue is bound there); what it
cannot do is read, purge, bind or declare another service's queue.

The users are created in one `rabbitmqctl import_definitions` call (users with their password
hashes, and their permissions on the vhost); other users are left alone. Passwords are random and
printed once: running it again gives the named users new passwords.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
import subprocess
from dataclasses import dataclass
from urllib.parse import quote, urlsplit, urlunsplit

from shared.topology import WORK_QUEUES, owner

SERVICES = ("router", "delivery", "returns", "portal_auth", "notifier", "portal", "intake", "admin")


@dataclass(frozen=True)
class Permissions:
    configure: str
    write: str
    read: str


@dataclass(frozen=True)
class BrokerUser:
    name: str
    role: str  # "source" or a service name
    password: str
    permissions: Permissions


def source_permissions(namespace: str) -> Permissions:
    ns = re.escape(namespace)
    return Permissions(
        configure=r"^amq\.gen-.*$",
        write=rf"^{ns}\.inbound$",
        read=r"^(amq\.gen-.*|amq\.rabbitmq\.reply-to)$",
    )


def service_permissions(namespace: str, service: str) -> Permissions:
    ns = re.escape(namespace)
    replies = rf"{ns}\.rpc-replies\.{re.escape(service)}\..*"
    own = [rf"{ns}\.{re.escape(logical)}" for logical in WORK_QUEUES if owner(logical) == service]
    if service == "admin":  # the dead-letter console reads (replays, purges) every DLQ
        own.append(rf"{ns}\..*\.dlq")
    exchanges = [rf"{ns}\.events", "amq\\.default"] + ([rf"{ns}\.inbound"] if service == "intake" else [])
    return Permissions(
        configure=rf"^{replies}$",
        write=rf"^({'|'.join(exchanges)})$",
        read=rf"^({'|'.join([*own, replies])})$",
    )


def user_name(namespace: str, role: str, source: str | None = None) -> str:
    return f"{namespace}-source-{source}" if role == "source" else f"{namespace}-{role}"


def plan(namespace: str, sources: list[str], services: list[str]) -> list[BrokerUser]:
    users = [
        BrokerUser(
            user_name(namespace, "source", s), "source", secrets.token_urlsafe(24), source_permissions(namespace)
        )
        for s in sources
    ]
    users += [
        BrokerUser(user_name(namespace, s), s, secrets.token_urlsafe(24), service_permissions(namespace, s))
        for s in services
    ]
    return users


def password_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's `rabbit_password_hashing_sha256`: base64(salt + sha256(salt + password))."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def definitions(users: list[BrokerUser], vhost: str = "/") -> dict[str, list[dict[str, object]]]:
    return {
        "users": [
            {
                "name": u.name,
                "password_hash": password_hash(u.password),
                "hashing_algorithm": "rabbit_password_hashing_sha256",
                "tags": [],
            }
            for u in users
        ],
        "permissions": [
            {
                "user": u.name,
                "vhost": vhost,
                "configure": u.permissions.configure,
                "write": u.permissions.write,
                "read": u.permissions.read,
            }
            for u in users
        ],
    }


def amqp_url_for(base_url: str, user: BrokerUser) -> str:
    """`base_url` (host, port, vhost) with this user's name and password."""
    parts = urlsplit(base_url)
    host = parts.hostname or "127.0.0.1"
    netloc = f"{quote(user.name, safe='')}:{quote(user.password, safe='')}@{host}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urlunsplit((parts.scheme or "amqp", netloc, parts.path or "/", parts.query, ""))


def apply(users: list[BrokerUser], *, vhost: str = "/", rabbitmqctl: str = "rabbitmqctl") -> None:
    """Create or update the users and their permissions in one `rabbitmqctl import_definitions`
    (run where rabbitmqctl may talk to the node: as root or the rabbitmq user). Raises
    RuntimeError with rabbitmqctl's output when it fails."""
    document = json.dumps(definitions(users, vhost))
    done = subprocess.run(
        [rabbitmqctl, "import_definitions", "--format", "json"],
        input=document,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"rabbitmqctl import_definitions failed: {(done.stderr or done.stdout).strip()}")


def delete(names: list[str], *, rabbitmqctl: str = "rabbitmqctl") -> None:
    for name in names:
        subprocess.run([rabbitmqctl, "delete_user", name], capture_output=True, timeout=60, check=False)

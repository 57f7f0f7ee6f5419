r"""Per-role RabbitMQ users with permission patterns: `leadwire broker users` (README, "Broker users").

Nobody outside Leadwire should be able to publish to `<ns>.events`: whoever can publish there can
send any service any command. So each lead source gets a user that may publish to
`<ns>.inbound` only, and each service a user of its own:

- a source: configure `^amq\.gen-.*$` (its own server-named reply queues), write
  `^<ns>\.inbound$`, read `^(amq\.gen-.*|amq\.rabbitmq\.reply-to)$`;
- a service `<s>`: configure `^(<ns>\..*|amq\.gen-.*)$` (every process declares the whole
  topology), write `^(<ns>\..*|amq\.default)$` (events, bindings, and replies and retry queues
  through the default exchange), read `^(<ns>\..*|amq\.gen-.*)$`.

A service's read permission covers every queue of the namespace, not only its own: every process
declares the whole topology (so the order of starting does not matter), and RabbitMQ requires
read permission on a queue to declare it with a dead-letter exchange, which every work and retry
queue has. So the broker separates sources from services, not services from each other: a
service user is trusted with the namespace, a source user with `<ns>.inbound` only.

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
    return Permissions(
        configure=rf"^({ns}\..*|amq\.gen-.*)$",
        write=rf"^({ns}\..*|amq\.default)$",
        read=rf"^({ns}\..*|amq\.gen-.*)$",
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

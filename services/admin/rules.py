"""The admin console's decisions, with no I/O: roles and what each may do, API key syntax, the
Client Options' effective values and where they come from, catalog diffs, form reading. Every
function is table-tested in tests/unit/test_admin_rules.py."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal, get_args

# --- Roles -------------------------------------------------------------------------------------

Role = Literal["owner", "admin", "operator", "viewer"]
ROLES: tuple[Role, ...] = get_args(Role)

# What a route needs. Every route of the console and its API names one of these (web.py refuses
# to start otherwise), and the role table below is the only place that says who has it.
Permission = Literal["read", "operate", "configure", "manage_staff"]

GRANTS: dict[Role, frozenset[Permission]] = {
    "viewer": frozenset({"read"}),
    # Day-to-day work: returns, dead letters, paused accounts, orders, re-routing.
    "operator": frozenset({"read", "operate"}),
    # And the catalog: Client Options, clients, accounts, groups, orders' definitions; own API keys.
    "admin": frozenset({"read", "operate", "configure"}),
    # And staff users and their roles, and every API key.
    "owner": frozenset({"read", "operate", "configure", "manage_staff"}),
}

ROLE_RANK: dict[Role, int] = {"viewer": 0, "operator": 1, "admin": 2, "owner": 3}


def may(role: Role, permission: Permission) -> bool:
    return permission in GRANTS[role]


def effective_role(user_role: Role, key_role: Role | None = None) -> Role:
    """What a request may do: the user's role, or for an API key the lesser of the key's role and
    its user's role now (demoting a user demotes their keys at once)."""
    if key_role is None:
        return user_role
    return key_role if ROLE_RANK[key_role] <= ROLE_RANK[user_role] else user_role


def may_grant(actor: Role, role: Role) -> bool:
    """A key (or a staff user, by an owner) gets at most its maker's role."""
    return ROLE_RANK[role] <= ROLE_RANK[actor]


def parse_role(value: str) -> Role | None:
    return next((r for r in ROLES if r == value), None)


# --- API keys ------------------------------------------------------------------------------------

KEY_PREFIX = "lw_staff_"
_KEY = re.compile(r"^lw_staff_([0-9a-f]{16})_([A-Za-z0-9_-]{32,128})$")


def format_key(key_id: str, secret: str) -> str:
    return f"{KEY_PREFIX}{key_id}_{secret}"


def parse_key(value: str) -> tuple[str, str] | None:
    """(key id, secret) of `lw_staff_<16 hex>_<secret>`, or None."""
    match = _KEY.match(value.strip())
    return (match.group(1), match.group(2)) if match else None


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


# --- Staff users ---------------------------------------------------------------------------------

EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def email_problem(email: str) -> str | None:
    if not email:
        return "Enter an email address."
    if len(email) > 320 or not EMAIL.match(email):
        return "Enter a valid email address."
    return None


def key_name_problem(name: str) -> str | None:
    if not name.strip():
        return "Name the key (what uses it)."
    if len(name) > 100:
        return "A key name has at most 100 characters."
    return None


@dataclass(frozen=True)
class Staff:
    """Who is asking: a staff user through a session (console) or an API key (API)."""

    staff_id: str
    email: str
    name: str
    role: Role  # the effective role of this request
    via: Literal["console", "api"]
    api_key_id: str | None = None
    session_id: str | None = None

    def may(self, permission: Permission) -> bool:
        return may(self.role, permission)


SIGNED_OUT_REASONS = {
    "signed_out": "You are signed out.",
    "expired": "Your session ended. Please sign in again.",
}


def safe_next(value: str | None, base_path: str) -> str | None:
    """A post-login redirect target: only a path of this console (never another site)."""
    if not value or len(value) > 2000 or not value.startswith(f"{base_path}/") or value.startswith("//"):
        return None
    if "\\" in value or any(ord(c) < 32 for c in value):
        return None
    return value

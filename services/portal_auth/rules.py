"""portal_auth decisions, with no I/O: login throttling, session and link expiry, portal access,
what a user may see, who may manage whom, password policy. Every function takes `now` from the
caller, so tests decide what time it is."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from shared.portal_links import LinkClaims

# --- Request deadline ----------------------------------------------------------------------------


def read_deadline(value: object) -> float | None:
    """The caller's deadline, from header `x-deadline-ms` (integer unix milliseconds, as a number or
    as digits), in unix seconds; None when the header is absent. Anything else ("soon", [1, 2],
    true, 1.5) raises ValueError: a bad header is a bad request, never "no deadline"."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip()) / 1000
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value / 1000
    raise ValueError("header x-deadline-ms must be an integer: unix milliseconds")


# --- Login throttling ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LoginPolicy:
    free_attempts: int = 5  # failures before any delay
    base_delay: timedelta = timedelta(seconds=1)
    max_delay: timedelta = timedelta(seconds=60)
    lock_after: int = 10  # failures that lock the account
    lock_for: timedelta = timedelta(minutes=15)


@dataclass(frozen=True)
class Throttle:
    allowed: bool
    retry_after: datetime | None = None
    locked: bool = False


def current_failures(count: int, last_failed_at: datetime | None, now: datetime, policy: LoginPolicy) -> int:
    """Failures still held against an email: all of them are forgotten once `lock_for` has passed
    since the last one, so a lock ends by itself and an old typo does not count forever."""
    if last_failed_at is None or now - last_failed_at >= policy.lock_for:
        return 0
    return count


def failure_delay(failures: int, policy: LoginPolicy) -> timedelta:
    """How long after the last failure the next attempt must wait: nothing for the first
    `free_attempts`, then doubling from `base_delay` up to `max_delay`."""
    if failures < policy.free_attempts:
        return timedelta(0)
    return min(policy.base_delay * (2 ** (failures - policy.free_attempts)), policy.max_delay)


def login_throttle(count: int, last_failed_at: datetime | None, now: datetime, policy: LoginPolicy) -> Throttle:
    failures = current_failures(count, last_failed_at, now, policy)
    if failures == 0:
        return Throttle(True)
    assert last_failed_at is not None
    if failures >= policy.lock_after:
        return Throttle(False, last_failed_at + policy.lock_for, locked=True)
    not_before = last_failed_at + failure_delay(failures, policy)
    if now < not_before:
        return Throttle(False, not_before)
    return Throttle(True)


def email_key(email: str) -> str:
    return email.strip().lower()


# --- Sessions ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SessionPolicy:
    lifetime: timedelta = timedelta(hours=12)  # absolute: from login
    idle: timedelta = timedelta(minutes=30)  # from the last verify


SessionState = Literal["live", "revoked", "expired", "idle"]


def session_state(
    *, last_seen_at: datetime, expires_at: datetime, revoked_at: datetime | None, now: datetime, policy: SessionPolicy
) -> SessionState:
    if revoked_at is not None:
        return "revoked"
    if now >= expires_at:
        return "expired"
    if now >= last_seen_at + policy.idle:
        return "idle"
    return "live"


def idle_expires_at(last_seen_at: datetime, expires_at: datetime, policy: SessionPolicy) -> datetime:
    return min(last_seen_at + policy.idle, expires_at)


# --- Portal access -------------------------------------------------------------------------------

AccessRefusal = Literal["account_disabled", "client_inactive"]


def portal_access(
    *, user_enabled: bool, client_known: bool, client_active: bool, lock_inactive_clients: bool
) -> AccessRefusal | None:
    """Why a user may not use the portal right now, or None. A client that is no longer in the
    catalog is treated as inactive whatever the option says: there is nothing left to show."""
    if not user_enabled:
        return "account_disabled"
    if not client_known:
        return "client_inactive"
    if not client_active and lock_inactive_clients:
        return "client_inactive"
    return None


Scope = Literal["own", "downline", "all"]


def visibility(*, is_admin: bool, view_downline: bool) -> Scope:
    if is_admin:
        return "all"
    if view_downline:
        return "downline"
    return "own"


# --- Emailed links -------------------------------------------------------------------------------


def link_expires_at(issued_at: datetime, expire_days: int) -> datetime | None:
    """0 days means the link never expires (Expire Portal Email Link switched off)."""
    if expire_days <= 0:
        return None
    return issued_at + timedelta(days=expire_days)


LinkRefusal = Literal["link_invalid", "link_expired", "link_wrong_client", "link_wrong_lead", "client_inactive"]


def link_refusal(
    claims: LinkClaims | None,
    *,
    now: datetime,
    expire_days: int,
    wanted_lead: uuid.UUID | None,
    wanted_client: str | None,
    sold_to_client: bool,
    client_refusal: AccessRefusal | None,
) -> LinkRefusal | None:
    """Why an emailed link may not open its lead, or None.

    `claims` is None for a tampered or malformed token. `sold_to_client`: the lead really was
    delivered to the token's client (a second guard behind the signature)."""
    if claims is None:
        return "link_invalid"
    if wanted_client is not None and wanted_client != claims.client_id:
        return "link_wrong_client"
    if not sold_to_client:
        return "link_wrong_client"
    if wanted_lead is not None and wanted_lead != claims.lead_id:
        return "link_wrong_lead"
    if client_refusal is not None:
        return "client_inactive"
    expires = link_expires_at(claims.issued_at, expire_days)
    if expires is not None and now >= expires:
        return "link_expired"
    return None


# --- Passwords -----------------------------------------------------------------------------------

MIN_PASSWORD_LENGTH = 10
MAX_PASSWORD_LENGTH = 1024


def password_problem(password: str, email: str | None = None) -> str | None:
    """What is wrong with a new password, or None. Length is what matters (NIST SP 800-63B);
    no composition rules."""
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"a password needs at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"a password has at most {MAX_PASSWORD_LENGTH} characters"
    if not password.strip():
        return "a password cannot be only spaces"
    if email is not None and password.strip().lower() == email_key(email):
        return "a password cannot be the email address"
    return None


# --- Managing users ------------------------------------------------------------------------------

SELF_SERVICE_FIELDS = frozenset({"name", "phone", "notify_new_leads"})
ADMIN_FIELDS = frozenset({"is_admin", "view_downline", "enabled", "parent_user_id"})


@dataclass(frozen=True)
class Actor:
    user_id: uuid.UUID
    client_id: str
    is_admin: bool


def may_change(actor: Actor, *, target_id: uuid.UUID, target_client_id: str, fields: frozenset[str]) -> bool:
    """Admins change anything of their own client's users; a user changes their own contact
    details and notification setting; nobody touches another client's users."""
    if target_client_id != actor.client_id:
        return False
    if actor.is_admin:
        return True
    return target_id == actor.user_id and fields <= SELF_SERVICE_FIELDS


def parent_problem(
    *,
    user_id: uuid.UUID | None,
    parent_id: uuid.UUID,
    parent_client_id: str | None,
    client_id: str,
    parent_ancestors: list[uuid.UUID],
) -> str | None:
    """Whether `parent_id` can be the user above `user_id` (None: a user being created).
    `parent_ancestors`: the parent's own chain upwards."""
    if parent_client_id != client_id:
        return "the parent user is not a user of this client"
    if user_id is not None and (parent_id == user_id or user_id in parent_ancestors):
        return "a user cannot be below themselves"
    return None


def leaves_client_without_admin(
    *, enabled_admins: int, target_is_enabled_admin: bool, stays_enabled_admin: bool
) -> bool:
    """A client always keeps one enabled admin, or nobody could manage its users again."""
    return target_is_enabled_admin and not stays_enabled_admin and enabled_admins <= 1

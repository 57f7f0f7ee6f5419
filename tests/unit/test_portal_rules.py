"""portal_auth's pure rules: throttling, session and link expiry, access, visibility, user management."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from services.portal_auth import rules
from services.portal_auth.rules import Actor, LoginPolicy, SessionPolicy
from shared.portal_links import LinkClaims

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
S = timedelta(seconds=1)
POLICY = LoginPolicy(free_attempts=3, base_delay=S, max_delay=8 * S, lock_after=6, lock_for=timedelta(minutes=15))


# --- Throttling ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failures", "delay"),
    [
        (0, 0),
        (1, 0),
        (2, 0),  # free attempts
        (3, 1),
        (4, 2),
        (5, 4),  # doubling
        (6, 8),
        (7, 8),
        (20, 8),  # capped
    ],
)
def test_failure_delay_grows_then_caps(failures, delay):
    assert rules.failure_delay(failures, POLICY) == delay * S


@pytest.mark.parametrize(
    ("count", "since_last", "allowed", "retry_in", "locked"),
    [
        (0, None, True, None, False),
        (2, 0 * S, True, None, False),  # within the free attempts: no wait
        (3, 0 * S, False, 1 * S, False),  # first delay: 1 s after the last failure
        (3, 1 * S, True, None, False),  # ... then allowed again
        (5, 3 * S, False, 1 * S, False),  # 4 s delay, 3 s gone
        (5, 4 * S, True, None, False),
        (6, 0 * S, False, timedelta(minutes=15), True),  # locked
        (9, timedelta(minutes=14), False, timedelta(minutes=1), True),
        (9, timedelta(minutes=15), True, None, False),  # the lock ends by itself
        (4, timedelta(hours=1), True, None, False),  # old failures are forgotten
    ],
)
def test_login_throttle(count, since_last, allowed, retry_in, locked):
    last = None if since_last is None else T0 - since_last
    throttle = rules.login_throttle(count, last, T0, POLICY)
    assert throttle.allowed is allowed
    assert throttle.locked is locked
    assert throttle.retry_after == (None if retry_in is None else T0 + retry_in)


@pytest.mark.parametrize(
    ("count", "since_last", "expected"),
    [
        (4, 10 * S, 4),
        (4, timedelta(minutes=15), 0),
        (7, None, 0),
    ],
)
def test_current_failures_forgets_after_the_lock_window(count, since_last, expected):
    last = None if since_last is None else T0 - since_last
    assert rules.current_failures(count, last, T0, POLICY) == expected


@pytest.mark.parametrize(("raw", "key"), [(" Ada@Example.COM ", "ada@example.com"), ("b@c.d", "b@c.d")])
def test_email_key(raw, key):
    assert rules.email_key(raw) == key


# --- Sessions ------------------------------------------------------------------------------------

SESSIONS = SessionPolicy(lifetime=timedelta(hours=12), idle=timedelta(minutes=30))


@pytest.mark.parametrize(
    ("last_seen_ago", "expires_in", "revoked", "state"),
    [
        (timedelta(minutes=1), timedelta(hours=1), False, "live"),
        (timedelta(minutes=29, seconds=59), timedelta(hours=1), False, "live"),
        (timedelta(minutes=30), timedelta(hours=1), False, "idle"),
        (timedelta(minutes=1), timedelta(0), False, "expired"),  # absolute expiry wins
        (timedelta(minutes=1), -timedelta(hours=1), False, "expired"),
        (timedelta(minutes=1), timedelta(hours=1), True, "revoked"),
    ],
)
def test_session_state(last_seen_ago, expires_in, revoked, state):
    assert (
        rules.session_state(
            last_seen_at=T0 - last_seen_ago,
            expires_at=T0 + expires_in,
            revoked_at=T0 if revoked else None,
            now=T0,
            policy=SESSIONS,
        )
        == state
    )


@pytest.mark.parametrize(
    ("expires_in", "idle_at"),
    [
        (timedelta(hours=5), T0 + timedelta(minutes=30)),
        (timedelta(minutes=10), T0 + timedelta(minutes=10)),  # never after the absolute expiry
    ],
)
def test_idle_expires_at(expires_in, idle_at):
    assert rules.idle_expires_at(T0, T0 + expires_in, SESSIONS) == idle_at


# --- Access and visibility -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("enabled", "known", "active", "lock", "refusal"),
    [
        (True, True, True, True, None),
        (True, True, False, True, "client_inactive"),
        (True, True, False, False, None),  # option off: inactive clients keep the portal
        (False, True, True, True, "account_disabled"),
        (False, True, False, False, "account_disabled"),
        (True, False, False, False, "client_inactive"),  # client gone from the catalog
    ],
)
def test_portal_access(enabled, known, active, lock, refusal):
    assert (
        rules.portal_access(user_enabled=enabled, client_known=known, client_active=active, lock_inactive_clients=lock)
        == refusal
    )


@pytest.mark.parametrize(
    ("admin", "downline", "scope"),
    [
        (True, False, "all"),
        (True, True, "all"),
        (False, True, "downline"),
        (False, False, "own"),
    ],
)
def test_visibility(admin, downline, scope):
    assert rules.visibility(is_admin=admin, view_downline=downline) == scope


# --- Links ---------------------------------------------------------------------------------------

LEAD = uuid.uuid4()
OTHER_LEAD = uuid.uuid4()


@pytest.mark.parametrize(
    ("days", "age", "expected"),
    [
        (7, timedelta(days=6), None),  # day N-1 works
        (7, timedelta(days=7) - S, None),
        (7, timedelta(days=7), "link_expired"),  # exactly N days: expired
        (7, timedelta(days=8), "link_expired"),  # day N+1 refused
        (1, timedelta(hours=23), None),
        (0, timedelta(days=3650), None),  # 0: never expires
    ],
)
def test_link_expiry(days, age, expected):
    claims = LinkClaims("acme", LEAD, T0 - age)
    assert (
        rules.link_refusal(
            claims,
            now=T0,
            expire_days=days,
            wanted_lead=LEAD,
            wanted_client=None,
            sold_to_client=True,
            client_refusal=None,
        )
        == expected
    )


@pytest.mark.parametrize(
    ("claims", "wanted_lead", "wanted_client", "sold", "client_refusal", "expected"),
    [
        (None, None, None, False, None, "link_invalid"),
        (LinkClaims("acme", LEAD, T0), LEAD, "bolt", True, None, "link_wrong_client"),
        (LinkClaims("acme", LEAD, T0), LEAD, None, False, None, "link_wrong_client"),  # not acme's lead
        (LinkClaims("acme", LEAD, T0), OTHER_LEAD, "acme", True, None, "link_wrong_lead"),
        (LinkClaims("acme", LEAD, T0), LEAD, "acme", True, "client_inactive", "client_inactive"),
        (LinkClaims("acme", LEAD, T0), LEAD, "acme", True, None, None),
        (LinkClaims("acme", LEAD, T0), None, None, True, None, None),
    ],
)
def test_link_refusals(claims, wanted_lead, wanted_client, sold, client_refusal, expected):
    assert (
        rules.link_refusal(
            claims,
            now=T0,
            expire_days=7,
            wanted_lead=wanted_lead,
            wanted_client=wanted_client,
            sold_to_client=sold,
            client_refusal=client_refusal,
        )
        == expected
    )


@pytest.mark.parametrize(("days", "expected"), [(0, None), (3, T0 + timedelta(days=3))])
def test_link_expires_at(days, expected):
    assert rules.link_expires_at(T0, days) == expected


# --- Passwords -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("password", "email", "ok"),
    [
        ("correct horse battery", "a@b.c", True),
        ("short", None, False),
        ("x" * 9, None, False),
        ("x" * 10, None, True),
        ("x" * 1025, None, False),
        (" " * 12, None, False),
        ("Ada@Example.com", "ada@example.com", False),
    ],
)
def test_password_problem(password, email, ok):
    assert (rules.password_problem(password, email) is None) is ok


# --- Managing users ------------------------------------------------------------------------------

ADMIN = Actor(uuid.uuid4(), "acme", True)
PLAIN = Actor(uuid.uuid4(), "acme", False)
OTHER = uuid.uuid4()


@pytest.mark.parametrize(
    ("actor", "target", "client", "fields", "allowed"),
    [
        (ADMIN, OTHER, "acme", {"enabled", "is_admin"}, True),
        (ADMIN, OTHER, "bolt", {"name"}, False),  # never another client's user
        (PLAIN, PLAIN.user_id, "acme", {"name", "phone", "notify_new_leads"}, True),
        (PLAIN, PLAIN.user_id, "acme", {"is_admin"}, False),  # no self-promotion
        (PLAIN, PLAIN.user_id, "acme", {"view_downline"}, False),
        (PLAIN, OTHER, "acme", {"name"}, False),
        (PLAIN, PLAIN.user_id, "bolt", {"name"}, False),
    ],
)
def test_may_change(actor, target, client, fields, allowed):
    assert rules.may_change(actor, target_id=target, target_client_id=client, fields=frozenset(fields)) is allowed


U, P, G = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()


@pytest.mark.parametrize(
    ("user", "parent", "parent_client", "ancestors", "ok"),
    [
        (U, P, "acme", [P, G], True),
        (None, P, "acme", [], True),
        (U, P, "bolt", [P], False),  # another client's user
        (U, P, None, [], False),  # no such user
        (U, U, "acme", [U], False),  # own parent
        (U, P, "acme", [P, U, G], False),  # a cycle: U is above P already
    ],
)
def test_parent_problem(user, parent, parent_client, ancestors, ok):
    problem = rules.parent_problem(
        user_id=user, parent_id=parent, parent_client_id=parent_client, client_id="acme", parent_ancestors=ancestors
    )
    assert (problem is None) is ok


@pytest.mark.parametrize(
    ("admins", "target_admin", "stays", "refused"),
    [
        (1, True, False, True),  # the last enabled admin cannot go
        (2, True, False, False),
        (1, True, True, False),
        (1, False, False, False),
    ],
)
def test_last_admin_stays(admins, target_admin, stays, refused):
    assert (
        rules.leaves_client_without_admin(
            enabled_admins=admins, target_is_enabled_admin=target_admin, stays_enabled_admin=stays
        )
        is refused
    )


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),  # no header: no deadline
        (1_700_000_000_000, 1_700_000_000.0),
        ("1700000000000", 1_700_000_000.0),
        (b"1700000000000", 1_700_000_000.0),
        (" 1700000000000 ", 1_700_000_000.0),
        ("soon", ValueError),
        ([1, 2], ValueError),
        (True, ValueError),
        (1.5, ValueError),
        (-1, ValueError),
        ("", ValueError),
        ({"ms": 1}, ValueError),
    ],
)
def test_a_malformed_deadline_header_is_an_error_not_no_deadline(header, expected):
    if expected is ValueError:
        with pytest.raises(ValueError, match="x-deadline-ms"):
            rules.read_deadline(header)
    else:
        assert rules.read_deadline(header) == expected

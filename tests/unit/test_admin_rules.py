"""The admin console's pure rules: roles, API key syntax, post-login redirects."""

from __future__ import annotations

import pytest

from services.admin import rules

PERMISSIONS: tuple[rules.Permission, ...] = ("read", "operate", "configure", "manage_staff")

# role -> what it may do, in PERMISSIONS order
ROLE_TABLE = {
    "viewer": (True, False, False, False),
    "operator": (True, True, False, False),
    "admin": (True, True, True, False),
    "owner": (True, True, True, True),
}


@pytest.mark.parametrize("role", rules.ROLES)
def test_each_role_has_exactly_its_permissions(role):
    assert tuple(rules.may(role, p) for p in PERMISSIONS) == ROLE_TABLE[role]


@pytest.mark.parametrize(
    ("user", "key", "effective"),
    [
        ("owner", None, "owner"),
        ("owner", "viewer", "viewer"),
        ("admin", "owner", "admin"),  # a demoted user's key is demoted too
        ("viewer", "admin", "viewer"),
        ("operator", "operator", "operator"),
    ],
)
def test_a_key_never_has_more_than_its_user(user, key, effective):
    assert rules.effective_role(user, key) == effective


@pytest.mark.parametrize(
    ("actor", "role", "ok"),
    [("owner", "owner", True), ("admin", "owner", False), ("admin", "admin", True), ("admin", "viewer", True)],
)
def test_may_grant(actor, role, ok):
    assert rules.may_grant(actor, role) is ok


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("lw_staff_0123456789abcdef_" + "A" * 43, ("0123456789abcdef", "A" * 43)),
        ("  lw_staff_0123456789abcdef_" + "a-_" * 15 + "  ", ("0123456789abcdef", "a-_" * 15)),
        ("lw_staff_0123456789ABCDEF_" + "A" * 43, None),  # the id is lower-case hex
        ("lw_staff_0123456789abcde_" + "A" * 43, None),
        ("lw_staff_0123456789abcdef_short", None),
        ("lw_client_0123456789abcdef_" + "A" * 43, None),
        ("lw_staff_0123456789abcdef_" + "A" * 43 + "!", None),
        ("", None),
    ],
)
def test_parse_key(text, parsed):
    assert rules.parse_key(text) == parsed


def test_format_and_parse_round_trip():
    assert rules.parse_key(rules.format_key("00000000000000ff", "s" * 43)) == ("00000000000000ff", "s" * 43)


@pytest.mark.parametrize(
    ("header", "token"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("Basic abc", None), ("Bearer ", None), (None, None)],
)
def test_bearer(header, token):
    assert rules.bearer(header) == token


@pytest.mark.parametrize(
    ("value", "safe"),
    [
        ("/admin/returns?x=1", "/admin/returns?x=1"),
        ("/admin", None),
        ("//evil.example/admin/", None),
        ("https://evil.example/admin/x", None),
        ("/admin/\\evil", None),
        ("/admin/x\nSet-Cookie: a", None),
        ("/portal/leads", None),
        (None, None),
    ],
)
def test_safe_next(value, safe):
    assert rules.safe_next(value, "/admin") == safe

"""Table tests of the Client Portal's rules for settings, users, lead assignment and appointments
(services/portal/rules.py, part 2b)."""

from __future__ import annotations

import pytest

from services.portal import rules


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("the current password is wrong", "The current password is wrong."),
        ("Done.", "Done."),
        ("  ", ""),
        ("is it?", "Is it?"),
    ],
)
def test_sentence(text, expected):
    assert rules.sentence(text) == expected


@pytest.mark.parametrize(
    ("name", "phone", "errors"),
    [
        ("Sam  Seller ", "+1 (415) 555-0199", set()),
        ("", "", set()),
        ("x" * 201, "", {"name"}),
        ("Sam", "1" * 51, {"phone"}),
        ("Sam", "call me", {"phone"}),
        ("Sam", "415 555 0100 x12", set()),
    ],
)
def test_contact_details(name, phone, errors):
    checked, found = rules.check_contact_details(name, phone)
    assert set(found) == errors
    if not errors:
        assert checked is not None and checked.name == " ".join(name.split())


@pytest.mark.parametrize(
    ("current", "new", "confirm", "errors"),
    [
        ("old password", "new password!", "new password!", set()),
        ("", "new password!", "new password!", {"current"}),
        ("old", "", "", {"password"}),
        ("old", "a" * 1025, "a" * 1025, {"password"}),
        ("old", "new password!", "other", {"confirm"}),
        ("o" * 1025, "new password!", "new password!", {"current"}),
    ],
)
def test_new_password_form(current, new, confirm, errors):
    assert set(rules.check_new_password(current, new, confirm)) == errors

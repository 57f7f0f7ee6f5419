"""The portal's return rules, table-tested: the form check, returnable until, whether a lead may be
asked for again, the answer sentences, the Returns screen's filter, and F1's "returns allowed"."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
import yaml

from services.portal import rules
from shared.catalog.loader import parse_catalog


@pytest.mark.parametrize(
    ("reason", "comment", "reasons", "error"),
    [
        ("wrong_number", "", ["wrong_number", "out_of_area"], None),
        ("", "", ["wrong_number"], ("reason", "Choose a reason.")),
        ("", "", [], ("reason", "Give a reason.")),
        ("changed my mind", "", ["wrong_number"], ("reason", "Choose one of the listed reasons.")),
        ("anything at all", "", [], None),
        ("x" * 201, "", [], ("reason", "Keep the reason under 200 characters.")),
        ("bad\x00", "", [], ("reason", "The reason holds a character that cannot be stored.")),
        ("ok", "c" * 2001, [], ("comment", "Keep the comment under 2000 characters.")),
        ("ok", "nul\x00", [], ("comment", "The comment holds a character that cannot be stored.")),
    ],
)
def test_check_return_form(reason, comment, reasons, error):
    form, errors = rules.check_return_form(reason, comment, reasons)
    if error is None:
        assert errors == {} and form is not None and form.reason == reason.strip()
        assert form.comment is None
    else:
        assert form is None and errors[error[0]] == error[1]


def test_returnable_until_is_delivery_plus_the_window():
    at = datetime(2026, 3, 1, 12, tzinfo=UTC)
    assert rules.returnable_until(at, 30) == datetime(2026, 3, 31, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("latest", "may"),
    [
        (None, True),
        ({"status": "pending", "decision_reason": None}, False),
        ({"status": "approved", "decision_reason": "auto_approved"}, False),
        ({"status": "denied", "decision_reason": "admin"}, False),
        ({"status": "denied", "decision_reason": "cap_exceeded"}, True),
        ({"status": "denied", "decision_reason": "window_expired"}, True),
    ],
)
def test_may_request_return(latest, may):
    assert rules.may_request_return(latest) is may


@pytest.mark.parametrize(
    ("status", "reason", "credit", "kind", "sentence"),
    [
        ("pending", None, None, "accepted", "Return accepted: it is pending review by your lead provider."),
        ("approved", "auto_approved", Decimal("25"), "accepted", "Return accepted and approved. $25.00 credited."),
        ("denied", "cap_exceeded", None, "refused", "Return refused: this month's return allowance is used up."),
        ("denied", "window_expired", None, "refused", "Return refused: the return window for this lead has closed."),
        ("denied", "already_returned", None, "refused", "Return refused: this lead was already returned."),
        ("denied", "admin", None, "refused", "Return denied by your lead provider."),
    ],
)
def test_return_answer(status, reason, credit, kind, sentence):
    assert rules.return_answer(status, reason, credit) == (kind, sentence)


def test_allowance_words_and_floor():
    cap = rules.allowance("delivery_account", "Solar", Decimal("10"), 19, 1, date(2026, 3, 1))
    assert (cap.allowed, cap.words(), cap.full) == (1, "1 of 1 used", True)


def test_returns_filter_parses_and_refuses():
    f, errors = rules.parse_returns_filter({"status": "approved", "from": "2026-03-01", "to": "2026-03-31"})
    assert errors == {} and f is not None
    assert f.params() == {"status": "approved", "from": "2026-03-01", "to": "2026-03-31"}
    start, end = f.bounds("America/Los_Angeles")
    assert start == datetime(2026, 3, 1, 8, tzinfo=UTC) and end == datetime(2026, 4, 1, 7, tzinfo=UTC)
    at, ident = datetime(2026, 3, 2, tzinfo=UTC), uuid.uuid4()
    f, _ = rules.parse_returns_filter({"after": rules.encode_returns_cursor(at, ident)})
    assert f is not None and f.after == (at, ident)
    _, errors = rules.parse_returns_filter({"status": "lost", "from": "yesterday", "after": "nope"})
    assert set(errors) == {"status", "from", "after"}
    _, errors = rules.parse_returns_filter({"from": "2026-03-02", "to": "2026-03-01"})
    assert errors == {"to": "The end date is before the start date."}
    assert rules.parse_returns_filter({})[0] == rules.ReturnsFilter(None, None, None, None)


def _catalog(client_options: dict, account_pct: str | None = None):
    account = {
        "id": "a1",
        "client": "acme",
        "lead_type": "solar",
        "price": "10",
        "delivery": {"method": "email", "to": ["x@acme.example"]},
    }
    if account_pct is not None:
        account["max_return_pct"] = account_pct
    doc = {
        "lead_types": [{"id": "solar", "name": "Solar", "fields": [{"name": "phone", "type": "phone"}]}],
        "sources": [{"id": "web", "name": "Web"}],
        "clients": [{"id": "acme", "name": "Acme", "options": client_options}, {"id": "bolt", "name": "Bolt"}],
        "delivery_accounts": [account],
    }
    return parse_catalog(yaml.safe_dump(doc))


@pytest.mark.parametrize(
    ("options", "account_pct", "offered"),
    [
        ({}, None, True),  # the global default, 10 %
        ({"return_pct_delivery_accounts": "0"}, None, False),
        ({"return_pct_delivery_accounts": "0"}, "5", True),  # the account's own % wins
        ({}, "0", False),
    ],
)
def test_returns_offered_follows_the_effective_account_percent(options, account_pct, offered):
    catalog = _catalog(options, account_pct)
    assert rules.returns_offered(catalog, "acme") is offered
    assert rules.returns_offered(catalog, "bolt") is False  # no delivery account: nothing to return


@pytest.mark.parametrize(
    ("order_type", "value", "text"),
    [
        ("lead_quantity", Decimal("100"), "100 leads"),
        ("lead_quantity", Decimal("1"), "1 lead"),
        ("lead_quantity", Decimal("1500.00"), "1,500 leads"),
        ("dollar_amount", Decimal("1234.5"), "$1,234.50"),
        ("dollar_amount", Decimal("0"), "$0.00"),
    ],
)
def test_order_amount_in_its_units(order_type, value, text):
    assert rules.order_amount(order_type, value) == text


@pytest.mark.parametrize(
    ("status", "is_admin", "actions"),
    [("open", True, ["pause"]), ("paused", True, ["resume"]), ("closed", True, []), ("open", False, [])],
)
def test_order_actions_are_for_admins(status, is_admin, actions):
    assert rules.order_actions(status, is_admin) == actions


@pytest.mark.parametrize(
    ("error", "sentence"),
    [
        ("cannot resume an order that is closed", "This order is closed, so it cannot be resumed."),
        ("cannot pause an order that is closed", "This order is closed, so it cannot be paused."),
        ("something else", "The order could not be changed."),
        (None, "The order could not be changed."),
    ],
)
def test_order_refusal(error, sentence):
    assert rules.order_refusal(error) == sentence


@pytest.mark.parametrize(
    ("text", "ok"), [("acme-q1", True), ("a.b:c_d", True), ("../x", False), ("", False), ("x" * 65, False)]
)
def test_valid_order_id(text, ok):
    assert rules.valid_order_id(text) is ok


# --- Files (D6) ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "name", "error"),
    [
        ("quote.pdf", "quote.pdf", None),
        ("../../etc/quote.pdf", "quote.pdf", None),
        ("C:\\Users\\ann\\quote.pdf", "quote.pdf", None),
        ("bad\x00na\tme.txt", "badname.txt", None),
        ("", None, "Choose a file to upload."),
        ("dir/", None, "Choose a file to upload."),
        ("..", None, "Choose a file to upload."),
        ("x" * 256, None, "The file name is too long (at most 255 characters)."),
    ],
)
def test_clean_file_name(raw, name, error):
    assert rules.clean_file_name(raw) == (name, error)


@pytest.mark.parametrize(
    ("name", "head", "content_type"),
    [
        ("a.pdf", b"%PDF-1.4 ...", "application/pdf"),
        ("A.PDF", b"%PDF-1.4 ...", "application/pdf"),
        ("a.png", b"\x89PNG\r\n\x1a\n....", "image/png"),
        ("a.jpeg", b"\xff\xd8\xff\xe0", "image/jpeg"),
        ("a.gif", b"GIF89a..", "image/gif"),
        ("a.webp", b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        ("a.txt", "héllo".encode(), "text/plain; charset=utf-8"),
        ("a.csv", "a,b\n1,é".encode()[:-1], "text/csv; charset=utf-8"),  # a character cut at the end
        ("a.docx", b"PK\x03\x04....", "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
        ("a.xls", b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "application/vnd.ms-excel"),
    ],
)
def test_file_kind_allowed(name, head, content_type):
    kind, error = rules.file_kind(name, head)
    assert error is None and kind is not None and kind.content_type == content_type


@pytest.mark.parametrize(
    ("name", "head", "error"),
    [
        ("a.exe", b"MZ", "This type of file cannot be attached."),
        ("a.html", b"<html>", "This type of file cannot be attached."),
        ("a.svg", b"<svg>", "This type of file cannot be attached."),
        ("noextension", b"%PDF-", "This type of file cannot be attached."),
        ("a.pdf", b"<html>", "This file's content is not a PDF file"),
        ("a.webp", b"RIFF\x00\x00\x00\x00WAVE", "This file's content is not a WebP image file"),
        ("a.txt", b"bin\x00ary", "This file's content is not a Text file"),
        ("a.csv", b"\xff\xfe\xfa\xfb\xfc", "This file's content is not a CSV file"),
    ],
)
def test_file_kind_refused(name, head, error):
    kind, problem = rules.file_kind(name, head)
    assert kind is None and problem is not None and problem.startswith(error)


@pytest.mark.parametrize(
    ("name", "header"),
    [
        ("quote.pdf", "attachment; filename=\"quote.pdf\"; filename*=UTF-8''quote.pdf"),
        ('a"b;c\\.txt', "attachment; filename=\"a_b_c_.txt\"; filename*=UTF-8''a%22b%3Bc%5C.txt"),
        (
            "Angebot für Müller.pdf",
            "attachment; filename=\"Angebot f_r M_ller.pdf\"; filename*=UTF-8''Angebot%20f%C3%BCr%20M%C3%BCller.pdf",
        ),
    ],
)
def test_content_disposition_is_always_an_attachment(name, header):
    assert rules.content_disposition(name) == header


def test_file_size_words_and_who_deletes():
    assert [rules.file_size_words(n) for n in (1, 900, 2048, 10 * 1024 * 1024)] == [
        "1 byte",
        "900 bytes",
        "2.0 KB",
        "10.0 MB",
    ]
    me, other = uuid.uuid4(), uuid.uuid4()
    assert rules.may_delete_file(me, me, False) and rules.may_delete_file(other, me, True)
    assert not rules.may_delete_file(other, me, False)


def test_only_an_upload_gets_the_larger_body_limit():
    from services.portal.files import FORM_OVERHEAD_BYTES, upload_limit

    lead = str(uuid.uuid4())
    assert upload_limit("/portal", 10, f"/portal/leads/{lead}/files", "POST") == 10 + FORM_OVERHEAD_BYTES
    for path, method in [
        (f"/portal/leads/{lead}/files", "GET"),
        (f"/portal/leads/{lead}/contact", "POST"),
        (f"/portal/leads/{lead}/files/x/delete", "POST"),
        (f"/portal/leads/{lead}/x/files", "POST"),
        ("/portal/files", "POST"),
    ]:
        assert upload_limit("/portal", 10, path, method) is None, path

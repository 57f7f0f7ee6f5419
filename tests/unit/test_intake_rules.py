"""The intake's pure rules: reading a post, the wait, the idempotency key, the API key header, and
the answer a lead's state gives."""

from __future__ import annotations

import hashlib
import hmac
import uuid
from decimal import Decimal

import pytest

from services.intake import rules
from services.intake.rules import BadPost, LeadState, WrongSource
from shared import api_keys


def parse(body: bytes, content_type: str | None = "application/json") -> rules.Post:
    return rules.parse_post(content_type, body, source="web", lead_type="solar")


@pytest.mark.parametrize(
    ("body", "content_type", "fields", "force_id"),
    [
        (b'{"first_name": "Ada"}', "application/json", {"first_name": "Ada"}, None),
        (
            b'{"first_name": "Ada", "force_id": "ACME"}',
            "application/json; charset=utf-8",
            {"first_name": "Ada"},
            "ACME",
        ),
        (b'{"fields": {"a": 1}, "source": "web", "lead_type": "solar"}', None, {"a": 1}, None),
        (b'{"fields": {"a": 1}, "force_id": 7}', "application/vnd.lead+json", {"a": 1}, "7"),
        (b"a=1&b=&force_id=", "application/x-www-form-urlencoded", {"a": "1", "b": ""}, None),
    ],
)
def test_posts_read(body: bytes, content_type: str | None, fields: dict[str, object], force_id: str | None) -> None:
    post = parse(body, content_type)
    assert post.fields == fields
    assert post.force_id == force_id


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"", "application/json", "empty"),
        (b"{", "application/json", "not JSON: Expecting property name enclosed in double quotes at line 1 column 2"),
        (b"[1]", "application/json", "not an array"),
        (b'"x"', "application/json", "not a string"),
        (b"\xff", "application/json", "not UTF-8"),
        (b"<a/>", "application/xml", "unsupported Content-Type"),
        (b"a=1&a=2", "application/x-www-form-urlencoded", "more than once"),
        (b'{"fields": {}, "extra": 1}', "application/json", "unknown top-level key(s) beside 'fields': extra"),
        (b'{"fields": {}, "lead_type": "auto"}', "application/json", "does not match the URL"),
        (b'{"force_id": true}', "application/json", "force_id must be a string"),
        (b'{"callback_url": "ftp://x"}', "application/json", "callback_url must be"),
    ],
)
def test_bad_posts_say_why(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(BadPost) as caught:
        parse(body, content_type)
    assert message in str(caught.value)


def test_a_body_naming_another_source_is_refused() -> None:
    with pytest.raises(WrongSource):
        parse(b'{"fields": {}, "source": "partner"}')


@pytest.mark.parametrize(
    ("query", "prefer", "seconds"),
    [
        (None, None, 2.0),
        ("0", None, 0.0),
        ("3.5", None, 3.5),
        ("99", None, 10.0),
        (None, "wait=4", 4.0),
        (None, "respond-async, wait=1", 1.0),
        ("1", "wait=4", 1.0),
        (None, "handling=lenient", 2.0),
    ],
)
def test_wait(query: str | None, prefer: str | None, seconds: float) -> None:
    assert rules.read_wait(query, prefer) == seconds


@pytest.mark.parametrize("query", ["soon", "-1", "nan"])
def test_bad_wait(query: str) -> None:
    with pytest.raises(BadPost):
        rules.read_wait(query, None)


def test_idempotency_key() -> None:
    assert rules.read_idempotency_key(" k-1 ") == "k-1"
    assert rules.read_idempotency_key(None).startswith("http:")
    for bad in ("", " ", "k" * 201, "a\x00b"):
        with pytest.raises(BadPost):
            rules.read_idempotency_key(bad)


def test_presented_key() -> None:
    assert rules.presented_key("Bearer abc", None) == "abc"
    assert rules.presented_key("bearer  abc ", "zzz") == "abc"
    assert rules.presented_key("Basic abc", "zzz") is None
    assert rules.presented_key(None, "zzz") == "zzz"
    assert rules.presented_key(None, None) is None


def state(status: str | None, **kw: object) -> LeadState:
    return LeadState(uuid.uuid4(), "solar", uuid.uuid4() if status else None, status, **kw)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("status", "code", "poll_code"),
    [
        ("sold", 200, 200),
        ("unsold", 200, 200),
        ("duplicate", 200, 200),
        ("rejected", 422, 200),
        ("routing", 202, 200),
        (None, 202, 200),
    ],
)
def test_answer_codes(status: str | None, code: int, poll_code: int) -> None:
    assert rules.answer(state(status))[0] == code
    assert rules.answer(state(status), polling=True)[0] == poll_code


def test_sold_answer_has_price_and_buyer_count_and_no_reason() -> None:
    _, body = rules.answer(state("sold", price=Decimal("45.00"), buyers=2))
    assert (body["status"], body["price"], body["buyers"]) == ("sold", "45.00", 2)
    assert "reason" not in body and "errors" not in body
    _, pending = rules.answer(state(None))
    assert pending["status"] == "pending" and pending["lead_id"] is None
    assert pending["status_url"] == f"/v1/leads/{pending['receipt_id']}"


def test_tokens() -> None:
    key_id, token = api_keys.new_token("source")
    assert api_keys.parse_token("source", token) == key_id
    assert api_keys.parse_token("buyer", token) is None
    assert api_keys.parse_token("source", token + ".x") is None
    assert api_keys.matches(api_keys.token_hash(token), token)
    assert not api_keys.matches(api_keys.token_hash(token), token[:-1] + "x")
    assert not api_keys.matches(None, token)


def test_test_flag() -> None:
    assert rules.read_test(None) is False and rules.read_test("") is False
    assert rules.read_test("1") and rules.read_test("TRUE") and not rules.read_test("no")
    with pytest.raises(BadPost):
        rules.read_test("maybe")


def test_a_flat_post_may_name_its_own_source_and_lead_type_only() -> None:
    flat = parse(b'{"source": "web", "lead_type": "solar", "a": 1}')
    assert rules.own_claims(flat, source="web", lead_type="solar", field_names=frozenset()).fields == {"a": 1}
    with pytest.raises(WrongSource):
        rules.own_claims(parse(b'{"source": "partner"}'), source="web", lead_type="solar", field_names=frozenset())
    with pytest.raises(BadPost):
        rules.own_claims(parse(b'{"lead_type": "auto"}'), source="web", lead_type="solar", field_names=frozenset())
    # A lead type with a field called source keeps it as a field.
    kept = rules.own_claims(
        parse(b'{"source": "google"}'), source="web", lead_type="solar", field_names=frozenset({"source"})
    )
    assert kept.fields == {"source": "google"}
    # Under "fields", every key is a field.
    nested = parse(b'{"fields": {"source": "x"}}')
    assert rules.own_claims(nested, source="web", lead_type="solar", field_names=frozenset()).fields == {"source": "x"}


@pytest.mark.parametrize(
    ("other_type", "other", "same"),
    [
        ("solar", rules.Post({"phone": "1", "state": "CA"}), True),  # key order does not count
        ("solar", rules.Post({"state": "CA", "phone": "1"}, flat=False), True),  # nor the body's shape
        ("roofing", rules.Post({"state": "CA", "phone": "1"}), False),
        ("solar", rules.Post({"state": "CA", "phone": "2"}), False),
        ("solar", rules.Post({"state": "CA", "phone": 1}), False),  # 1 is not "1"
        ("solar", rules.Post({"state": "CA"}), False),
        ("solar", rules.Post({"state": "CA", "phone": "1"}, force_id="acme"), False),
        ("solar", rules.Post({"state": "CA", "phone": "1"}, callback_url="http://x/"), False),
    ],
)
def test_post_fingerprint(other_type: str, other: rules.Post, same: bool) -> None:
    first = rules.post_fingerprint("solar", rules.Post({"state": "CA", "phone": "1"}))
    assert (rules.post_fingerprint(other_type, other) == first) is same


def test_callback_signature_is_hmac_sha256_over_timestamp_dot_body() -> None:
    # An independent computation (what docs/intake.md tells a receiver to do).
    expected = "sha256=" + hmac.new(b"lwcs_s", b"1764680000.{}", hashlib.sha256).hexdigest()
    assert rules.callback_signature("lwcs_s", 1764680000, b"{}") == expected
    headers = rules.callback_headers("k1", "lwcs_s", 1764680000, b"{}")
    assert headers["Leadwire-Signature"] == expected
    assert (headers["Leadwire-Timestamp"], headers["Leadwire-Key-Id"]) == ("1764680000", "k1")


@pytest.mark.parametrize(
    ("secret", "timestamp", "body"),
    [("lwcs_t", 1764680000, b"{}"), ("lwcs_s", 1764680001, b"{}"), ("lwcs_s", 1764680000, b"{ }")],
)
def test_callback_signature_changes_with_secret_time_and_body(secret: str, timestamp: int, body: bytes) -> None:
    assert rules.callback_signature(secret, timestamp, body) != rules.callback_signature("lwcs_s", 1764680000, b"{}")


def test_a_key_without_a_secret_sends_unsigned_callbacks() -> None:
    headers = rules.callback_headers("k1", None, 1764680000, b"{}")
    assert "Leadwire-Signature" not in headers and headers["Leadwire-Key-Id"] == "k1"

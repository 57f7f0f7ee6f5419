"""Building buyers' requests, judging their answers, and masking the delivery log."""

from __future__ import annotations

import base64
import json
from decimal import Decimal
from urllib.parse import parse_qs

import pytest

from services.delivery import posting
from shared.catalog.model import HttpDelivery

FIELDS = {"first_name": "Ada", "phone": "4155550100", "state": "CA"}
DELIVERY_ID = "6f1c1b8e-5a7e-4d43-9a7b-000000000001"


def config(**kw) -> HttpDelivery:
    return HttpDelivery(url="https://buyer.example/leads", **kw)


def build(cfg: HttpDelivery) -> posting.BuyerRequest:
    return posting.build_request(cfg, FIELDS, lead_id="L1", delivery_id=DELIVERY_ID, price=Decimal("25.00"))


@pytest.mark.parametrize(
    ("kw", "content_type", "decode"),
    [
        ({}, "application/json", json.loads),
        (
            {"format": "form"},
            "application/x-www-form-urlencoded",
            lambda b: {k: v[0] for k, v in parse_qs(b.decode()).items()},
        ),
    ],
)
def test_body_formats_carry_every_field_and_the_lead_id(kw, content_type, decode):
    request = build(config(**kw))
    assert request.method == "POST" and request.headers["Content-Type"] == content_type
    assert decode(request.body) == {**FIELDS, "lead_id": "L1"}


def test_xml_body_escapes_values():
    request = posting.build_request(
        config(format="xml"), {"first_name": "A&B <x>"}, lead_id="L1", delivery_id=DELIVERY_ID, price=Decimal("1")
    )
    assert request.body is not None
    assert b"<first_name>A&amp;B &lt;x&gt;</first_name>" in request.body


def test_field_map_renames_and_may_send_the_price():
    request = build(config(field_map={"fname": "first_name", "cost": "price", "ref": "lead_id"}))
    assert request.body is not None
    assert json.loads(request.body) == {"fname": "Ada", "cost": "25.00", "ref": "L1"}


def test_body_template_escapes_for_its_format():
    request = posting.build_request(
        config(body_template='{"name": "$first_name", "src": "lw"}'),
        {"first_name": 'Ada "the" Countess'},
        lead_id="L1",
        delivery_id=DELIVERY_ID,
        price=Decimal("1"),
    )
    assert request.body is not None
    assert json.loads(request.body) == {"name": 'Ada "the" Countess', "src": "lw"}


def test_get_sends_fields_as_query_parameters_and_no_body():
    request = build(config(http_method="GET"))
    assert request.body is None and request.params["phone"] == "4155550100"


@pytest.mark.parametrize(
    ("auth", "header"),
    [
        (
            {"type": "basic", "username": "u", "password": "pw-secret"},
            "Basic " + base64.b64encode(b"u:pw-secret").decode(),
        ),
        ({"type": "bearer", "token": "tok-secret"}, "Bearer tok-secret"),
    ],
)
def test_auth_headers_and_idempotency_key(auth, header):
    request = build(config(auth=auth, headers={"X-Source": "leadwire"}))
    assert request.headers["Authorization"] == header
    assert request.headers[posting.IDEMPOTENCY_HEADER] == DELIVERY_ID
    assert request.headers["X-Source"] == "leadwire"


OK = '{"status": "accepted", "price": "31.50", "result": {"code": 1}}'


@pytest.mark.parametrize(
    ("kw", "status", "text", "outcome"),
    [
        ({}, 200, OK, "accepted"),
        ({}, 201, "", "accepted"),
        ({}, 400, OK, "rejected"),
        ({}, 500, OK, "transient"),
        ({}, 503, "", "transient"),
        ({}, 429, "", "transient"),
        ({}, 408, "", "transient"),
        ({"success": {"regex": r'"status":\s*"accepted"'}}, 200, OK, "accepted"),
        ({"success": {"regex": r'"status":\s*"accepted"'}}, 200, '{"status": "duplicate"}', "rejected"),
        ({"success": {"contains": "accepted"}}, 200, "REJECTED", "rejected"),
        ({"success": {"json_path": "$.result.code", "json_equals": 1}}, 200, OK, "accepted"),
        ({"success": {"json_path": "result.code", "json_equals": 1}}, 200, '{"result": {"code": 0}}', "rejected"),
        ({"success": {"json_path": "result.code", "json_equals": 1}}, 200, "not json", "rejected"),
        ({"success": {"status_codes": [204]}}, 200, "", "rejected"),
    ],
)
def test_judge_response(kw, status, text, outcome):
    assert posting.judge_response(config(**kw), status, text).outcome == outcome


@pytest.mark.parametrize(
    ("rule", "text", "reason"),
    [
        (
            {"json_path": "error.message"},
            '{"ok": false, "error": {"message": "out of area"}}',
            "buyer rejected: out of area",
        ),
        ({"regex": r"reason=(\w+)"}, "ERR reason=duplicate", "buyer rejected: duplicate"),
        (None, "nope", "buyer rejected: response lacks 'ok'"),
    ],
)
def test_rejection_reason_is_captured(rule, text, reason):
    verdict = posting.judge_response(
        config(success={"contains": '"ok": true'}, rejection_reason=rule)
        if rule
        else config(success={"contains": "ok"}),
        200,
        text,
    )
    assert (verdict.outcome, verdict.reason) == ("rejected", reason)


@pytest.mark.parametrize(
    ("rule", "text", "price", "problem"),
    [
        ({"json_path": "price"}, OK, Decimal("31.50"), None),
        ({"json_path": "$.bid.amount"}, '{"bid": {"amount": 12}}', Decimal("12.00"), None),
        ({"regex": r"price=\$?([\d.,-]+)"}, "OK price=$1,250.5", Decimal("1250.50"), None),
        ({"json_path": "price"}, '{"price": -4}', None, "negative"),
        ({"json_path": "price"}, '{"price": "free"}', None, "not a number"),
        ({"json_path": "price"}, '{"other": 1}', None, None),  # no price: the account's stands
    ],
)
def test_price_found_in_the_response(rule, text, price, problem):
    verdict = posting.judge_response(config(price=rule), 200, text)
    assert verdict.outcome == "accepted" and verdict.price == price
    assert (verdict.price_problem is None) if problem is None else (problem in (verdict.price_problem or ""))


def test_log_masks_auth_custom_secret_headers_and_secret_body_fields():
    cfg = config(
        auth={"type": "basic", "username": "acme", "password": "hunter22"},
        headers={"X-Api-Key": "k-123456", "X-Source": "leadwire"},
        body_template='{"api_key": "tmpl-secret-9", "name": "$first_name", "pin": "4321"}',
        mask_fields=("pin",),
    )
    request = build(cfg)
    text = posting.describe_request(request)
    for secret in ("hunter22", "k-123456", "tmpl-secret-9", "4321", base64.b64encode(b"acme:hunter22").decode()):
        assert secret not in text
    assert "X-Source: leadwire" in text and '"name": "Ada"' in text
    assert f"Idempotency-Key: {DELIVERY_ID}" in text
    # A buyer echoing the secrets back is masked too.
    echoed = posting.masked('{"got": "k-123456", "password": "hunter22"}', request.secrets, request.masked_names)
    assert echoed is not None
    assert "k-123456" not in echoed and "hunter22" not in echoed


@pytest.mark.parametrize(
    ("text", "hidden", "kept"),
    [
        ('{"token": "abc", "n": 1}', "abc", '"n": 1'),
        ('{"access_token":12345}', "12345", "access_token"),
        ("user=ada&password=pw1&state=CA", "pw1", "state=CA"),
        ("GET https://b.example/x?apikey=zz9&zip=94107", "zz9", "zip=94107"),
        ("<lead><secret>s3</secret><zip>94107</zip></lead>", "s3", "<zip>94107</zip>"),
        ("POST https://user:pa55@b.example/x", "pa55", "https://user:"),
        ("Authorization: Bearer t0k\nX-Other: v", "t0k", "X-Other: v"),
    ],
)
def test_mask_by_name(text, hidden, kept):
    out = posting.mask_by_name(text)
    assert hidden not in out and kept in out


def test_log_is_truncated_after_masking():
    out = posting.masked("x" * 5000 + "hunter22", ("hunter22",))
    assert out is not None
    assert len(out) < 4100 and out.endswith("…[truncated]")


@pytest.mark.parametrize(
    ("offered", "price"),
    [("12.345", "12.34"), ("12.355", "12.36"), ("12.005", "12.00"), ("$1,250.5", "1250.50"), (7, "7.00")],
)
def test_confirmed_prices_are_rounded_to_cents_half_to_even(offered, price):
    assert posting.parse_price(offered) == (Decimal(price), None)

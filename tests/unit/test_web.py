"""shared/web.py without I/O: secret path segments masked, security headers on every answer."""

from __future__ import annotations

import logging

import pytest

from shared.web import DEFAULT_SECURITY_HEADERS, MaskSecretsFilter, mask_secrets


@pytest.mark.parametrize(
    ("line", "masked"),
    [
        ("GET /portal/link/abc.def-123 HTTP/1.1", "GET /portal/link/*** HTTP/1.1"),
        ("/portal/reset/tok?next=/x", "/portal/reset/***?next=/x"),
        ("/admin/invite/s3cret", "/admin/invite/***"),
        ("/portal/leads/123", "/portal/leads/123"),
        ("/portal/linked/abc", "/portal/linked/abc"),
    ],
)
def test_secret_path_segments_are_masked(line, masked):
    assert mask_secrets(line) == masked


def test_the_access_log_filter_masks_the_path_argument():
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        "",
        0,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", "/portal/link/tok123", "1.1", 200),
        None,
    )
    MaskSecretsFilter().filter(record)
    assert "tok123" not in record.getMessage()
    assert "/portal/link/***" in record.getMessage()


def test_the_content_security_policy_allows_no_inline_script_and_no_framing():
    csp = DEFAULT_SECURITY_HEADERS["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp
    assert "frame-ancestors 'none'" in csp

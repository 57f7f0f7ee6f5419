"""shared/web.py's pieces for HTML forms, without I/O: CSRF tokens, the same-origin check, error
pages, and the error handlers on a bare FastAPI app (served in-process by httpx)."""

from __future__ import annotations

import httpx
import pytest
from fastapi import FastAPI, HTTPException, Request
from starlette.datastructures import Headers

from shared.web import cross_site, csrf_token, csrf_valid, html_error_page, install_error_pages, url_origin


def test_csrf_tokens_are_bound_to_what_they_protect():
    token = csrf_token("secret", "session:1")
    assert csrf_valid("secret", "session:1", token)
    assert not csrf_valid("secret", "session:2", token)  # another session's token
    assert not csrf_valid("other secret", "session:1", token)
    assert not csrf_valid("secret", "session:1", token[:-1])
    assert not csrf_valid("secret", "session:1", None)
    assert not csrf_valid("secret", "", csrf_token("secret", ""))  # nothing bound: never valid


def request(headers: dict[str, str], url: str = "http://portal.example:8080/portal/login") -> Request:
    scheme, rest = url.split("://")
    host, _, path = rest.partition("/")
    raw = Headers({"host": host, **headers}).raw
    return Request(
        {
            "type": "http",
            "method": "POST",
            "scheme": scheme,
            "path": "/" + path,
            "headers": raw,
            "query_string": b"",
            "server": (host, 80),
        }
    )


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({"sec-fetch-site": "same-origin"}, False),
        ({"sec-fetch-site": "none"}, False),  # typed in the address bar
        ({"sec-fetch-site": "cross-site"}, True),
        ({"sec-fetch-site": "same-site"}, True),  # a sibling subdomain is another site here
        ({"sec-fetch-site": "same-origin", "origin": "null"}, False),  # Referrer-Policy no-referrer
        ({"origin": "http://portal.example:8080"}, False),
        ({"origin": "https://portal.example"}, False),  # the public URL (TLS ends at a proxy)
        ({"origin": "https://evil.example"}, True),
        ({"origin": "null"}, False),  # left to the CSRF token
        ({}, False),  # old browsers, curl: left to the CSRF token
    ],
)
def test_cross_site_requests(headers, refused):
    assert cross_site(request(headers), [url_origin("https://portal.example/portal")]) is refused


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("https://portal.example/portal", "https://portal.example"),
        ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
        ("nope", ""),
    ],
)
def test_url_origins(url, origin):
    assert url_origin(url) == origin


def test_the_plain_error_page_escapes_its_message():
    response = html_error_page(request({}), 404, "<script>alert(1)</script>")
    assert response.status_code == 404
    assert b"<script>" not in response.body and b"&lt;script&gt;" in response.body


async def test_every_error_becomes_a_page_and_no_traceback_leaves():
    app = FastAPI()
    install_error_pages(app, html_error_page)

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("secret internals")

    @app.get("/gone")
    async def gone() -> None:
        raise HTTPException(410, "It went away.", headers={"X-Why": "test"})

    @app.get("/typed/{number}")
    async def typed(number: int) -> int:
        return number

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        boom_response = await client.get("/boom")
        assert boom_response.status_code == 500 and "secret internals" not in boom_response.text
        assert "Something went wrong" in boom_response.text
        gone_response = await client.get("/gone")
        assert gone_response.status_code == 410 and "It went away." in gone_response.text
        assert gone_response.headers["x-why"] == "test"
        unreadable = await client.get("/typed/abc")
        assert unreadable.status_code == 400 and "cannot read" in unreadable.text
        assert unreadable.headers["content-type"].startswith("text/html")
        missing = await client.get("/nothing")
        assert missing.status_code == 404 and missing.headers["content-type"].startswith("text/html")

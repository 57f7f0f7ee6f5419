"""The HTML tiers' shared sign-in plumbing (shared/web_session.py) on a bare app: the sign-in form's
nonce and token, the same-origin check before a form is read, a signed-in form's token bound to
its session, the session cookie's flags, the way back to the sign-in page (htmx too), and the
static files with the one shared copy of htmx behind a tier's own."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from shared.web import static_files
from shared.web_session import FOREIGN_FORM, SignInRequired, WebSessions

pytestmark = pytest.mark.asyncio

SITE = "http://tier.test"


def sessions(public_url: str = f"{SITE}/tier") -> WebSessions:
    return WebSessions(
        session_cookie="lw_t",
        presession_cookie="lw_t_pre",
        csrf_secret="s" * 32,
        public_url=public_url,
        cookie_path="/tier",
        login_path="/tier/login",
    )


def app_for(web: WebSessions) -> FastAPI:
    app = FastAPI()

    @app.exception_handler(SignInRequired)
    async def back_to_sign_in(request: Request, exc: SignInRequired) -> Response:
        return web.sign_in_redirect(request, exc)

    @app.get("/tier/login")
    async def login_page(request: Request) -> Response:
        cookies: dict[str, Any] = {}
        response = JSONResponse({"csrf": web.presession_csrf(request, cookies)})
        web.keep_presession(request, response, cookies)
        return response

    @app.post("/tier/login")
    async def login(request: Request) -> Response:
        _, ok = await web.presession_form(request)
        response = JSONResponse({"ok": ok})
        if ok:
            web.start(request, response, "sid.secret", max_age=600)
        return response

    @app.get("/tier/page")
    async def page(request: Request) -> Response:
        if web.session_token(request) is None:
            raise SignInRequired.of(request, "expired")
        return JSONResponse({"csrf": web.form_token("session:sid")})

    @app.post("/tier/page")
    async def post(request: Request) -> Response:
        if web.session_token(request) is None:
            raise SignInRequired.of(request, None)
        _, ok = await web.session_form(request, "session:sid")
        return JSONResponse({"ok": ok})

    @app.post("/tier/logout")
    async def logout(request: Request) -> Response:
        response = JSONResponse({})
        web.end(request, response)
        return response

    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SITE)


SAME_SITE = {"Sec-Fetch-Site": "same-origin"}


async def test_sign_in_form_token_is_bound_to_its_nonce_cookie_and_the_session_cookie_is_locked_down():
    async with client(app_for(sessions())) as http:
        shown = await http.get("/tier/login")
        set_cookie = shown.headers["set-cookie"]
        assert set_cookie.startswith("lw_t_pre=") and "HttpOnly" in set_cookie and "Path=/tier" in set_cookie
        assert "samesite=lax" in set_cookie.lower() and "Secure" not in set_cookie
        token = shown.json()["csrf"]
        # The same browser keeps its nonce: the token does not change.
        assert (await http.get("/tier/login")).json()["csrf"] == token

        assert (await http.post("/tier/login", data={"csrf": "forged"}, headers=SAME_SITE)).json() == {"ok": False}
        signed_in = await http.post("/tier/login", data={"csrf": token}, headers=SAME_SITE)
        assert signed_in.json() == {"ok": True}
        cookie = signed_in.headers["set-cookie"]
        assert cookie.startswith("lw_t=sid.secret") and "HttpOnly" in cookie and "Max-Age=600" in cookie

        # Another browser (another nonce) cannot use that token.
        async with client(app_for(sessions())) as other:
            await other.get("/tier/login")
            assert (await other.post("/tier/login", data={"csrf": token}, headers=SAME_SITE)).json() == {"ok": False}


async def test_a_form_from_another_site_is_refused_before_it_is_read():
    app = app_for(sessions())

    @app.exception_handler(403)
    async def refused(request: Request, exc: Any) -> Response:
        return JSONResponse({"detail": exc.detail}, status_code=403)

    async with client(app) as http:
        token = (await http.get("/tier/login")).json()["csrf"]
        cross = await http.post("/tier/login", data={"csrf": token}, headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 403 and cross.json()["detail"] == FOREIGN_FORM
        evil = await http.post("/tier/login", data={"csrf": token}, headers={"Origin": "http://evil.test"})
        assert evil.status_code == 403
        # The tier's public origin is ours (behind a proxy it may differ from the request's).
        ours = await http.post("/tier/login", data={"csrf": token}, headers={"Origin": SITE})
        assert ours.json() == {"ok": True}


async def test_signed_in_forms_carry_the_session_bound_token():
    async with client(app_for(sessions())) as http:
        http.cookies.set("lw_t", "sid.secret")
        token = (await http.get("/tier/page")).json()["csrf"]
        assert token == sessions().form_token("session:sid") != sessions().form_token("session:other")
        assert (await http.post("/tier/page", data={"csrf": token}, headers=SAME_SITE)).json() == {"ok": True}
        assert (await http.post("/tier/page", data={}, headers=SAME_SITE)).json() == {"ok": False}
        ended = await http.post("/tier/logout", headers=SAME_SITE)
        assert ended.headers["set-cookie"].startswith('lw_t=""') and "Max-Age=0" in ended.headers["set-cookie"]


async def test_no_session_goes_back_to_sign_in_with_where_from_and_drops_a_dead_cookie():
    async with client(app_for(sessions())) as http:
        plain = await http.get("/tier/page?x=1")
        assert plain.status_code == 303
        assert plain.headers["location"] == "/tier/login?reason=expired&next=%2Ftier%2Fpage%3Fx%3D1"
        htmx = await http.get("/tier/page", headers={"HX-Request": "true"})
        assert htmx.status_code == 200 and htmx.headers["HX-Redirect"].startswith("/tier/login?reason=expired")
        http.cookies.set("lw_t", "x" * 600)  # too long to be a token: no session, and cleared
        long = await http.get("/tier/page")
        assert long.status_code == 303 and long.headers["set-cookie"].startswith('lw_t=""')
        post = await http.post("/tier/page", headers=SAME_SITE)
        assert post.headers["location"] == "/tier/login"  # a POST is not come back to


async def test_cookies_are_secure_when_the_tier_is_served_over_tls():
    async with client(app_for(sessions("https://tier.test/tier"))) as http:
        assert "Secure" in (await http.get("/tier/login")).headers["set-cookie"]


async def test_static_files_serve_the_tier_s_own_then_the_one_shared_htmx(tmp_path: Path):
    (tmp_path / "own.css").write_text("body{}")
    app = FastAPI()
    app.mount("/tier/static", static_files(tmp_path), name="static")
    shared = Path(__file__).parents[2] / "shared" / "static" / "htmx.min.js"
    async with client(app) as http:
        assert (await http.get("/tier/static/own.css")).text == "body{}"
        htmx = await http.get("/tier/static/htmx.min.js")
        assert htmx.status_code == 200
        assert hashlib.sha256(htmx.content).hexdigest() == hashlib.sha256(shared.read_bytes()).hexdigest()
        assert (
            hashlib.sha256(htmx.content).hexdigest()
            == "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"
        )

"""Client Portal, access (A1–A7) in a real browser: the portal under its base path, signing in with
the seller's credentials, the throttle's wait, forgotten password by email, the left navigation,
the avatar menu and signing out, the inactive client and the disabled user at the next click, and
the emailed lead link; plus the cookie, header, CSRF and access-log promises."""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime, timedelta

import pytest

from shared.portal_links import issue_link_token, portal_link
from tests.portal_auth_support import PASSWORD
from tests.portal_support import person, portal_catalog, running_site, sell
from tests.web_support import serve

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]


async def test_a1_the_portal_answers_under_its_base_path_with_its_security_headers(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        health = await page.request.get(f"{site.origin}/healthz")
        assert health.status == 200 and (await health.json())["status"] == "ok"

        response = await page.goto(f"{site.origin}/portal/")
        assert response is not None
        assert page.url == f"{site.url}/login?next=%2Fportal%2Fdashboard"  # the base path leads to sign-in
        headers = response.headers
        assert "script-src 'self'" in headers["content-security-policy"]
        assert "unsafe-inline" not in headers["content-security-policy"]
        assert "frame-ancestors 'none'" in headers["content-security-policy"]
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["cache-control"] == "no-store"
        # htmx is served from here (vendored), never from a CDN.
        assert (await page.request.get(f"{site.url}/static/htmx.min.js")).status == 200
        scripts = await page.eval_on_selector_all("script", "els => els.map(e => e.src)")
        assert scripts and all(src.startswith(f"{site.url}/static/") for src in scripts)
        assert (await page.request.get(f"{site.origin}/other/login")).status == 404


async def test_a2_a3_signing_in_with_the_sellers_credentials_lands_on_the_dashboard(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")  # as `leadwire portal create-user` makes the first user

        await page.goto(f"{site.url}/login")
        await page.fill("#email", "ann@acme.test")
        await page.fill("#password", "not the password")
        await page.click("button[type=submit]")
        assert await page.inner_text(".form-error") == "Wrong email or password."
        assert await page.input_value("#email") == "ann@acme.test"  # kept; the password is not
        assert await page.input_value("#password") == ""

        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_url(f"{site.url}/dashboard")
        assert await page.inner_text("h1") == "Dashboard"
        assert await page.inner_text(".topbar .client") == "Acme Solar"

        [cookie] = [c for c in await page.context.cookies() if c["name"] == "lw_session"]
        assert cookie["httpOnly"] and cookie["sameSite"] == "Lax" and cookie["path"] == "/portal"
        assert not cookie["secure"]  # plain http here; Secure is set when served over TLS
        assert 11 * 3600 < cookie["expires"] - datetime.now(UTC).timestamp() <= 12 * 3600 + 5


async def test_a3_a_wrong_password_shows_portal_auths_throttling_wait(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        await page.goto(f"{site.url}/login")
        messages = []
        for _ in range(3):  # the test config allows 2 free failures, then waits 1 s, 2 s, ...
            await page.fill("#email", "ann@acme.test")
            await page.fill("#password", "wrong password")
            await page.click("button[type=submit]")
            messages.append(await page.inner_text(".form-error"))
        assert messages[:2] == ["Wrong email or password."] * 2
        assert re.fullmatch(r"Too many failed sign-in attempts\. Try again in [12] seconds?\.", messages[2])


async def test_a3_forgot_password_sends_an_email_whose_link_sets_a_new_password(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        await page.goto(f"{site.url}/login")
        await page.click("text=Forgot your password?")
        await page.fill("#email", "ann@acme.test")
        await page.click("button[type=submit]")
        assert "we have emailed it a link" in await page.inner_text(".notice")
        await site.emails(1)
        [mail] = smtp.of_kind("password_reset")
        link = re.search(r"https?://\S+/reset/(\S+)", mail.text())
        assert link is not None
        response = await page.goto(f"{site.url}/reset/{link.group(1)}")
        assert response is not None and response.headers["referrer-policy"] == "no-referrer"

        await page.fill("#password", "a new passphrase here")
        await page.fill("#confirm", "another passphrase")
        await page.click("button[type=submit]")
        assert await page.inner_text("#confirm-error") == "The two passwords are not the same."
        await page.fill("#password", "short")
        await page.fill("#confirm", "short")
        await page.click("button[type=submit]")
        assert "10" in await page.inner_text("#password-error")  # portal_auth's policy, beside the field

        await page.fill("#password", "a new passphrase here")
        await page.fill("#confirm", "a new passphrase here")
        await page.click("button[type=submit]")
        await page.wait_for_url(re.compile(r".*/login\?reason=password_set$"))
        await site.login(page, "ann@acme.test", "a new passphrase here")

        # The link is spent.
        await page.context.clear_cookies()
        await page.goto(f"{site.url}/reset/{link.group(1)}")
        await page.fill("#password", "yet another passphrase")
        await page.fill("#confirm", "yet another passphrase")
        await page.click("button[type=submit]")
        assert "expired or was already used" in await page.inner_text(".form-error")


async def test_a4_the_left_navigation_leads_to_every_page_and_marks_the_current_one(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")  # the first user: an admin
        await site.user("acme", "sam@acme.test")
        await site.login(page, "sam@acme.test")
        nav = page.locator("nav.sidebar")
        everyone = ["Dashboard", "Leads", "Returns", "Orders", "Appointments"]
        assert await nav.locator("li a").all_inner_texts() == everyone  # Users is for admins only
        await page.context.clear_cookies()
        await site.login(page, "ann@acme.test")
        assert await nav.locator("li a").all_inner_texts() == [*everyone, "Users"]
        assert await nav.locator("[aria-current=page]").inner_text() == "Dashboard"
        await nav.locator("text=Leads").click()
        await page.wait_for_url(f"{site.url}/leads")
        assert await nav.locator("[aria-current=page]").inner_text() == "Leads"
        assert await page.inner_text("h1") == "Leads"


async def test_a5_the_avatar_menu_signs_out_here_or_everywhere(browser, page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test", is_admin=True)
        await site.login(page, "ann@acme.test")
        other = await browser.new_context()
        try:
            elsewhere = await other.new_page()
            await site.login(elsewhere, "ann@acme.test")

            # Sign out: this session ends, the other goes on.
            await page.click(".avatar-menu summary")
            assert await page.is_visible("text=ann@acme.test")
            await page.click("text=Sign out >> nth=0")
            await page.wait_for_url(re.compile(r".*/login\?reason=signed_out$"))
            assert await page.inner_text(".info") == "You are signed out."
            assert not [c for c in await page.context.cookies() if c["name"] == "lw_session"]
            await elsewhere.click("nav.sidebar >> text=Leads")
            await elsewhere.wait_for_url(f"{site.url}/leads")

            # Sign out everywhere: the other browser is signed out at its next click.
            await site.login(page, "ann@acme.test")
            await page.click(".avatar-menu summary")
            await page.click("text=Sign out everywhere")
            await page.wait_for_url(re.compile(r".*/login\?reason=signed_out$"))
            await elsewhere.click("nav.sidebar >> text=Dashboard")
            await elsewhere.wait_for_url(re.compile(r".*/login\?reason=ended&next=%2Fportal%2Fdashboard$"))
            assert "Please sign in again" in await elsewhere.inner_text(".info")
        finally:
            await other.close()


async def test_a6_an_inactive_client_is_signed_out_at_the_next_click(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        await site.login(page, "ann@acme.test")
        await site.apply_catalog(portal_catalog(acme_active=False))
        await page.click("nav.sidebar >> text=Leads")
        await page.wait_for_url(re.compile(r".*/login\?reason=inactive&next=%2Fportal%2Fleads$"))
        assert await page.inner_text(".info") == (
            "Portal access for your company is turned off. Please contact your lead provider."
        )
        # Signing in again says the same, once the password is right.
        await page.fill("#email", "ann@acme.test")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        assert "turned off" in await page.inner_text(".form-error")


async def test_a6_a_disabled_user_is_signed_out_at_the_next_click(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "admin@acme.test", is_admin=True)
        carl = await site.user("acme", "carl@acme.test", is_admin=False)
        await site.login(page, "carl@acme.test")
        admin = (await site.auth.login("admin@acme.test", PASSWORD)).session_token
        assert (await site.auth.update_user(admin, carl, enabled=False)).ok

        await page.click("nav.sidebar >> text=Leads")
        await page.wait_for_url(re.compile(r".*/login\?reason=ended&next=%2Fportal%2Fleads$"))
        assert await page.inner_text(".info") == "Your session has ended. Please sign in again."
        await page.fill("#email", "carl@acme.test")
        await page.fill("#password", PASSWORD)
        await page.click("button[type=submit]")
        assert await page.inner_text(".form-error") == (
            "Your user account is disabled. Please ask your company's portal admin."
        )


async def test_a7_an_emailed_link_opens_that_one_lead_read_only(browser, page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(7))
            other = await sell(conn, "acme", person(8))
        secret = mail_settings.portal_link_secret
        now = datetime.now(UTC)
        token = issue_link_token(secret, client_id="acme", lead_id=lead, issued_at=now - timedelta(days=6))
        # The address notifier and delivery put in emails, moved to this test's server.
        link = portal_link(mail_settings.portal_base_url, token).replace("http://127.0.0.1:8080/portal", site.url)

        response = await page.goto(link)
        assert response is not None and response.status == 200
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
        assert await page.inner_text("h1") == "Person7 Surname7"
        assert await page.inner_text("[data-field=phone]") == "4155550007"
        assert "without signing in" in await page.inner_text(".info")
        assert await page.locator("form").count() == 0  # read-only: no actions
        assert await page.locator("nav.sidebar").count() == 0
        # The grant is for that lead only: nothing else opens without a session.
        await page.goto(f"{site.url}/leads/{other}")
        assert page.url.startswith(f"{site.url}/login")

        expired = issue_link_token(secret, client_id="acme", lead_id=lead, issued_at=now - timedelta(days=8))
        response = await page.goto(f"{site.url}/link/{expired}")
        assert response is not None and response.status == 410
        assert await page.inner_text("h1") == "This link has expired"

        tampered = token[:-3] + ("AAA" if not token.endswith("AAA") else "BBB")
        response = await page.goto(f"{site.url}/link/{tampered}")
        assert response is not None and response.status == 404
        assert await page.inner_text("h1") == "This link is not valid"

        # Signed in to the same client: the full lead page. Signed in to another: refused.
        await site.user("acme", "ann@acme.test")
        await site.login(page, "ann@acme.test")
        await page.goto(link)
        await page.wait_for_url(f"{site.url}/leads/{lead}")
        await site.user("bolt", "bea@bolt.test")
        bolt = await browser.new_context()
        try:
            bolt_page = await bolt.new_page()
            await site.login(bolt_page, "bea@bolt.test")
            response = await bolt_page.goto(link)
            assert response is not None and response.status == 404
            assert await bolt_page.inner_text("h1") == "This link is for another account"
            assert "Person7" not in await bolt_page.content()
        finally:
            await bolt.close()


async def test_forms_need_their_csrf_token_and_our_origin(page, mail_settings, smtp):
    async with running_site(mail_settings, smtp) as site:
        await site.user("acme", "ann@acme.test")
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(1))
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        csrf = await page.get_attribute("#forward input[name=csrf]", "value")
        form_id = await page.get_attribute("#forward input[name=notification_id]", "value")
        good = {"csrf": csrf, "notification_id": form_id, "to": "boss@example.com", "note": ""}
        url = f"{site.url}/leads/{lead}/forward"

        no_token = await page.request.post(url, form={**good, "csrf": ""}, max_redirects=0)
        assert no_token.status == 403 and "expired or did not come from this portal" in await no_token.text()
        cross_site = await page.request.post(
            url, form=good, max_redirects=0, headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"}
        )
        assert cross_site.status == 403 and "from another site" in await cross_site.text()
        async with site.db() as conn:
            assert await conn.fetchval("SELECT count(*) FROM portal_activity") == 0
            assert await conn.fetchval("SELECT count(*) FROM outbox WHERE routing_key LIKE 'notify.lead%'") == 0

        # A login form posted without the pre-session cookie's token is refused too (login CSRF).
        fresh = await page.context.browser.new_context()
        try:
            response = await fresh.request.post(
                f"{site.url}/login", form={"email": "ann@acme.test", "password": PASSWORD, "csrf": "forged"}
            )
            assert response.status == 400 and "This form expired" in await response.text()
            assert not [c for c in await fresh.cookies() if c["name"] == "lw_session"]
        finally:
            await fresh.close()

        ok = await page.request.post(url, form=good, max_redirects=0)
        assert ok.status == 303


async def test_tokens_never_reach_the_access_log(mail_settings, smtp, caplog):
    from services.portal.web import create_app

    async with running_site(mail_settings, smtp) as site:
        app = create_app(mail_settings)
        caplog.set_level(logging.INFO, logger="uvicorn.access")
        logging.getLogger("uvicorn.access").propagate = True
        # The same portal served again with uvicorn's access log on, as in production.
        async with serve(app, log_level="info") as origin:
            import httpx

            async with httpx.AsyncClient() as http:
                await http.get(f"{origin}/portal/link/secret-link-token-123")
                await http.get(f"{origin}/portal/reset/secret-reset-token-456")
        lines = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
        assert any("/portal/link/***" in line for line in lines)
        assert any("/portal/reset/***" in line for line in lines)
        assert not any("secret-" in line for line in lines)
        assert site  # the services behind it were running

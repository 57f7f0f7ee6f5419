"""Role enforcement over every route of the admin console and its API, as a table: each role
against each route (from web.console_routes, so a new route is in the table by itself). A role
without the route's permission gets 403 and changes nothing (the database snapshot is the same);
a role with it is never refused; nobody signed in gets the sign-in page (pages) or 401 (API)."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest

from services.admin import rules
from services.admin.auth import SESSION_COOKIE
from services.admin.web import console_routes, route_permission
from shared.web import csrf_token
from tests.admin_support import PASSWORD, AdminSite, running_console

pytestmark = [pytest.mark.integration]

CATALOG = """
lead_types:
  - id: solar
    name: Solar
    fields: [{name: phone, type: phone, required: true}]
clients:
  - {id: acme, name: Acme}
delivery_accounts:
  - id: acme-solar
    client: acme
    lead_type: solar
    price: 10
    delivery: {method: http, url: "http://127.0.0.1:9/x"}
orders:
  - {id: acme-o1, client: acme, type: lead_quantity, total: 10, start_date: 2026-01-01}
"""

# Everything a console change could touch; bookkeeping columns (last use, last seen) left out.
SNAPSHOT_QUERIES = {
    "staff_users": "SELECT id, email, role, enabled, password_hash FROM staff_users",
    "staff_api_keys": "SELECT id, staff_id, name, role, revoked_at FROM staff_api_keys",
    "admin_audit": "SELECT id FROM admin_audit",
    "catalog_versions": "SELECT version, digest FROM catalog_versions",
    "returns": "SELECT id, status, note FROM returns",
    "dead_letters": "SELECT id, resolution FROM dead_letters",
    "delivery_account_state": "SELECT * FROM delivery_account_state",
    "orders": "SELECT id, status, amount_paid FROM orders",
    "order_payments": "SELECT id FROM order_payments",
    "outbox": "SELECT id FROM outbox",
    "portal_users": "SELECT id, email FROM portal_users",
    "clients": "SELECT id, name, active FROM clients",
}


async def snapshot(site: AdminSite) -> dict[str, list[str]]:
    async with site.db() as conn:
        return {
            name: sorted(str(tuple(r.values())) for r in await conn.fetch(query))
            for name, query in SNAPSHOT_QUERIES.items()
        }


async def signed_in(site: AdminSite, email: str) -> tuple[httpx.AsyncClient, str]:
    """An HTTP client with a staff session, and that session's CSRF token."""
    client = site.client()
    page = await client.get("/admin/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    answer = await client.post("/admin/login", data={"csrf": csrf.group(1), "email": email, "password": PASSWORD})
    assert answer.status_code == 303, answer.text
    session_id = client.cookies[SESSION_COOKIE].split(".")[0]
    return client, csrf_token(site.config.csrf_secret, f"staff:{session_id}")


def concrete(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::\w+)?\}", lambda m: values.get(m.group(1), "x"), path)


async def call(
    site: AdminSite, role: str, method: str, path: str, pages: dict[Any, Any], keys: dict[Any, str]
) -> httpx.Response:
    if "/api/v1/" in path:
        async with site.client(keys[role]) as client:
            return await client.request(method, path, json={} if method != "GET" else None)
    client, csrf = pages[role]
    data = {"csrf": csrf} if method != "GET" else None
    return await client.request(method, path, data=data)


# Every route times every role, with a database snapshot around each refusal: several hundred
# calls whose time grows with the console, past the suite's default 120 s on a loaded machine.
@pytest.mark.timeout(900)
async def test_every_route_against_every_role(settings):
    async with running_console(settings) as site:
        await site.apply_catalog(CATALOG)
        ids = {}
        for role in rules.ROLES:
            ids[role] = await site.staff(f"{role}@staff.test", role)
        keys = {role: await site.key(f"{role}@staff.test") for role in rules.ROLES}
        spare = await site.key("owner@staff.test", "viewer")
        pages = {role: await signed_in(site, f"{role}@staff.test") for role in rules.ROLES}
        values = {
            "staff_id": str(ids["viewer"]),
            "key_id": spare.split("_")[2],
            "version": "1",
            "return_id": str(uuid.uuid4()),
            "lead_id": str(uuid.uuid4()),
            "dead_letter_id": "1",
            "account_id": "acme-solar",
            "order_id": "acme-o1",
            "queue": "returns.commands",
            "client_id": "acme",
        }
        routes = [(p, r) for p, r in console_routes("/admin") if route_permission(r) != "public"]
        # Signing out ends the session the rest of the table uses: last.
        routes.sort(key=lambda pr: pr[0] == "/admin/logout")
        assert len(routes) >= 15
        checked = 0
        for role in ("viewer", "operator", "admin", "owner"):
            for path, route in routes:
                permission = route_permission(route)
                assert permission is not None
                for method in sorted(route.methods or ()):
                    url = concrete(path, values)
                    allowed = rules.may(role, permission)  # type: ignore[arg-type]
                    before = await snapshot(site) if not allowed else None
                    answer = await call(site, role, method, url, pages, keys)
                    where = (role, method, url, answer.status_code)
                    if allowed:
                        assert answer.status_code not in (401, 403), where
                        assert answer.status_code < 500, where
                    else:
                        assert answer.status_code == 403, where
                        assert await snapshot(site) == before, where
                    checked += 1
        assert checked >= 4 * len(routes)

        # Nobody signed in: pages send to the sign-in page, the API answers 401.
        async with site.client() as anonymous:
            for path, route in routes:
                for method in sorted(route.methods or ()):
                    answer = await anonymous.request(method, concrete(path, values))
                    if "/api/v1/" in path:
                        assert answer.status_code == 401, (method, path)
                        assert answer.json()["error"] == "unauthorized"
                    else:
                        assert answer.status_code == 303, (method, path)
                        assert answer.headers["location"].startswith("/admin/login")
        for client, _ in pages.values():
            await client.aclose()


async def test_a_revoked_key_or_a_disabled_user_stops_at_the_next_call(settings):
    async with running_console(settings) as site:
        await site.staff("owner@staff.test", "owner")
        admin_id = await site.staff("admin@staff.test", "admin")
        owner_key = await site.key("owner@staff.test")
        admin_key = await site.key("admin@staff.test")
        async with site.client(admin_key) as admin, site.client(owner_key) as owner:
            me = await admin.get("/admin/api/v1/me")
            assert me.status_code == 200 and me.json()["role"] == "admin"
            # Keys are listed with their last use, never with their secret.
            listed = (await admin.get("/admin/api/v1/api-keys")).json()
            assert listed[0]["last_used_at"] is not None and admin_key not in str(listed)
            # An admin cannot make an owner key.
            refused = await admin.post("/admin/api/v1/api-keys", json={"name": "ci", "role": "owner"})
            assert refused.status_code == 400 and "role" in refused.json()["errors"]
            made = await admin.post("/admin/api/v1/api-keys", json={"name": "ci", "role": "viewer"})
            assert made.status_code == 201
            viewer_key = made.json()["key"]
            async with site.client(viewer_key) as viewer:
                assert (await viewer.get("/admin/api/v1/me")).json()["role"] == "viewer"
                revoked = await admin.post(f"/admin/api/v1/api-keys/{made.json()['id']}/revoke")
                assert revoked.status_code == 200
                assert (await viewer.get("/admin/api/v1/me")).status_code == 401
                again = await admin.post(f"/admin/api/v1/api-keys/{made.json()['id']}/revoke")
                assert again.status_code == 409
            # Demoting the user demotes their keys at once; disabling stops them.
            demoted = await owner.put(f"/admin/api/v1/staff/{admin_id}", json={"role": "viewer", "enabled": True})
            assert demoted.status_code == 200
            assert (await admin.get("/admin/api/v1/me")).json()["role"] == "viewer"
            assert (await admin.post("/admin/api/v1/api-keys", json={"name": "x", "role": "viewer"})).status_code == 403
            await owner.put(f"/admin/api/v1/staff/{admin_id}", json={"role": "admin", "enabled": False})
            assert (await admin.get("/admin/api/v1/me")).status_code == 401
            # The last owner stays an owner.
            owner_id = (await owner.get("/admin/api/v1/me")).json()["staff_id"]
            last = await owner.put(f"/admin/api/v1/staff/{owner_id}", json={"role": "admin", "enabled": True})
            assert last.status_code == 400 and "owner" in last.json()["errors"]["role"]
            # Every change is in the audit, with who and how.
            audit = (await owner.get("/admin/api/v1/audit")).json()
            actions = [(e["action"], e["actor"], e["via"]) for e in audit]
            assert ("api_key.revoke", "admin@staff.test", "api") in actions
            assert ("staff.change", "owner@staff.test", "api") in actions
            assert ("staff.create", "cli:test", "cli") in actions

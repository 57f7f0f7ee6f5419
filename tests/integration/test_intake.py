"""HTTP lead intake over real HTTP (uvicorn on a free port), with the real router and delivery
on a real broker and database, and a real HTTP buyer (docs/intake.md)."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid

import asyncpg
import pytest
from aiohttp import web

from harness.buyer import FakeBuyer
from shared import api_keys, db
from shared.settings import Settings
from tests.intake_support import running_intake, solar
from tests.support import wait_for

pytestmark = pytest.mark.integration


async def test_outcome_codes_sold_rejected_unsold_duplicate(settings: Settings, buyer: FakeBuyer) -> None:
    async with running_intake(settings, buyer) as site, site.client(site.web_key) as http:
        sold = await http.post("/v1/leads/solar", json=solar(), headers={"Idempotency-Key": "s-1"})
        assert sold.status_code == 200, sold.text
        body = sold.json()
        assert body["status"] == "sold"
        assert body["price"] == "25.00"
        assert body["buyers"] == 1
        assert "acme" not in sold.text  # buyer identities are never shown
        assert body["status_url"] == f"/v1/leads/{body['lead_id']}"

        rejected = await http.post(
            "/v1/leads/solar", json={"phone": "12", "state": "ZZ", "colour": "red"}, headers={"Idempotency-Key": "r-1"}
        )
        assert rejected.status_code == 422, rejected.text
        errors = {e["field"] for e in rejected.json()["errors"]}
        assert errors == {"first_name", "phone", "state", "colour"}
        assert rejected.json()["status"] == "rejected"

        unsold = await http.post(
            "/v1/leads/auto", json={"first_name": "Ada", "phone": "4155550199"}, headers={"Idempotency-Key": "u-1"}
        )
        assert unsold.status_code == 200, unsold.text
        assert unsold.json()["status"] == "unsold"
        assert unsold.json()["reason"]

        duplicate = await http.post("/v1/leads/solar", json=solar(), headers={"Idempotency-Key": "d-1"})
        assert duplicate.status_code == 200, duplicate.text
        assert duplicate.json()["status"] == "duplicate"
        assert "original_lead_id" not in duplicate.json()

        # The status URL answers the same, for this source only.
        again = await http.get(body["status_url"])
        assert again.status_code == 200 and again.json()["status"] == "sold"
        by_receipt = await http.get(f"/v1/leads/{body['receipt_id']}")
        assert by_receipt.json()["lead_id"] == body["lead_id"]
        async with site.client(site.partner_key) as other:
            assert (await other.get(body["status_url"])).status_code == 404
            assert (await other.get("/v1/leads/not-a-uuid")).status_code == 404


async def test_form_encoded_and_force_id(settings: Settings, buyer: FakeBuyer) -> None:
    async with running_intake(settings, buyer) as site, site.client(site.web_key) as http:
        answer = await http.post(
            "/v1/leads/solar",
            content="first_name=Grace&phone=415-555-0142&state=CA&force_id=BOLT",
            headers={"Content-Type": "application/x-www-form-urlencoded", "Idempotency-Key": "f-1"},
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["price"] == "20.00"  # only bolt, by its external ref
        assert buyer.paths() == ["/bolt"]
        # multipart/form-data with text fields (a (None, value) part is a field, not a file).
        fields = {"first_name": (None, "Alan"), "phone": (None, "415-555-0143"), "state": (None, "CA")}
        multipart = await http.post("/v1/leads/solar", files=fields, headers={"Idempotency-Key": "f-2"})
        assert multipart.status_code == 200, multipart.text
        assert multipart.request.headers["content-type"].startswith("multipart/form-data")
        upload = await http.post("/v1/leads/solar", data={"first_name": "Alan"}, files={"photo": ("a.png", b"x")})
        assert upload.status_code == 400
        # Chunked (no Content-Length): the limit holds as the bytes arrive.

        async def chunks():
            for _ in range(100):
                yield b" " * 65536

        chunked = await http.post("/v1/leads/solar", content=chunks(), headers={"Content-Type": "application/json"})
        assert chunked.status_code == 413
        assert (await http.get("/openapi.json")).status_code == 200


async def test_pending_answers_202_then_the_status_url_decides(settings: Settings, buyer: FakeBuyer) -> None:
    buyer.on("/acme", delay=1.5)
    async with running_intake(settings, buyer) as site, site.client(site.web_key) as http:
        answer = await http.post("/v1/leads/solar?wait=0.2", json=solar(), headers={"Idempotency-Key": "p-1"})
        assert answer.status_code == 202, answer.text
        assert answer.json()["status"] == "pending"
        assert answer.headers["Location"] == answer.json()["status_url"]
        url = answer.json()["status_url"]
        final: dict[str, object] = {}

        async def decided() -> bool:
            final.update((await http.get(url)).json())
            return final["status"] != "pending"

        await wait_for(decided, timeout=20)
        assert final["status"] == "sold"
        # The re-send waits (Prefer) and gets the decided answer, with the same receipt.
        resend = await http.post(
            "/v1/leads/solar", json=solar(), headers={"Idempotency-Key": "p-1", "Prefer": "wait=5"}
        )
        assert resend.status_code == 200
        assert resend.json()["receipt_id"] == answer.json()["receipt_id"]


async def test_twenty_concurrent_posts_with_one_key_make_one_lead(
    settings: Settings, buyer: FakeBuyer, conn: asyncpg.Connection
) -> None:
    async with running_intake(settings, buyer) as site, site.client(site.web_key) as http:
        answers = await asyncio.gather(
            *(
                http.post("/v1/leads/solar?wait=10", json=solar(), headers={"Idempotency-Key": "same-key"})
                for _ in range(20)
            )
        )
        assert {a.status_code for a in answers} == {200}, [a.text for a in answers]
        assert {a.json()["lead_id"] for a in answers} == {answers[0].json()["lead_id"]}
        assert {a.json()["status"] for a in answers} == {"sold"}
        assert await conn.fetchval("SELECT count(*) FROM leads") == 1
        assert await conn.fetchval("SELECT count(*) FROM deliveries") == 1
        assert len(buyer.received) == 1


async def test_one_key_with_another_body_is_a_conflict_even_when_concurrent(
    settings: Settings, buyer: FakeBuyer, conn: asyncpg.Connection
) -> None:
    """Twenty posts at once with one Idempotency-Key, half of them asking for another lead: the
    half that asks for what the first recorded post asked for gets its lead (one lead), the other
    half 409 — and nothing of theirs is sent."""
    async with running_intake(settings, buyer) as site, site.client(site.web_key) as http:
        ada, bob = solar(), solar(first_name="Bob")
        answers = await asyncio.gather(
            *(
                http.post("/v1/leads/solar?wait=10", json=body, headers={"Idempotency-Key": "k-twice"})
                for body in [ada, bob] * 10
            )
        )
        by_body: dict[str, set[int]] = {"ada": set(), "bob": set()}
        for i, answer in enumerate(answers):
            by_body["ada" if i % 2 == 0 else "bob"].add(answer.status_code)
        assert sorted(map(sorted, by_body.values())) == [[200], [409]], [a.text for a in answers]
        won = "ada" if by_body["ada"] == {200} else "bob"
        conflict = next(a for a in answers if a.status_code == 409).json()
        assert conflict["error"] == "conflict" and "k-twice" in conflict["message"]
        assert {a.json()["lead_id"] for a in answers if a.status_code == 200} == {
            answers[0 if won == "ada" else 1].json()["lead_id"]
        }
        assert await conn.fetchval("SELECT count(*) FROM leads") == 1
        assert await conn.fetchval("SELECT fields->>'first_name' FROM leads") == ("Ada" if won == "ada" else "Bob")
        assert len(buyer.received) == 1

        # One at a time: the same body again is the first answer; another body (a field, the lead
        # type in the path, force_id or callback_url) is refused, and the lead stays as it was.
        first = next(a for a in answers if a.status_code == 200).json()
        same = await http.post(
            "/v1/leads/solar", json=ada if won == "ada" else bob, headers={"Idempotency-Key": "k-twice"}
        )
        assert same.status_code == 200 and same.json()["lead_id"] == first["lead_id"]
        assert same.json()["receipt_id"] == first["receipt_id"]
        for changed in (
            {**ada, "phone": "415-555-0111"},
            {**ada, "force_id": "acme"},
            {**ada, "callback_url": "http://127.0.0.1:9/hook"},
        ):
            again = await http.post("/v1/leads/solar", json=changed, headers={"Idempotency-Key": "k-twice"})
            assert again.status_code == 409, again.text
        assert await conn.fetchval("SELECT count(*) FROM leads") == 1
        assert await conn.fetchval("SELECT count(*) FROM intake_posts") == 1


async def test_a_key_posts_as_its_own_source_only(
    settings: Settings, buyer: FakeBuyer, conn: asyncpg.Connection
) -> None:
    async with running_intake(settings, buyer) as site, site.client(site.web_key) as http:
        refused = await http.post(
            "/v1/leads/solar", json={"source": "partner", "fields": solar()}, headers={"Idempotency-Key": "x-1"}
        )
        assert refused.status_code == 403, refused.text
        assert "partner" in refused.json()["message"]
        flat = await http.post(
            "/v1/leads/solar", json={**solar(), "source": "partner"}, headers={"Idempotency-Key": "x-0"}
        )
        assert flat.status_code == 403, flat.text
        # The AMQP body's shape, naming its own source, is accepted.
        same = await http.post(
            "/v1/leads/solar",
            json={"source": "web", "lead_type": "solar", "fields": solar("415-555-0111")},
            headers={"Idempotency-Key": "x-2"},
        )
        assert same.status_code == 200, same.text
        rows = await conn.fetch("SELECT source_id, idempotency_key FROM leads")
        assert [(r["source_id"], r["idempotency_key"]) for r in rows] == [("web", "x-2")]
        # One key, two sources: the same idempotency key is a different lead per source.
        async with site.client(site.partner_key) as partner:
            other = await partner.post(
                "/v1/leads/solar", json=solar("415-555-0112"), headers={"Idempotency-Key": "x-2"}
            )
            assert other.status_code == 200
            assert other.json()["lead_id"] != same.json()["lead_id"]
        assert await conn.fetchval("SELECT source_id FROM leads WHERE id = $1", uuid.UUID(other.json()["lead_id"])) == (
            "partner"
        )


async def test_request_errors(settings: Settings, buyer: FakeBuyer, conn: asyncpg.Connection) -> None:
    async with running_intake(settings, buyer) as site, site.client(site.web_key) as http:
        big = await http.post(
            "/v1/leads/solar",
            content=b"{" + b" " * (5 * 1024 * 1024) + b"}",
            headers={"Content-Type": "application/json"},
        )
        assert big.status_code == 413
        assert big.json()["error"] == "too_large"
        bad = await http.post(
            "/v1/leads/solar", content=b'{"first_name": "Ada",', headers={"Content-Type": "application/json"}
        )
        assert bad.status_code == 400
        assert "not JSON" in bad.json()["message"] and "line 1" in bad.json()["message"]
        array = await http.post("/v1/leads/solar", json=[1, 2])
        assert array.status_code == 400 and "JSON object" in array.json()["message"]
        assert (await http.post("/v1/leads/nosuch", json=solar())).status_code == 404
        assert (await http.post("/v1/leads/solar?wait=soon", json=solar())).status_code == 400
        assert (
            await http.post("/v1/leads/solar", json=solar(), headers={"Idempotency-Key": "k" * 201})
        ).status_code == 400
        xml = await http.post("/v1/leads/solar", content=b"<lead/>", headers={"Content-Type": "application/xml"})
        assert xml.status_code == 400
        async with site.client() as anonymous:
            no_key = await anonymous.post("/v1/leads/solar", json=solar())
            assert no_key.status_code == 401 and no_key.headers["WWW-Authenticate"].startswith("Bearer")
        forged = site.web_key[:-4] + "AAAA"
        async with site.client(forged) as wrong:
            assert (await wrong.post("/v1/leads/solar", json=solar())).status_code == 401
        async with site.client(await site.buyer_key("acme")) as buyer_key:
            assert (await buyer_key.post("/v1/leads/solar", json=solar())).status_code == 401
        # X-Api-Key works as well as the bearer header; a revoked key stops at once.
        token = await site.source_key("web")
        async with site.client(headers={"X-Api-Key": token}) as other:
            ok = await other.post("/v1/leads/solar", json=solar("415-555-0177"), headers={"Idempotency-Key": "ok"})
            assert ok.status_code == 200, ok.text
            assert await api_keys.revoke(conn, "source", api_keys.parse_token("source", token) or "")
            assert (await other.post("/v1/leads/solar", json=solar())).status_code == 401
        assert await conn.fetchval("SELECT count(*) FROM leads") == 1  # nothing else was stored


async def test_rate_limit_per_key_answers_429_with_retry_after(settings: Settings, buyer: FakeBuyer) -> None:
    async with running_intake(settings, buyer) as site:
        slow = await site.source_key("web", rate_per_second=3)
        async with site.client(slow) as http:
            answers = await asyncio.gather(*(http.get(f"/v1/leads/{uuid.uuid4()}") for _ in range(10)))
        codes = [a.status_code for a in answers]
        # Ten requests span at most two one-second windows: at most six get through.
        assert codes.count(429) >= 4 and set(codes) <= {404, 429}
        limited = next(a for a in answers if a.status_code == 429)
        assert int(limited.headers["Retry-After"]) >= 1
        # Another key of the same source has a window of its own.
        async with site.client(site.web_key) as http:
            assert (await http.get(f"/v1/leads/{uuid.uuid4()}")).status_code == 404


async def test_callback_url_is_called_once_with_the_outcome(settings: Settings, buyer: FakeBuyer) -> None:
    async with running_intake(settings, buyer) as site, site.client(site.web_key) as http:
        callback = buyer.url("/callback")
        answer = await http.post(
            "/v1/leads/solar?wait=0", json={**solar(), "callback_url": callback}, headers={"Idempotency-Key": "cb-1"}
        )
        assert answer.status_code in (200, 202)
        await wait_for(lambda: "/callback" in buyer.paths(), timeout=20)
        await asyncio.sleep(1.5)  # two more rounds of the relay: still one call
        calls = [r for r in buyer.received if r.path == "/callback"]
        assert len(calls) == 1
        assert calls[0].json()["status"] == "sold"
        assert calls[0].json()["receipt_id"] == answer.json()["receipt_id"]


class SignedCallbackReceiver:
    """A real HTTP endpoint that verifies callbacks the way docs/intake.md tells a receiver to:
    HMAC-SHA256 with its key's callback secret over `<Leadwire-Timestamp>.<raw body>`, compared in
    constant time, and a timestamp within five minutes. 204 when it verifies, 401 when not."""

    def __init__(self, secrets: dict[str, str]) -> None:
        self.secrets = secrets  # path -> the secret that path verifies with
        self.verified: list[dict[str, object]] = []
        self.refused: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers.get("Leadwire-Timestamp", "")
        signature = request.headers.get("Leadwire-Signature", "")
        secret = self.secrets[request.path].encode()
        expected = "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) < 300
        if not (fresh and hmac.compare_digest(expected, signature)):
            self.refused.append(request.path)
            return web.Response(status=401)
        self.verified.append({"path": request.path, "key_id": request.headers["Leadwire-Key-Id"], **json.loads(body)})
        return web.Response(status=204)


async def test_callbacks_are_signed_with_the_posting_keys_secret(
    settings: Settings, buyer: FakeBuyer, conn: asyncpg.Connection
) -> None:
    key = await api_keys.create_source_key(conn, "web", rate_per_second=1000)
    other = await api_keys.create_source_key(conn, "web", rate_per_second=1000)
    assert key.callback_secret and other.callback_secret and key.callback_secret != other.callback_secret
    receiver = SignedCallbackReceiver({"/right": key.callback_secret, "/wrong": other.callback_secret})
    app = web.Application()
    app.router.add_post("/{tail:.*}", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    server = web.TCPSite(runner, "127.0.0.1", 0)
    await server.start()
    port = server._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        async with running_intake(settings, buyer) as site, site.client(key.token) as http:
            right = await http.post(
                "/v1/leads/solar",
                json={**solar(), "callback_url": f"http://127.0.0.1:{port}/right"},
                headers={"Idempotency-Key": "signed-1"},
            )
            assert right.status_code == 200, right.text
            await wait_for(lambda: bool(receiver.verified), timeout=20)
            [call] = receiver.verified
            assert (call["key_id"], call["status"], call["receipt_id"]) == (
                key.key_id,
                "sold",
                right.json()["receipt_id"],
            )
            # A receiver holding another key's secret cannot verify it: 401, and it is tried again.
            wrong = await http.post(
                "/v1/leads/solar",
                json={**solar("415-555-0142"), "callback_url": f"http://127.0.0.1:{port}/wrong"},
                headers={"Idempotency-Key": "signed-2"},
            )
            assert wrong.status_code == 200, wrong.text
            await wait_for(lambda: "/wrong" in receiver.refused, timeout=20)
        results = dict(await conn.fetch("SELECT idempotency_key, callback_result FROM intake_posts"))
        assert results == {"signed-1": "HTTP 204", "signed-2": "HTTP 401"}
        assert await conn.fetchval(
            "SELECT callback_done_at IS NULL FROM intake_posts WHERE idempotency_key = 'signed-2'"
        )
    finally:
        await runner.cleanup()


async def test_instructions_are_generated_from_the_catalog(settings: Settings, buyer: FakeBuyer) -> None:
    async with running_intake(settings, buyer, services=()) as site, site.client() as http:
        doc = (await http.get("/v1/openapi.json")).json()
        schema = doc["components"]["schemas"]["Lead_solar"]
        assert set(schema["required"]) == {"first_name", "phone", "state"}
        assert schema["properties"]["roof"]["enum"] == ["shingle", "tile", "metal"]
        assert "/v1/leads/auto" in doc["paths"]
        page = await http.get("/v1/lead-types/solar")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        assert "curl" in page.text and "Idempotency-Key" in page.text and "/v1/leads/solar" in page.text
        assert (await http.get("/v1/lead-types/nosuch")).status_code == 404
        assert "/v1/lead-types/auto" in (await http.get("/")).text


async def test_a_database_is_migrated_with_the_key_tables(database_url: str) -> None:
    async with db.connection(database_url) as conn:
        key = await api_keys.create_source_key(conn, "web")
        found = await api_keys.authenticate(conn, "source", key.token)
        assert found is not None and found.owner == "web"
        stored = await conn.fetchval("SELECT token_sha256 FROM source_api_keys WHERE key_id = $1", key.key_id)
        assert key.token.encode() not in stored and len(stored) == 32


async def test_test_mode_validates_and_plans_but_never_sells(
    settings: Settings, buyer: FakeBuyer, conn: asyncpg.Connection
) -> None:
    async with running_intake(settings, buyer) as site:
        test_key = await site.source_key("web", test_mode=True)
        async with site.client(test_key) as http:
            planned = await http.post("/v1/leads/solar?test=0", json=solar(), headers={"Idempotency-Key": "t-1"})
            assert planned.status_code == 200, planned.text
            assert planned.json()["status"] == "would_route" and planned.json()["test"] is True
            assert planned.json()["accounts"] == 2 and planned.json()["lead_id"] is None
            rejected = await http.post("/v1/leads/solar", json={"phone": "1"})
            assert rejected.status_code == 422 and rejected.json()["test"] is True
            assert {e["field"] for e in rejected.json()["errors"]} == {"first_name", "phone", "state"}
            forced = await http.post("/v1/leads/solar", json={**solar(), "force_id": "NOBODY"})
            assert forced.json()["status"] == "unsold" and forced.json()["reason"]
        async with site.client(site.web_key) as http:
            nevada = await http.post("/v1/leads/solar?test=1", json=solar(state="NV"))
            assert nevada.json()["accounts"] == 1  # acme takes no NV leads
        assert await conn.fetchval("SELECT count(*) FROM leads") == 0
        assert await conn.fetchval("SELECT count(*) FROM intake_posts") == 0
        assert buyer.received == []

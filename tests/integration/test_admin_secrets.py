"""Buyers' delivery credentials over the real HTTP API: no role's key ever reads them (an
account's entry, the catalog, a version's document and diff), the masked values sent back keep
the stored secrets (an entry's PUT, the whole catalog's PUT), a new value replaces one, a mask
with nothing stored is refused, and the audit holds none of them."""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from services.admin.masking import MASK
from tests.admin_support import running_console
from tests.portal_support import portal_catalog

pytestmark = [pytest.mark.integration]

SECRETS = ("url-pass-4411", "query-key-4411", "partner-key-4411", "body-token-4411", "basic-pass-4411")
ROLES = ("viewer", "operator", "admin", "owner")


def secret_catalog() -> str:
    """The portal's catalog with acme-solar holding a credential in every secret-bearing field."""
    doc: dict[str, Any] = yaml.safe_load(portal_catalog())
    account = next(a for a in doc["delivery_accounts"] if a["id"] == "acme-solar")
    account["delivery"].update(
        url="https://ann:url-pass-4411@buyer.example/post?campaign=77&api_key=query-key-4411",
        headers={"X-Partner": "partner-key-4411", "Accept": "application/json"},
        body_template='{"name": "$first_name", "token": "body-token-4411"}',
        auth={"type": "basic", "username": "ann", "password": "basic-pass-4411"},
    )
    return yaml.safe_dump(doc)


def assert_masked(text: str) -> None:
    for secret in SECRETS:
        assert secret not in text
    assert MASK in text


async def stored_delivery(site) -> dict[str, Any]:
    async with site.db() as conn:
        spec = await conn.fetchval("SELECT spec FROM delivery_accounts WHERE id = 'acme-solar'")
    return dict(spec["delivery"])


async def test_no_role_reads_a_buyers_credentials_and_masks_keep_them(settings):
    async with running_console(settings) as site:
        await site.apply_catalog(secret_catalog())
        keys = {}
        for role in ROLES:
            await site.staff(f"{role}@staff.test", role)
            keys[role] = await site.key(f"{role}@staff.test")
        original = await stored_delivery(site)
        assert original["auth"]["password"] == "basic-pass-4411"

        async with site.client(keys["admin"]) as admin:
            got = await admin.get(f"{site.api}/accounts/acme-solar")
            entry = got.json()["entry"]
            assert entry["delivery"]["headers"] == {"X-Partner": MASK, "Accept": "application/json"}
            # The entry as read, with one setting changed, PUT back: a new version, secrets kept.
            entry["price"] = "26.00"
            put = await admin.put(f"{site.api}/accounts/acme-solar", json=entry, headers={"If-Match": "1"})
            assert put.status_code == 200, put.text
            assert put.json()["version"] == 2
        kept = await stored_delivery(site)
        assert kept == original

        for role in ROLES:
            async with site.client(keys[role]) as api:
                for path in ("/accounts/acme-solar", "/catalog", "/catalog/versions/1", "/catalog/versions/2"):
                    answer = await api.get(f"{site.api}{path}")
                    assert answer.status_code == 200, (role, path)
                    assert_masked(answer.text)
                audit = await api.get(f"{site.api}/audit")
                assert "account.change" in audit.text
                for secret in SECRETS:
                    assert secret not in audit.text

        async with site.client(keys["owner"]) as owner:
            # The whole catalog as read (masked), sent back unchanged: nothing changes.
            document = (await owner.get(f"{site.api}/catalog")).json()["document"]
            text = yaml.safe_dump(document, sort_keys=False)
            same = await owner.put(f"{site.api}/catalog", json={"yaml": text}, headers={"If-Match": "2"})
            assert same.json() == {"version": 2, "changed": False}, same.text
            # A new value replaces one secret; the masks beside it keep theirs.
            document["delivery_accounts"][0]["delivery"]["headers"]["X-Partner"] = "partner-key-NEW"
            text = yaml.safe_dump(document, sort_keys=False)
            changed = await owner.put(f"{site.api}/catalog", json={"yaml": text}, headers={"If-Match": "2"})
            assert changed.json() == {"version": 3, "changed": True}, changed.text
            now = await stored_delivery(site)
            assert now["headers"]["X-Partner"] == "partner-key-NEW"
            assert {k: v for k, v in now.items() if k != "headers"} == {
                k: v for k, v in original.items() if k != "headers"
            }

            # A mask where nothing is stored is refused, never saved as the credential.
            copy = dict(document["delivery_accounts"][0], id="acme-solar-2")
            document["delivery_accounts"].append(copy)
            text = yaml.safe_dump(document, sort_keys=False)
            refused = await owner.put(f"{site.api}/catalog", json={"yaml": text}, headers={"If-Match": "3"})
            assert refused.status_code == 400
            assert "delivery_accounts[3] (acme-solar-2).delivery.auth.password" in refused.json()["errors"]["yaml"]
            new = {**copy, "delivery": {**copy["delivery"], "headers": {"X-Partner": MASK}}}
            refused = await owner.post(f"{site.api}/accounts", json=new, headers={"If-Match": "3"})
            assert refused.status_code == 400
            assert {"delivery.headers", "delivery.url", "delivery.auth.password"} <= set(refused.json()["errors"])
            async with site.db() as conn:
                assert await conn.fetchval("SELECT max(version) FROM catalog_versions") == 3
                assert MASK not in str(await conn.fetchval("SELECT document FROM catalog_versions WHERE version = 3"))

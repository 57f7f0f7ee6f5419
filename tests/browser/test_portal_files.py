"""Client Portal, the Files tab (D6) in a real browser: upload, list, download and delete attachments
on a lead, stored in PostgreSQL in 1 MiB chunks; 0 bytes, the size limit and one byte more, a type
not on the allow-list, content that is not what its name says, a name with path separators; who
may delete; the per-client switch; another client's lead or file, or a lead the user does not see,
is a 404."""

from __future__ import annotations

import hashlib
import tempfile
import tracemalloc
import uuid
from pathlib import Path

import pytest
import yaml

from tests.portal_support import assign, person, portal_catalog, running_site, sell

pytestmark = [pytest.mark.integration, pytest.mark.browser, pytest.mark.asyncio(loop_scope="session")]

PDF = b"%PDF-1.7\n" + b"quote for the roof, 24 panels\n" * 50 + b"%%EOF\n"
MIB = 1024 * 1024


async def attach(page, name: str, data: bytes, mime: str = "application/octet-stream") -> None:
    with tempfile.TemporaryDirectory() as folder:
        if len(data) > MIB:
            # A large buffer crosses Playwright's pipe base64-encoded, twice: 10 MiB took longer
            # than the 10 s action timeout on a loaded machine. A file on disk goes by its path
            # (and the browser reads it when the form is sent, so it must outlive the click).
            path = Path(folder) / name
            path.write_bytes(data)
            await page.set_input_files("#file", files=[str(path)])
        else:
            await page.set_input_files("#file", files=[{"name": name, "mimeType": mime, "buffer": data}])
        await page.click("#upload-form button[type=submit]")
        await page.wait_for_load_state()


async def listed(page) -> list[str]:
    return await page.locator("#files-table td.name").all_inner_texts()


async def test_d6_upload_list_download_and_delete(page, web_settings, smtp):
    async with running_site(web_settings, smtp) as site:
        await site.user("acme", "admin@acme.test", is_admin=True)
        dana = await site.user("acme", "dana@acme.test", view_downline=True)
        carl = await site.user("acme", "carl@acme.test", parent=dana)
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(1))
            await assign(conn, "acme", lead, carl)
        await site.login(page, "carl@acme.test")
        await page.goto(f"{site.url}/leads/{lead}")
        await page.click("#lead-files")
        await page.wait_for_url(f"{site.url}/leads/{lead}/files")
        assert await page.inner_text("#no-files") == "No files yet."

        await attach(page, "Roof quote.pdf", PDF, "text/html")  # what the browser claims is ignored
        assert page.url == f"{site.url}/leads/{lead}/files?done=uploaded"
        assert await page.inner_text("#files-notice") == "The file was attached."
        assert await listed(page) == ["Roof quote.pdf"]
        row = page.locator("#files-table tbody tr").first
        assert await row.locator(".type").inner_text() == "application/pdf"
        assert await row.locator(".by").inner_text() == "carl"  # the user's name

        file_id = await row.get_attribute("data-file")
        response = await page.request.get(f"{site.url}/leads/{lead}/files/{file_id}")
        assert response.status == 200
        assert await response.body() == PDF
        headers = response.headers
        assert headers["content-type"] == "application/pdf"
        assert headers["content-disposition"] == (
            "attachment; filename=\"Roof quote.pdf\"; filename*=UTF-8''Roof%20quote.pdf"
        )
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["content-security-policy"].startswith("sandbox")
        async with site.db() as conn:
            stored = await conn.fetchrow("SELECT size, sha256, uploaded_by FROM lead_files")
        assert (stored["size"], stored["sha256"], stored["uploaded_by"]) == (
            len(PDF),
            hashlib.sha256(PDF).hexdigest(),
            carl,
        )

        # Dana (carl's upline, View Downline) sees it but did not attach it: no Delete for her.
        await page.context.clear_cookies()
        await site.login(page, "dana@acme.test")
        await page.goto(f"{site.url}/leads/{lead}/files")
        assert await listed(page) == ["Roof quote.pdf"]
        assert await page.locator("#files-table button").count() == 0
        csrf = await page.get_attribute("#upload-form input[name=csrf]", "value")
        refused = await page.request.post(f"{site.url}/leads/{lead}/files/{file_id}/delete", form={"csrf": csrf})
        assert refused.status == 403
        assert "Only the person who attached a file, or an admin" in await refused.text()

        # An admin may delete anyone's file.
        await page.context.clear_cookies()
        await site.login(page, "admin@acme.test")
        await page.goto(f"{site.url}/leads/{lead}/files")
        await page.click(f"tr[data-file='{file_id}'] button")
        await page.wait_for_url(f"{site.url}/leads/{lead}/files?done=deleted")
        assert await page.inner_text("#no-files") == "No files yet."
        async with site.db() as conn:
            assert await conn.fetchval("SELECT count(*) FROM lead_files") == 0
            assert await conn.fetchval("SELECT count(*) FROM lead_file_chunks") == 0
        assert (await page.request.get(f"{site.url}/leads/{lead}/files/{file_id}")).status == 404


async def test_d6_the_uploader_deletes_their_own_file(page, web_settings, smtp):
    async with running_site(web_settings, smtp) as site:
        eve = await site.user("acme", "eve@acme.test")
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(1))
            await assign(conn, "acme", lead, eve)
        await site.login(page, "eve@acme.test")
        await page.goto(f"{site.url}/leads/{lead}/files")
        await attach(page, "notes.txt", "Call back Tuesday — ünïcode ok\n".encode())
        assert await listed(page) == ["notes.txt"]
        await page.click("#files-table button")
        await page.wait_for_url("**/files?done=deleted")
        assert await page.locator("#files-table").count() == 0


async def test_d6_refused_uploads_say_why_and_store_nothing(page, web_settings, smtp):
    async with running_site(web_settings, smtp) as site:
        await site.user("acme", "ann@acme.test", is_admin=True)
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(1))
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{lead}/files")
        limit = site.settings.portal_max_file_bytes
        assert limit == 10 * MIB

        cases = [
            ("empty.pdf", b"", "The file is empty: there is nothing to attach."),
            ("big.txt", b"a" * (limit + 1), "The file is larger than 10.0 MB. Attach a smaller one."),
            ("tool.exe", b"MZ\x90\x00" + b"\x00" * 100, "This type of file cannot be attached."),
            ("page.html", b"<script>alert(1)</script>", "This type of file cannot be attached."),
            ("fake.pdf", b"just some text, not a PDF", "This file's content is not a PDF file, as its name says."),
            ("image.png", PDF, "This file's content is not a PNG image file, as its name says."),
        ]
        for name, data, message in cases:
            await page.goto(f"{site.url}/leads/{lead}/files")
            await attach(page, name, data)
            assert message in await page.inner_text("#file-error"), name
            assert await page.get_attribute("#file", "aria-invalid") == "true"
        async with site.db() as conn:
            assert await conn.fetchval("SELECT count(*) FROM lead_files") == 0
            assert await conn.fetchval("SELECT count(*) FROM lead_file_chunks") == 0

        # Exactly the limit is accepted, stored in 1 MiB chunks.
        await page.goto(f"{site.url}/leads/{lead}/files")
        await attach(page, "limit.txt", b"b" * limit)
        assert await listed(page) == ["limit.txt"]
        async with site.db() as conn:
            chunks = await conn.fetch("SELECT seq, length(data) AS n FROM lead_file_chunks ORDER BY seq")
        assert [c["n"] for c in chunks] == [MIB] * 10

        # A name sent with a path keeps only its last part; the CSRF field is required.
        csrf = await page.get_attribute("#upload-form input[name=csrf]", "value")
        for sent in ("../../etc/quote.pdf", "C:\\Users\\ann\\quote.pdf"):
            response = await page.request.post(
                f"{site.url}/leads/{lead}/files",
                multipart={"csrf": csrf, "file": {"name": sent, "mimeType": "application/pdf", "buffer": PDF}},
                max_redirects=0,
            )
            assert response.status == 303, sent
        response = await page.request.post(
            f"{site.url}/leads/{lead}/files",
            multipart={"file": {"name": "x.pdf", "mimeType": "application/pdf", "buffer": PDF}},
        )
        assert response.status == 403
        response = await page.request.post(
            f"{site.url}/leads/{lead}/files",
            multipart={"csrf": "forged", "file": {"name": "x.pdf", "mimeType": "application/pdf", "buffer": PDF}},
        )
        assert response.status == 403
        async with site.db() as conn:
            names = [r["name"] for r in await conn.fetch("SELECT name FROM lead_files ORDER BY created_at")]
        assert names == ["limit.txt", "quote.pdf", "quote.pdf"]


async def test_d6_files_follow_the_lead_and_the_client_switch(page, web_settings, smtp):
    async with running_site(web_settings, smtp) as site:
        await site.user("acme", "ann@acme.test", is_admin=True)
        eve = await site.user("acme", "eve@acme.test")
        bea = await site.user("bolt", "bea@bolt.test", is_admin=True)
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(1))
            bolts = await sell(conn, "bolt", person(2))
            bolt_file = uuid.uuid4()
            await conn.execute(
                "INSERT INTO lead_files (id, client_id, lead_id, name, content_type, size, sha256, uploaded_by)"
                " VALUES ($1, 'bolt', $2, 'BoltSecret.pdf', 'application/pdf', 3, 'x', $3)",
                bolt_file,
                bolts,
                bea,
            )
            await conn.execute("INSERT INTO lead_file_chunks (file_id, seq, data) VALUES ($1, 0, 'abc')", bolt_file)
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{lead}/files")
        await attach(page, "quote.pdf", PDF)
        acme_file = await page.locator("#files-table tbody tr").first.get_attribute("data-file")
        csrf = await page.get_attribute("#upload-form input[name=csrf]", "value")
        for path in (
            f"/leads/{bolts}/files",
            f"/leads/{bolts}/files/{bolt_file}",
            f"/leads/{lead}/files/{bolt_file}",
            f"/leads/{lead}/files/not-a-uuid",
        ):
            response = await page.request.get(site.url + path)
            assert response.status == 404, path
            assert "BoltSecret" not in await response.text()
        for path in (f"/leads/{bolts}/files/{bolt_file}/delete", f"/leads/{lead}/files/{bolt_file}/delete"):
            assert (await page.request.post(site.url + path, form={"csrf": csrf})).status == 404
        response = await page.request.post(
            f"{site.url}/leads/{bolts}/files",
            multipart={"csrf": csrf, "file": {"name": "x.pdf", "mimeType": "application/pdf", "buffer": PDF}},
        )
        assert response.status == 404
        async with site.db() as conn:
            assert await conn.fetchval("SELECT count(*) FROM lead_files WHERE client_id = 'bolt'") == 1
            assert await conn.fetchval("SELECT count(*) FROM lead_files") == 2

        # Eve does not see the lead (not assigned to her): nor its files.
        await page.context.clear_cookies()
        await site.login(page, "eve@acme.test")
        for path in (f"/leads/{lead}/files", f"/leads/{lead}/files/{acme_file}"):
            assert (await page.request.get(site.url + path)).status == 404
        async with site.db() as conn:
            await assign(conn, "acme", lead, eve)
        assert (await page.request.get(f"{site.url}/leads/{lead}/files/{acme_file}")).status == 200

        # Attachments turned off for the client: no Files tab, every route 404, files kept.
        doc = yaml.safe_load(portal_catalog())
        doc["clients"][0]["options"] = {"portal_file_attachments": False}
        await site.apply_catalog(yaml.safe_dump(doc))
        await page.goto(f"{site.url}/leads/{lead}")
        assert await page.locator("#lead-facts").count() == 1
        assert await page.locator("#lead-files").count() == 0
        for path in (f"/leads/{lead}/files", f"/leads/{lead}/files/{acme_file}"):
            response = await page.request.get(site.url + path)
            assert response.status == 404
            assert "File attachments are not available" in await response.text()
        async with site.db() as conn:
            assert await conn.fetchval("SELECT count(*) FROM lead_files WHERE client_id = 'acme'") == 1


async def test_d6_an_upload_and_a_download_stream_without_holding_the_file(page, web_settings, smtp, tmp_path):
    """The portal runs in this process: Python's allocations while a 10 MiB file goes up and comes
    back stay a small multiple of the 1 MiB chunk, never the file's size."""
    async with running_site(web_settings, smtp) as site:
        await site.user("acme", "ann@acme.test", is_admin=True)
        async with site.db() as conn:
            lead = await sell(conn, "acme", person(1))
        await site.login(page, "ann@acme.test")
        await page.goto(f"{site.url}/leads/{lead}/files")
        path = tmp_path / "big.csv"
        path.write_bytes(b"id,notes\n" + b"1,abcdefghij\n" * (10 * MIB // 13))
        size = path.stat().st_size
        tracemalloc.start()
        try:
            await page.set_input_files("#file", str(path))  # read by the browser, not by Python
            await page.click("#upload-form button[type=submit]")
            await page.wait_for_url("**/files?done=uploaded")
            upload_peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            file_id = await page.locator("#files-table tbody tr").first.get_attribute("data-file")
            async with page.expect_download() as download_info:
                await page.click(f"tr[data-file='{file_id}'] td.name a")
            download = await download_info.value
            saved = await download.path()  # where the browser saved it (no copy through Python)
            download_peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert saved.read_bytes() == path.read_bytes()
        assert download.suggested_filename == "big.csv"
        print(f"10 MiB file: upload peak {upload_peak / MIB:.1f} MiB, download peak {download_peak / MIB:.1f} MiB")
        assert size > 9 * MIB
        assert upload_peak < 6 * MIB and download_peak < 6 * MIB

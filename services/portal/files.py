"""The Files tab (D6): attachments on a lead — upload, list, download, delete.

Files live in PostgreSQL (migration 0610): a `lead_files` row and the content in 1 MiB
`lead_file_chunks`. An upload is parsed as it arrives (python-multipart's streaming parser over
the request body) and each full chunk is written at once, so the portal holds at most about one
chunk of a file in memory; the chunks and the file row commit together at the end, or nothing
does. A download streams the chunks one by one. Only users who can see the lead see its files;
the uploader or an admin may delete one. A client with `portal_file_attachments: false` has no
Files tab (every route here answers 404).
"""

from __future__ import annotations

import asyncio
import hashlib
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse, StreamingResponse
from python_multipart.multipart import MultipartParser, parse_options_header

from services.portal import queries, rules, store
from services.portal.auth import Session, SignedIn, portal_of, refuse_cross_site, session_form
from services.portal.leads import NOT_FOUND, LeadView, lead_view
from services.portal.pages import Portal
from shared.web import csrf_valid

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

router = APIRouter()

FILES_OFF = "File attachments are not available in your portal."
FILE_NOT_FOUND = "There is no such file on this lead."
# Uploads at once per portal process: each holds a database connection while it streams.
UPLOADS_AT_ONCE = 4
# A multipart body carries the file plus its part headers and the CSRF field.
FORM_OVERHEAD_BYTES = 64 * 1024

NOTICES = {"uploaded": "The file was attached.", "deleted": "The file was deleted."}


def install(portal: Portal) -> None:
    """The lead page asks the templates whether to show the Files tab."""
    portal.templates.env.globals["files_enabled"] = lambda client_id: files_enabled(portal, client_id)


def files_enabled(portal: Portal, client_id: str) -> bool:
    return portal.catalog.client_options(client_id).portal_file_attachments


def upload_limit(base_path: str, max_file_bytes: int, path: str, method: str) -> int | None:
    """The request body limit of an upload (the app's BodySizeLimit asks for every request):
    the file's limit plus the form's overhead; None (the app's 64 KB) for anything else."""
    prefix = f"{base_path}/leads/"
    rest = path.removeprefix(prefix)
    if method == "POST" and path.startswith(prefix) and rest.count("/") == 1 and rest.endswith("/files"):
        return max_file_bytes + FORM_OVERHEAD_BYTES
    return None


async def _lead(request: Request, session: Session, lead_id: str) -> LeadView:
    portal = portal_of(request)
    if not files_enabled(portal, session.identity.client_id):
        raise HTTPException(404, FILES_OFF)
    parsed = rules.parse_uuid(lead_id)
    view = await lead_view(portal, session.viewer, parsed) if parsed else None
    if view is None:
        raise HTTPException(404, NOT_FOUND)
    return view


async def _render(
    request: Request,
    session: Session,
    view: LeadView,
    status: int = 200,
    *,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    portal = portal_of(request)
    identity = session.identity
    zone = portal.time_zone(identity.client_id)
    async with portal.pool.acquire() as conn:
        records = await queries.files_of(conn, session.viewer, view.lead_id)
    files = [
        {
            "id": r["id"],
            "name": r["name"],
            "size": rules.file_size_words(r["size"]),
            "type": r["content_type"].split(";")[0],
            "by": r["uploader_name"] or r["uploader_email"],
            "at": rules.format_local(r["created_at"], zone),
            "may_delete": rules.may_delete_file(r["uploaded_by"], identity.user_id, identity.is_admin),
        }
        for r in records
    ]
    return portal.render(
        request,
        "files.html",
        status,
        lead=view,
        files=files,
        notice=notice,
        error=error,
        max_size=rules.file_size_words(portal.settings.portal_max_file_bytes),
        allowed=rules.ALLOWED_FILES,
    )


@router.get("/leads/{lead_id}/files")
async def files_page(request: Request, lead_id: str, session: SignedIn) -> Response:
    view = await _lead(request, session, lead_id)
    return await _render(request, session, view, notice=NOTICES.get(request.query_params.get("done", "")))


# --- Upload ---------------------------------------------------------------------------------------


class UploadRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class _Part:
    headers: dict[bytes, bytes] = field(default_factory=dict)
    header_name: bytes = b""
    header_value: bytes = b""
    field: str = ""
    filename: str | None = None


@dataclass
class UploadStream:
    """The multipart body as it arrives: the `csrf` field's text, then the `file` part's bytes in
    `pending` (drained by the caller chunk by chunk). python-multipart calls these methods
    synchronously from `write`; the caller does the I/O between writes."""

    csrf: bytearray = field(default_factory=bytearray)
    csrf_done: bool = False
    filename: str | None = None  # as sent, once the file part's headers are read
    file_started: bool = False
    file_done: bool = False
    pending: bytearray = field(default_factory=bytearray)
    received: int = 0
    discarding: bool = False  # refused: the rest of the body is read and dropped
    part: _Part = field(default_factory=_Part)

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self._begin,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._data,
            "on_part_end": self._end,
        }

    def _begin(self) -> None:
        self.part = _Part()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.part.header_name += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.part.header_value += data[start:end]

    def _header_end(self) -> None:
        self.part.headers[self.part.header_name.lower()] = self.part.header_value
        self.part.header_name = self.part.header_value = b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self.part.headers.get(b"content-disposition", b""))
        self.part.field = options.get(b"name", b"").decode("utf-8", "replace")
        raw_name = options.get(b"filename")
        if self.part.field == "file" and raw_name is not None and not self.file_started:
            self.part.filename = raw_name.decode("utf-8", "replace")
            self.filename = self.part.filename
            self.file_started = True

    def _data(self, data: bytes, start: int, end: int) -> None:
        if self.part.filename is not None:
            self.received += end - start
            if not self.discarding:
                self.pending += data[start:end]
        elif self.part.field == "csrf" and len(self.csrf) < 512:
            self.csrf += data[start:end]

    def _end(self) -> None:
        if self.part.filename is not None:
            self.file_done = True
            self.part.filename = None
        elif self.part.field == "csrf":
            self.csrf_done = True


@router.post("/leads/{lead_id}/files")
async def upload(request: Request, lead_id: str, session: SignedIn) -> Response:
    """Stream the upload into the database. Every refusal reads the rest of the body first (and
    drops it), so the browser gets the page with the reason rather than a reset connection."""
    portal = portal_of(request)
    refuse_cross_site(request, portal)
    view = await _lead(request, session, lead_id)
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary or len(boundary) > 200:
        return await _render(request, session, view, 400, error="Choose a file to upload.")
    async with _upload_slots(request):
        try:
            await _store_upload(request, session, view, boundary)
        except UploadRefused as refused:
            return await _render(request, session, view, refused.status, error=refused.message)
    return RedirectResponse(portal.url(f"/leads/{view.lead_id}/files", {"done": "uploaded"}), status_code=303)


def _upload_slots(request: Request) -> asyncio.Semaphore:
    """The app's upload slots (one set per app, so per process and event loop)."""
    slots: asyncio.Semaphore | None = getattr(request.app.state, "upload_slots", None)
    if slots is None:
        slots = request.app.state.upload_slots = asyncio.Semaphore(UPLOADS_AT_ONCE)
    return slots


async def _store_upload(request: Request, session: Session, view: LeadView, boundary: bytes) -> None:
    portal = portal_of(request)
    identity = session.identity
    limit = portal.settings.portal_max_file_bytes
    stream = UploadStream()
    parser = MultipartParser(boundary, stream.callbacks())
    file_id = uuid.uuid4()
    digest = hashlib.sha256()
    problem: UploadRefused | None = None
    name: str | None = None
    kind: rules.FileKind | None = None
    stored = seq = 0
    async with portal.pool.acquire() as conn:
        transaction = conn.transaction()
        await transaction.start()
        try:
            async for body in request.stream():
                parser.write(body)
                if problem is None and stream.file_started:
                    problem = _check_start(portal, session, stream)
                    if problem is None and name is None:
                        name, error = rules.clean_file_name(stream.filename or "")
                        if error:
                            problem = UploadRefused(400, error)
                head_known = len(stream.pending) >= rules.FILE_HEAD_BYTES or (stream.file_done and stream.pending)
                if problem is None and name is not None and kind is None and head_known:
                    kind, error = rules.file_kind(name, bytes(stream.pending[: rules.FILE_HEAD_BYTES]))
                    if error:
                        problem = UploadRefused(415, error)
                if problem is None and stream.received > limit:
                    size = rules.file_size_words(limit)
                    problem = UploadRefused(413, f"The file is larger than {size}. Attach a smaller one.")
                if problem is not None:
                    stream.discarding = True
                    stream.pending.clear()
                    continue
                # Write every full chunk now; the last, partial one when the file part ends.
                while len(stream.pending) >= rules.FILE_CHUNK_BYTES or (stream.file_done and stream.pending):
                    piece = bytes(stream.pending[: rules.FILE_CHUNK_BYTES])
                    del stream.pending[: rules.FILE_CHUNK_BYTES]
                    digest.update(piece)
                    await store.add_file_chunk(conn, file_id, seq, piece)
                    stored += len(piece)
                    seq += 1
            parser.finalize()
            if problem is None:
                if not stream.csrf_done or not _csrf_ok(portal, session, stream):
                    problem = UploadRefused(403, "This form has expired. Reload the page and try again.")
                elif not stream.file_started or name is None:
                    problem = UploadRefused(400, "Choose a file to upload.")
                elif stored == 0:
                    problem = UploadRefused(400, "The file is empty: there is nothing to attach.")
            if problem is not None:
                raise problem
            assert kind is not None and name is not None
            await store.add_file(
                conn,
                file_id=file_id,
                client_id=identity.client_id,
                lead_id=view.lead_id,
                name=name,
                content_type=kind.content_type,
                size=stored,
                sha256=digest.hexdigest(),
                uploaded_by=identity.user_id,
                now=portal.clock(),
            )
        except BaseException:
            await transaction.rollback()
            raise
        else:
            await transaction.commit()


def _csrf_ok(portal: Portal, session: Session, stream: UploadStream) -> bool:
    token = bytes(stream.csrf).decode("utf-8", "replace")
    return csrf_valid(portal.settings.portal_csrf_secret, f"session:{session.identity.session_id}", token)


def _check_start(portal: Portal, session: Session, stream: UploadStream) -> UploadRefused | None:
    """When the file part begins: the CSRF field must have come first (the form puts it first)
    and be right, before a byte of the file is stored."""
    if not stream.csrf_done or not _csrf_ok(portal, session, stream):
        return UploadRefused(403, "This form has expired. Reload the page and try again.")
    return None


# --- Download and delete --------------------------------------------------------------------------


@router.get("/leads/{lead_id}/files/{file_id}")
async def download(request: Request, lead_id: str, file_id: str, session: SignedIn) -> Response:
    portal = portal_of(request)
    view = await _lead(request, session, lead_id)
    ident = rules.parse_uuid(file_id)
    async with portal.pool.acquire() as conn:
        record = await queries.file_of(conn, session.viewer, view.lead_id, ident) if ident else None
    if record is None:
        raise HTTPException(404, FILE_NOT_FOUND)
    return StreamingResponse(
        _chunks(portal, session, record["id"]),
        media_type=record["content_type"],
        headers={
            "Content-Disposition": rules.content_disposition(record["name"]),
            "Content-Length": str(record["size"]),
            # Whatever is in the file, a browser that opens it anyway runs nothing of it.
            "Content-Security-Policy": "sandbox; default-src 'none'",
            "X-Content-Type-Options": "nosniff",
        },
    )


async def _chunks(portal: Portal, session: Session, file_id: uuid.UUID) -> AsyncIterator[bytes]:
    """The file's chunks in order, one query (and one pooled connection, briefly) each."""
    seq = 0
    while True:
        async with portal.pool.acquire() as conn:
            data = await queries.file_chunk(conn, session.viewer, file_id, seq)
        if data is None:
            return
        yield data
        seq += 1


@router.post("/leads/{lead_id}/files/{file_id}/delete")
async def delete(request: Request, lead_id: str, file_id: str, session: SignedIn) -> Response:
    portal = portal_of(request)
    await session_form(request, session)
    view = await _lead(request, session, lead_id)
    ident = rules.parse_uuid(file_id)
    identity = session.identity
    async with portal.pool.acquire() as conn, conn.transaction():
        record = await queries.file_of(conn, session.viewer, view.lead_id, ident) if ident else None
        if record is None:
            raise HTTPException(404, FILE_NOT_FOUND)
        if not rules.may_delete_file(record["uploaded_by"], identity.user_id, identity.is_admin):
            return await _render(
                request, session, view, 403, error="Only the person who attached a file, or an admin, can delete it."
            )
        await store.delete_file(conn, identity.client_id, view.lead_id, record["id"])
    return RedirectResponse(portal.url(f"/leads/{view.lead_id}/files", {"done": "deleted"}), status_code=303)

"""The intake's web tier: HTTP lead intake for sources (docs/intake.md) and the buyer API
(docs/buyer-api.md), one FastAPI app per uvicorn worker process.

    uvicorn --factory services.intake.web:create_app --host 0.0.0.0 --port 8082

It runs the intake's `Runtime` (pool, catalog cache, outbox relay, the callback and rate-window
loops) and the process's multiplexed request-reply client (shared/web.py). Nothing about a
request is kept in the process: rate windows, receipts and callbacks are rows in PostgreSQL, so
any number of replicas can stand behind a load balancer.
"""

from __future__ import annotations

import uuid
from typing import Any

import aiohttp
from fastapi import APIRouter, FastAPI, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from services.intake import buyer_api, instructions, rules, usecases
from services.intake.auth import authenticate, deps_of
from shared.service import Runtime
from shared.settings import Settings
from shared.web import create_web_app

# A lead is a few KB at most; anything larger is refused (413) before it is read.
MAX_BODY_BYTES = 64 * 1024
CALLBACK_INTERVAL = 0.5
PRUNE_INTERVAL = 30.0

router = APIRouter()


def json_error(request: Request, status: int, message: str) -> Response:
    if status == 404 and message in ("Not Found", ""):
        message = "no such resource"
    return JSONResponse(rules.error_body(status, message), status_code=status)


async def _multipart(request: Request) -> Any:
    """The text fields of a multipart form (Starlette answers a malformed one, or one with a file,
    with a 400 itself)."""
    return await request.form(max_files=0, max_fields=500)


def _answer(status: int, body: dict[str, Any]) -> JSONResponse:
    headers = {"Location": body["status_url"], "Retry-After": "1"} if status == 202 else None
    return JSONResponse(body, status_code=status, headers=headers)


@router.post("/v1/leads/{lead_type}")
async def post_lead(request: Request, lead_type: str) -> Response:
    key = await authenticate(request, "source")
    deps = deps_of(request)
    if lead_type not in deps.process.catalog.lead_types_by_id:
        raise HTTPException(404, f"there is no lead type {lead_type!r}")
    body = await request.body()
    try:
        wait = rules.read_wait(request.query_params.get("wait"), request.headers.get("prefer"))
        idempotency_key = rules.read_idempotency_key(request.headers.get("idempotency-key"))
        if rules.media_type(request.headers.get("content-type")) == "multipart/form-data":
            post = rules.form_post(list((await _multipart(request)).multi_items()))
        else:
            post = rules.parse_post(request.headers.get("content-type"), body, source=key.owner, lead_type=lead_type)
        post = rules.own_claims(
            post,
            source=key.owner,
            lead_type=lead_type,
            field_names=deps.process.catalog.lead_types_by_id[lead_type].field_names,
        )
        test = key.test_mode or rules.read_test(request.query_params.get("test"))
    except rules.WrongSource as exc:
        raise HTTPException(403, str(exc)) from None
    except rules.BadPost as exc:
        raise HTTPException(400, str(exc)) from None
    if test:
        status, answer = await usecases.test_post(deps, key, lead_type, post)
        return JSONResponse(answer, status_code=status)
    try:
        state = await usecases.post_lead(deps, key, lead_type, post, idempotency_key, wait)
    except usecases.Unavailable as exc:
        raise HTTPException(503, str(exc), headers={"Retry-After": "1"}) from None
    except rules.IdempotencyConflict as exc:
        raise HTTPException(409, str(exc)) from None
    return _answer(*rules.answer(state))


@router.get("/v1/leads/{lead_id}")
async def get_lead(request: Request, lead_id: str) -> Response:
    key = await authenticate(request, "source")
    try:
        some_id = uuid.UUID(lead_id)
    except ValueError:
        raise HTTPException(404, "no such lead") from None
    state = await usecases.lead_for_source(deps_of(request), key, some_id)
    if state is None:
        raise HTTPException(404, "no such lead")
    return _answer(*rules.answer(state, polling=True))


def create_app(settings: Settings | None = None) -> FastAPI:
    runtime = Runtime("intake", settings)
    deps = usecases.Deps(runtime, runtime.topology, rpc=lambda: app.state.rpc)
    http: dict[str, aiohttp.ClientSession] = {}

    async def callbacks() -> int:
        session = http.get("session")
        if session is None or session.closed:
            session = http["session"] = aiohttp.ClientSession()
        return await usecases.call_back(deps, session)

    async def close_http() -> None:
        if "session" in http:
            await http["session"].close()

    runtime.every("intake callbacks", CALLBACK_INTERVAL, callbacks)
    runtime.every("intake rate windows", PRUNE_INTERVAL, lambda: usecases.prune(deps), delay_first=True)
    runtime.on_close(close_http)

    app = create_web_app(
        runtime,
        title="Leadwire lead intake and buyer API",
        render_error=json_error,
        max_body_bytes=MAX_BODY_BYTES,
        openapi_url=None,  # the catalog's document is served at /v1/openapi.json (instructions.py)
    )
    app.state.deps = deps
    app.include_router(router)
    app.include_router(instructions.router)
    app.include_router(buyer_api.router)

    @app.get("/", include_in_schema=False)
    async def index() -> Response:
        return HTMLResponse(instructions.index_page(runtime.catalog), headers={"Cache-Control": "no-store"})

    return app

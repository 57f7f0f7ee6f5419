"""API keys (docs/buyer-api.md), admins only: the client's buyer API keys, a new key (its token
shown once, on the page that creates it; only its SHA-256 is stored) and revoking one. Keys are
written through shared/api_keys.py, their one writer; a key acts for this client only. A
non-admin, and any key id that is not a key of the admin's client, gets 404."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Request, Response
from fastapi.responses import RedirectResponse

from services.portal.auth import Session, SignedIn, portal_of, session_form
from services.portal.pages import field
from shared import api_keys

router = APIRouter()

NOT_FOUND = "There is no such page here."
MAX_LABEL = 100


def _admin(session: Session) -> None:
    if not session.identity.is_admin:
        raise HTTPException(404, NOT_FOUND)


async def _page(
    request: Request,
    session: Session,
    *,
    status: int = 200,
    token: str | None = None,
    errors: dict[str, str] | None = None,
    label: str = "",
    notice: str | None = None,
) -> Response:
    portal = portal_of(request)
    keys = await api_keys.list_keys(portal.pool, "buyer", session.identity.client_id)
    rows: list[dict[str, Any]] = [
        {
            "key_id": k.key_id,
            "label": k.label,
            "created_at": k.created_at.strftime("%Y-%m-%d %H:%M UTC"),
            "revoked": k.revoked_at is not None,
        }
        for k in reversed(keys)
    ]
    return portal.render(
        request,
        "api_keys.html",
        status,
        keys=rows,
        token=token,
        errors=errors or {},
        label=label,
        notice=notice,
    )


@router.get("/api-keys")
async def key_list(request: Request, session: SignedIn) -> Response:
    _admin(session)
    notice = "The key is revoked." if request.query_params.get("saved") == "revoked" else None
    return await _page(request, session, notice=notice)


@router.post("/api-keys")
async def create_key(request: Request, session: SignedIn) -> Response:
    _admin(session)
    form = await session_form(request, session)
    label = " ".join(field(form, "label").split())
    if not label or len(label) > MAX_LABEL or "\x00" in label:
        error = f"Give the key a name of 1 to {MAX_LABEL} characters, like the system that will use it."
        return await _page(request, session, status=400, errors={"label": error}, label=label[:MAX_LABEL])
    portal = portal_of(request)
    key = await api_keys.create_buyer_key(
        portal.pool, session.identity.client_id, label=label, created_by=f"portal:{session.identity.user_id}"
    )
    # Shown once, on this answer only (no redirect that would put it in a URL or a cache).
    return await _page(request, session, token=key.token)


@router.post("/api-keys/{key_id}/revoke")
async def revoke_key(request: Request, key_id: str, session: SignedIn) -> Response:
    _admin(session)
    await session_form(request, session)
    portal = portal_of(request)
    if not await api_keys.revoke(portal.pool, "buyer", key_id[:64], owner=session.identity.client_id):
        raise HTTPException(404, "There is no such live key in your portal.")
    return RedirectResponse(portal.url("/api-keys", {"saved": "revoked"}), status_code=303)

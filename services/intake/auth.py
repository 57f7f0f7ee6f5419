"""Who a request is: the API key it carries (a source's or a buyer's), checked and counted against
its rate."""

from __future__ import annotations

from fastapi import Request
from starlette.exceptions import HTTPException

from services.intake import rules, usecases
from shared import api_keys
from shared.api_keys import KeyKind, KeyRow


def deps_of(request: Request) -> usecases.Deps:
    deps: usecases.Deps = request.app.state.deps
    return deps


async def authenticate(request: Request, kind: KeyKind) -> KeyRow:
    """The live API key of this kind the request carries (401 otherwise), counted against its
    rate (429 with Retry-After when over)."""
    deps = deps_of(request)
    token = rules.presented_key(request.headers.get("authorization"), request.headers.get("x-api-key"))
    key = await api_keys.authenticate(deps.process.pool, kind, token) if token else None
    if key is None:
        raise HTTPException(
            401,
            "a valid API key is required: Authorization: Bearer <key>",
            headers={"WWW-Authenticate": 'Bearer realm="leadwire"'},
        )
    wait = await usecases.over_rate(deps, f"{kind}:{key.key_id}", key.rate_per_second)
    if wait is not None:
        raise HTTPException(
            429,
            f"more than {key.rate_per_second} requests in one second with this key",
            headers={"Retry-After": str(max(1, round(wait + 0.499)))},
        )
    return key

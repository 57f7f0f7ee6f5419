"""portal_auth entrypoint: `faststream run services.portal_auth.main:app`.

One queue, `portal_auth.rpc`, serves every op over request-reply; the handler hands the body to
`usecases.answer`, which validates it against the `op`-discriminated request contract and always
returns a reply (services/portal_auth/client.py is the caller's side).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from services.portal_auth import usecases
from services.portal_auth.config import PortalAuthConfig
from services.portal_auth.credentials import Passwords
from shared.service import Runtime, incoming
from shared.settings import Settings

PRUNE_INTERVAL = 300.0


def _utcnow() -> datetime:
    return datetime.now(UTC)


def build(
    settings: Settings | None = None,
    *,
    config: PortalAuthConfig | None = None,
    clock: Callable[[], datetime] | None = None,
) -> Runtime:
    """`clock` lets tests decide what time it is for expiries and lockouts."""
    runtime = Runtime("portal_auth", settings)
    config = config or PortalAuthConfig()
    deps = usecases.Deps(
        runtime,
        config=config,
        passwords=Passwords(
            time_cost=config.argon2_time_cost,
            memory_cost=config.argon2_memory_kib,
            parallelism=config.argon2_parallelism,
            concurrency=config.hash_concurrency,
        ),
        clock=clock or _utcnow,
    )

    # A body that is not a JSON object fails FastStream's own validation: it is dead-lettered
    # once, and failure routing answers the caller with an ErrorReply (shaped like `Failure`,
    # error "bad_request"). Anything else is answered by the use case.
    @runtime.subscriber("portal_auth.rpc", title="portal_auth: users, sessions, links (RPC)")
    async def on_request(body: dict[str, Any]) -> None:
        raw = incoming()
        reply = await usecases.answer(deps, body, usecases.RequestMeta.from_message(raw.message_id, raw.headers))
        await runtime.reply(raw, reply)

    # A failed round waits for the next one; the first runs one interval after the start.
    runtime.every("prune", PRUNE_INTERVAL, lambda: usecases.prune(deps), delay_first=True)
    return runtime


runtime = build()
app = runtime.app("Client Portal users, sessions, inactive-client lockout and expiring email links.")

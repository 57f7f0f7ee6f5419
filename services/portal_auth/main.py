"""portal_auth entrypoint: `faststream run services.portal_auth.main:app`."""

from __future__ import annotations

from shared.service import Runtime
from shared.settings import Settings


def build(settings: Settings | None = None) -> Runtime:
    return Runtime("portal_auth", settings)


runtime = build()
app = runtime.app()

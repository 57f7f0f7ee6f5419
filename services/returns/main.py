"""returns entrypoint: `faststream run services.returns.main:app`."""

from __future__ import annotations

from shared.service import Runtime
from shared.settings import Settings


def build(settings: Settings | None = None) -> Runtime:
    return Runtime("returns", settings)


runtime = build()
app = runtime.app()

"""notifier entrypoint: `faststream run services.notifier.main:app`."""

from __future__ import annotations

from shared.service import Runtime
from shared.settings import Settings


def build(settings: Settings | None = None) -> Runtime:
    return Runtime("notifier", settings)


runtime = build()
app = runtime.app()

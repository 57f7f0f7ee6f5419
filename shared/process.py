"""What a use case may take from the process it runs in: the database pool, the catalog as it is
now, the settings. A service's `Runtime` is one; a CLI command or a test builds a `Standalone`.

Each service's `usecases.Deps` holds a `Process` and whatever else that service's use cases need
(an HTTP client, a mailer, a clock); `main.py` builds it once and hands it to every use case.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import asyncpg

from shared.catalog.model import Catalog
from shared.settings import Settings


class Process(Protocol):
    @property
    def pool(self) -> asyncpg.Pool: ...

    @property
    def catalog(self) -> Catalog: ...

    @property
    def settings(self) -> Settings: ...


@dataclass(frozen=True)
class Standalone:
    """A `Process` outside a running service: a CLI command's pool and the catalog it loaded."""

    pool: asyncpg.Pool
    catalog: Catalog = field(default_factory=Catalog)
    settings: Settings = field(default_factory=Settings)

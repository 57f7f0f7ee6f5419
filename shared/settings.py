"""Settings read from the environment, with defaults that work on a developer machine.

Every service reads one `Settings` object at start-up; nothing reads os.environ at import time
except the module-level `app` objects that `faststream run` needs.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PREFETCH = 32
SERVICE_PREFETCH = {"delivery": 128}


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="", extra="ignore", populate_by_name=True)

    amqp_url: str = Field("amqp://guest:guest@127.0.0.1:5672/", alias="AMQP_URL")
    database_url: str = Field("postgresql://postgres@127.0.0.1:5432/leadwire", alias="DATABASE_URL")

    # Who declares the broker's topology (shared/topology.py, README "Broker users"): `all`, every
    # process declares the whole of it at start-up (one broker user may do everything, e.g. guest);
    # `own`, a privileged `leadwire broker setup` has declared it and this process only checks
    # that it exists and consumes its own queues (a broker user of its own from `broker users`).
    topology: Literal["all", "own"] = Field("all", alias="LEADWIRE_TOPOLOGY")

    # Seconds one attempt to open a broker connection may take (TCP, AMQP handshake), at start-up
    # and at every reconnection. Without it, a broker that accepts TCP but never completes the
    # handshake (wedged) held an attempt forever: a process never finished starting, or never
    # reconnected even after the broker came back.
    amqp_connect_timeout: float = Field(30.0, alias="LEADWIRE_AMQP_CONNECT_TIMEOUT", gt=0)
    # Seconds a starting process waits for RabbitMQ to accept it (a broker restart under way, a
    # container started before the broker), trying again with backoff, before it gives up and
    # exits. Without it a process started during a broker restart exited at once.
    amqp_startup_wait: float = Field(120.0, alias="LEADWIRE_AMQP_STARTUP_WAIT", ge=0)

    # Prefix for every exchange and queue name. Lets several Leadwire installations (or test runs)
    # share one broker without seeing each other's messages.
    namespace: str = Field("leadwire", alias="LEADWIRE_NAMESPACE")

    # Messages a process takes from each queue at once (unacked). Unset: 32, and 128 for delivery,
    # whose handlers spend most of their time waiting for buyers' answers without a database
    # connection; an account may hold a quarter of them, so a slow buyer that takes concurrent
    # posts gets 32 at a time instead of 8, and falls behind far later.
    prefetch: int | None = Field(None, alias="LEADWIRE_PREFETCH")
    # Adaptive batching of the hot queues (shared/batching.py): at most this many messages of a
    # queue handled in one use-case call and transaction (1: every message alone, as before
    # batching), by at most `batch_concurrency` such calls at once per queue and process.
    batch_limit: int = Field(32, alias="LEADWIRE_BATCH_LIMIT", ge=1)
    batch_concurrency: int = Field(1, alias="LEADWIRE_BATCH_CONCURRENCY", ge=1)
    db_pool_min: int = Field(2, alias="LEADWIRE_DB_POOL_MIN")
    db_pool_max: int = Field(20, alias="LEADWIRE_DB_POOL_MAX")

    # How often the outbox relay and the catalog watcher poll when no NOTIFY arrives (seconds).
    poll_interval: float = Field(0.5, alias="LEADWIRE_POLL_INTERVAL")

    # Retry tiers (seconds) for transient handler failures; after the last one a message is
    # dead-lettered with its error.
    retry_delays: tuple[float, ...] = Field((1.0, 5.0, 30.0), alias="LEADWIRE_RETRY_DELAYS")

    smtp_host: str = Field("127.0.0.1", alias="SMTP_HOST")
    smtp_port: int = Field(1025, alias="SMTP_PORT")
    smtp_username: str | None = Field(None, alias="SMTP_USERNAME")
    smtp_password: str | None = Field(None, alias="SMTP_PASSWORD")
    smtp_starttls: bool = Field(False, alias="SMTP_STARTTLS")
    smtp_tls: bool = Field(False, alias="SMTP_TLS")
    smtp_from: str = Field("leadwire@localhost", alias="SMTP_FROM")
    # Where operational alerts (an auto-paused delivery account, a filled order) are sent.
    admin_email: str = Field("admin@localhost", alias="ADMIN_EMAIL")

    # Signs emailed portal links; must be the same for every portal_auth replica.
    portal_link_secret: str = Field("dev-only-change-me", alias="PORTAL_LINK_SECRET")
    portal_base_url: str = Field("http://127.0.0.1:8080/portal", alias="PORTAL_BASE_URL")
    # Keys the portal's CSRF form tokens; must be the same for every portal replica.
    portal_csrf_secret: str = Field("dev-only-change-me-too", alias="PORTAL_CSRF_SECRET")
    # The largest file a portal user may attach to a lead, in bytes (default 10 MiB).
    portal_max_file_bytes: int = Field(10 * 1024 * 1024, alias="PORTAL_MAX_FILE_BYTES", ge=1, le=1024**3)

    # Observability (docs/operations.md). Metrics: the port this process serves /metrics on
    # (unset: the service's default port, shared/metrics.py DEFAULT_PORTS; 0: any free port;
    # `off`: no metrics endpoint, no FastStream metrics middleware, no sampling).
    metrics_port: str | None = Field(None, alias="LEADWIRE_METRICS_PORT")
    # How often a metrics-serving process samples the outbox, paused accounts and queue depths.
    metrics_interval: float = Field(10.0, alias="LEADWIRE_METRICS_INTERVAL")
    # Log lines: `json` (one JSON object per line) or `text`; and the level.
    log_format: str = Field("json", alias="LEADWIRE_LOG_FORMAT")
    log_level: str = Field("INFO", alias="LEADWIRE_LOG_LEVEL")
    # Traces go to this OTLP/HTTP endpoint (e.g. http://otel-collector:4318); unset: tracing off.
    otlp_endpoint: str | None = Field(None, alias="OTEL_EXPORTER_OTLP_ENDPOINT")

    # Test-only fault injection: the name of a point at which the process kills itself
    # (Runtime.crash_point). Empty in production.
    crash_point: str = Field("", alias="LEADWIRE_CRASH_POINT")

    def prefetch_for(self, service: str) -> int:
        return self.prefetch or SERVICE_PREFETCH.get(service, DEFAULT_PREFETCH)

"""The admin console's own settings (environment variables ADMIN_*), next to the shared Settings."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.portal_auth.rules import LoginPolicy, SessionPolicy


class AdminConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ADMIN_", extra="ignore")

    # Where the console is served; its path is the base path of every page, API route and cookie.
    base_url: str = "http://127.0.0.1:8081/admin"
    # Keys the console's CSRF form tokens; must be the same for every console replica.
    csrf_secret: str = "dev-only-admin-csrf-change-me"
    session_hours: float = Field(12, gt=0)
    session_idle_minutes: float = Field(60, gt=0)
    login_free_attempts: int = Field(5, ge=1)
    login_base_delay_seconds: float = Field(1, gt=0)
    login_max_delay_seconds: float = Field(60, gt=0)
    login_lock_after: int = Field(10, ge=2)
    login_lock_minutes: float = Field(15, gt=0)
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(65536, ge=8192)
    argon2_parallelism: int = Field(4, ge=1)
    hash_concurrency: int = Field(2, ge=1)
    # An API key's last_used_at is written at most this often (seconds), not on every call.
    api_key_touch_seconds: float = Field(60, ge=0)

    @property
    def base_path(self) -> str:
        return urlsplit(self.base_url).path.rstrip("/")

    def login_policy(self) -> LoginPolicy:
        return LoginPolicy(
            free_attempts=self.login_free_attempts,
            base_delay=timedelta(seconds=self.login_base_delay_seconds),
            max_delay=timedelta(seconds=self.login_max_delay_seconds),
            lock_after=self.login_lock_after,
            lock_for=timedelta(minutes=self.login_lock_minutes),
        )

    def session_policy(self) -> SessionPolicy:
        return SessionPolicy(
            lifetime=timedelta(hours=self.session_hours), idle=timedelta(minutes=self.session_idle_minutes)
        )

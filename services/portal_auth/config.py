"""portal_auth's own settings (environment variables PORTAL_*), next to the shared Settings."""

from __future__ import annotations

from datetime import timedelta

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.portal_auth.rules import LoginPolicy, SessionPolicy


class PortalAuthConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PORTAL_", extra="ignore")

    session_hours: float = Field(12, gt=0)
    session_idle_minutes: float = Field(30, gt=0)
    reset_minutes: float = Field(60, gt=0)  # password reset links
    invite_hours: float = Field(72, gt=0)  # first-password links for new users
    login_free_attempts: int = Field(5, ge=1)
    login_base_delay_seconds: float = Field(1, gt=0)
    login_max_delay_seconds: float = Field(60, gt=0)
    login_lock_after: int = Field(10, ge=2)
    login_lock_minutes: float = Field(15, gt=0)
    # argon2id cost (argon2-cffi's defaults, RFC 9106 "low memory"). Raising them rehashes each
    # password at its owner's next login.
    argon2_time_cost: int = Field(3, ge=1)
    argon2_memory_kib: int = Field(65536, ge=8192)
    argon2_parallelism: int = Field(4, ge=1)
    hash_concurrency: int = Field(4, ge=1)

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

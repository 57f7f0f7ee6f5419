"""The SMTP client: hands one email to the configured server and says how a failure should be
treated (retry later, or give up with the server's words)."""

from __future__ import annotations

from email.message import EmailMessage

import aiosmtplib

from services.notifier.rules import smtp_code_is_transient
from shared.contracts.errors import Refused
from shared.service import TransientError
from shared.settings import Settings

# Bounded well below the broker's 15 s graceful timeout, so a stop never waits on a stuck server.
SMTP_TIMEOUT = 10.0


class EmailRefused(Refused):
    """The SMTP server refused the email for good (5xx): retrying will not help."""


class Mailer:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def send(self, message: EmailMessage, recipients: list[str]) -> dict[str, str]:
        """Send; returns the recipients the server refused while accepting the others."""
        s = self.settings
        try:
            refused, _ = await aiosmtplib.send(
                message,
                sender=s.smtp_from,
                recipients=recipients,
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username or None,
                password=s.smtp_password or None,
                use_tls=s.smtp_tls,
                # Explicit, not opportunistic: an operator who did not ask for STARTTLS should not
                # find mail failing on a server's self-signed certificate.
                start_tls=s.smtp_starttls,
                timeout=SMTP_TIMEOUT,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            codes = [r.code for r in exc.recipients]
            text = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
            if any(smtp_code_is_transient(c) for c in codes):
                raise TransientError(f"SMTP server refused every recipient for now: {text}") from exc
            raise EmailRefused(f"SMTP server refused every recipient: {text}") from exc
        except aiosmtplib.SMTPResponseException as exc:
            text = f"SMTP server answered {exc.code} {exc.message}"
            if smtp_code_is_transient(exc.code):
                raise TransientError(text) from exc
            raise EmailRefused(text) from exc
        except (
            aiosmtplib.SMTPServerDisconnected,
            aiosmtplib.SMTPConnectError,
            aiosmtplib.SMTPTimeoutError,
            OSError,
        ) as exc:
            raise TransientError(
                f"SMTP server {s.smtp_host}:{s.smtp_port} unreachable: {type(exc).__name__}: {exc}"
            ) from exc
        return {address: f"{r.code} {r.message}" for address, r in refused.items()}

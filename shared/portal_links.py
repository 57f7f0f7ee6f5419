"""Signed portal links for emails: a token bound to one client and one lead.

The token is `<payload>.<signature>`: payload = base64url(JSON {c: client_id, l: lead_id,
t: issued_at unix seconds}), signature = base64url(HMAC-SHA256(secret, payload)). Delivery signs
links when it emails a lead; portal_auth reads them and decides expiry with the *current* Expire
Portal Email Link option, so shortening the option also shortens links already sent.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class LinkClaims:
    client_id: str
    lead_id: uuid.UUID
    issued_at: datetime


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: str, payload: str) -> str:
    return _b64(hmac.new(secret.encode(), payload.encode(), hashlib.sha256).digest())


def issue_link_token(secret: str, *, client_id: str, lead_id: uuid.UUID, issued_at: datetime) -> str:
    claims = {"c": client_id, "l": str(lead_id), "t": int(issued_at.timestamp())}
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_sign(secret, payload)}"


def read_link_token(secret: str, token: str) -> LinkClaims | None:
    """The claims of an untampered token, or None. Expiry is the caller's decision."""
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        return None
    if not hmac.compare_digest(_sign(secret, payload), signature):
        return None
    try:
        claims = json.loads(_unb64(payload))
        return LinkClaims(str(claims["c"]), uuid.UUID(claims["l"]), datetime.fromtimestamp(int(claims["t"]), UTC))
    except (ValueError, KeyError, TypeError):
        return None


def portal_link(base_url: str, token: str) -> str:
    return f"{base_url.rstrip('/')}/link/{token}"

"""A buyer's disposition of a lead delivered to it: the buyer's own status for the lead in its
"micro CRM" (new, contacted, quoted, won, lost, bad) with a note.

Two surfaces set it, both for the buyer: the buyer API (`PUT /v1/buyer/leads/{id}/disposition`,
services/intake) and the lead's page in the Client Portal (services/portal/disposition.py). One
row per client and lead (table `buyer_lead_dispositions`, migration 0800); the last write wins,
and the row says who wrote it (`api-key:<id>` or `portal-user:<id>`). The SQL lives here, once,
because both services write the same table. A write names the client and succeeds only for a
lead delivered to that client (the portal also checks first that the user's scope shows it).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from shared import sql
from shared.sql import statement

DISPOSITIONS = ("new", "contacted", "quoted", "won", "lost", "bad")
LABELS = {
    "new": "New",
    "contacted": "Contacted",
    "quoted": "Quoted",
    "won": "Won",
    "lost": "Lost",
    "bad": "Bad lead",
}
MAX_NOTE = 2000


@dataclass(frozen=True)
class Disposition:
    disposition: str
    note: str
    updated_by: str | None
    updated_at: datetime
    # Who, for people: the portal user's name or email; "the buyer API" for an API key.
    updated_by_name: str

    @property
    def label(self) -> str:
        return LABELS.get(self.disposition, self.disposition)


def problems(disposition: str, note: str) -> dict[str, str]:
    """What is wrong with a disposition and note as typed (field → message); empty when fine."""
    errors = {}
    if disposition not in DISPOSITIONS:
        errors["disposition"] = "Choose one of: " + ", ".join(LABELS[d] for d in DISPOSITIONS) + "."
    if len(note) > MAX_NOTE:
        errors["note"] = f"The note is {len(note):,} characters; at most {MAX_NOTE:,}."
    elif "\x00" in note:
        errors["note"] = "The note contains a NUL character."
    return errors


async def set_disposition(
    conn: asyncpg.Connection | asyncpg.Pool,
    client_id: str,
    lead_id: uuid.UUID,
    disposition: str,
    note: str,
    updated_by: str,
) -> datetime | None:
    """Set the client's disposition of a lead delivered to it; None (nothing written) when the lead
    is not the client's."""
    at: datetime | None = await sql.fetchval(
        conn,
        statement(
            "INSERT INTO buyer_lead_dispositions (client_id, lead_id, disposition, note, updated_by)"
            " SELECT :client_id, :lead_id, :disposition, :note, :updated_by WHERE EXISTS (SELECT 1 FROM deliveries d"
            " WHERE d.client_id = :client_id AND d.lead_id = :lead_id AND d.status = 'succeeded')"
            " ON CONFLICT (client_id, lead_id) DO UPDATE SET disposition = excluded.disposition, note = excluded.note,"
            " updated_by = excluded.updated_by, updated_at = now() RETURNING updated_at",
            client_id=client_id,
            lead_id=lead_id,
            disposition=disposition,
            note=note,
            updated_by=updated_by,
        ),
    )
    return at


async def disposition_of(
    conn: asyncpg.Connection | asyncpg.Pool, client_id: str, lead_id: uuid.UUID
) -> Disposition | None:
    row = await sql.fetchrow(
        conn,
        statement(
            "SELECT b.disposition, b.note, b.updated_by, b.updated_at,"
            " coalesce(nullif(u.name, ''), u.email) AS user_name"
            " FROM buyer_lead_dispositions b LEFT JOIN portal_users u"
            " ON u.client_id = b.client_id AND b.updated_by = 'portal-user:' || u.id::text"
            " WHERE b.client_id = :client_id AND b.lead_id = :lead_id",
            client_id=client_id,
            lead_id=lead_id,
        ),
    )
    if row is None:
        return None
    by = row["updated_by"] or ""
    name = row["user_name"] or ("the buyer API" if by.startswith("api-key:") else "a former user")
    return Disposition(row["disposition"], row["note"], row["updated_by"], row["updated_at"], name)


def portal_user(user_id: uuid.UUID) -> str:
    """`updated_by` for a write from the Client Portal."""
    return f"portal-user:{user_id}"

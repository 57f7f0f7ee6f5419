"""Lead assignment (Client Portal -> notifier): which portal user a delivered lead belongs to.

The portal owns assignments (table `lead_assignments`) and publishes `lead.assigned` on
`<ns>.events` through its outbox, in the transaction that writes the assignment. notifier reads
it to send the new-lead emails that the assignment makes due: users who are not admins hear of a
lead when it is assigned to them or (with View Downline) to someone below them.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import AwareDatetime, Field

from shared.contracts.base import Contract


class LeadAssigned(Contract):
    version: Literal[1] = 1
    assignment_id: uuid.UUID  # one per write: notifier's inbox key
    client_id: str = Field(min_length=1, max_length=64)
    lead_id: uuid.UUID
    delivery_id: uuid.UUID  # the succeeded delivery of the lead to the client
    user_id: uuid.UUID  # the assignee, a portal user of the client
    previous_user_id: uuid.UUID | None = None
    assigned_by: uuid.UUID | None = None
    assigned_at: AwareDatetime

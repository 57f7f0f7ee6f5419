"""notifier entrypoint: `faststream run services.notifier.main:app`.

One queue, `notifier.requests`, carries three kinds of message; the handler picks the contract by
the routing key the message was published with (kept in `x-original-routing-key` when it comes
back from a retry queue), validates it, and calls one use case.
"""

from __future__ import annotations

from typing import Any

from services.notifier import usecases
from services.notifier.mailer import Mailer
from shared.contracts import AppointmentCancel, AppointmentCreate, AppointmentUpdate, LeadOutcome, NotificationRequested
from shared.service import Runtime, incoming, original_routing_key
from shared.settings import Settings


def build(settings: Settings | None = None) -> Runtime:
    runtime = Runtime("notifier", settings)
    mailer = Mailer(runtime.settings)
    scheduler = usecases.ReminderScheduler(runtime, interval=runtime.settings.poll_interval)
    runtime.add_background(scheduler.run)
    runtime.reminders = scheduler  # type: ignore[attr-defined]  # tests read its counter

    @runtime.subscriber("notifier.requests", title="notifier: emails, new-lead notifications, appointments")
    async def on_request(body: dict[str, Any]) -> None:
        raw = incoming()
        key = original_routing_key(raw)
        message_id = str(raw.message_id or "")
        pool, catalog, s = runtime.pool, runtime.catalog, runtime.settings
        if key.startswith("notify."):
            await usecases.send_notification(
                pool,
                mailer,
                s,
                NotificationRequested.model_validate(body),
                after_send=lambda: runtime.crash_point("notifier.after_send"),
            )
        elif key == "lead.sold":
            await usecases.notify_new_lead(pool, catalog, s, LeadOutcome.model_validate(body), message_id)
        elif key == "appointment.create":
            await usecases.create_appointment(pool, catalog, s, AppointmentCreate.model_validate(body))
        elif key == "appointment.update":
            await usecases.update_appointment(pool, catalog, s, AppointmentUpdate.model_validate(body), message_id)
        elif key == "appointment.cancel":
            await usecases.cancel_appointment(pool, catalog, s, AppointmentCancel.model_validate(body), message_id)
        else:
            raise ValueError(f"notifier has no use for routing key {key!r}")

    return runtime


runtime = build()
app = runtime.app("Sends every Leadwire email once over SMTP, and keeps appointments and their reminders.")

"""notifier entrypoint: `faststream run services.notifier.main:app`.

One queue, `notifier.requests`, carries the kinds of message told apart by the routing key they
were published with: email requests (`notify.<kind>`), sold and assigned leads (`lead.sold`,
`lead.assigned`, for new-lead notifications), decided returns (`return.decided`) and appointment
commands (`appointment.*`); each has its typed handler. Every
notifier process also hands due reminders over, in a background loop.
"""

from __future__ import annotations

from services.notifier import usecases
from services.notifier.mailer import Mailer
from shared.contracts import (
    AppointmentCancel,
    AppointmentCreate,
    AppointmentUpdate,
    LeadAssigned,
    LeadOutcome,
    NotificationRequested,
    ReturnDecided,
)
from shared.service import Runtime, incoming
from shared.settings import Settings


def build(settings: Settings | None = None) -> Runtime:
    runtime = Runtime("notifier", settings)
    mailer = Mailer(runtime.settings)

    with runtime.consumer(
        "notifier.requests", title="notifier: emails, new-lead and return notifications, appointments"
    ) as requests:

        @requests.on("notify.#")
        async def on_notification(request: NotificationRequested) -> None:
            await usecases.send_notification(
                runtime.pool,
                mailer,
                runtime.settings,
                request,
                after_send=lambda: runtime.crash_point("notifier.after_send"),
            )

        @requests.on("lead.sold")
        async def on_lead_sold(outcome: LeadOutcome) -> None:
            await usecases.notify_new_lead(runtime.pool, runtime.catalog, runtime.settings, outcome, _message_id())

        @requests.on("lead.assigned")
        async def on_lead_assigned(event: LeadAssigned) -> None:
            await usecases.notify_assigned_lead(runtime.pool, runtime.catalog, runtime.settings, event, _message_id())

        @requests.on("return.decided")
        async def on_return_decided(event: ReturnDecided) -> None:
            await usecases.notify_return_decided(runtime.pool, runtime.catalog, runtime.settings, event, _message_id())

        # A caller that set reply_to is answered: accepted here, refused by failure routing.
        @requests.on("appointment.create")
        async def on_appointment_create(command: AppointmentCreate) -> None:
            pool, catalog, settings = runtime.pool, runtime.catalog, runtime.settings
            await usecases.create_appointment(pool, catalog, settings, command, caller=_caller())

        @requests.on("appointment.update")
        async def on_appointment_update(command: AppointmentUpdate) -> None:
            pool, catalog, settings = runtime.pool, runtime.catalog, runtime.settings
            await usecases.update_appointment(pool, catalog, settings, command, _message_id(), caller=_caller())

        @requests.on("appointment.cancel")
        async def on_appointment_cancel(command: AppointmentCancel) -> None:
            pool, catalog, settings = runtime.pool, runtime.catalog, runtime.settings
            await usecases.cancel_appointment(pool, catalog, settings, command, _message_id(), caller=_caller())

    runtime.every(
        "reminders",
        runtime.settings.poll_interval,
        lambda: usecases.queue_all_due_reminders(runtime.pool, runtime.catalog, runtime.settings),
    )
    return runtime


def _message_id() -> str:
    return str(incoming().message_id or "")


def _caller() -> usecases.Caller:
    raw = incoming()
    return usecases.Caller(raw.reply_to, raw.correlation_id)


runtime = build()
app = runtime.app("Sends every Leadwire email once over SMTP, and keeps appointments and their reminders.")

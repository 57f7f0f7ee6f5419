"""The rarer metrics, moved by real router, delivery and notifier services (in-process) against
real RabbitMQ, PostgreSQL and SMTP: a buyer auto-paused (counter, sampled gauge, and the alert
email the notifier sends), a cap refusal, a dead letter and its queue's depth. Counters are
process-wide here: the test compares what it reads before and after."""

from __future__ import annotations

from typing import Any

import pytest

from services.delivery.main import build as build_delivery
from services.notifier.main import build as build_notifier
from services.router.main import build as build_router
from shared import metrics
from tests.notifier_support import SmtpSink, free_port, with_smtp
from tests.support import EventTap, apply_yaml, catalog_yaml, lead_body, publish_raw, wait_for

pytestmark = pytest.mark.integration


def value(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def account(buyer, account_id: str, client: str, priority: int, **extra: Any) -> dict[str, Any]:
    delivery = extra.pop("delivery", {})
    return {
        "id": account_id,
        "client": client,
        "lead_type": "solar",
        "price": "10.00",
        "priority": priority,
        "delivery": {
            "method": "http",
            "url": buyer.url(f"/{account_id}"),
            "timeout_seconds": 5,
            "retry": {"count": 0, "delay_seconds": 1},
            **delivery,
        },
        **extra,
    }


@pytest.fixture
def smtp():
    sink = SmtpSink(free_port())
    sink.start()
    yield sink
    sink.stop()


async def test_a_pause_a_cap_refusal_and_a_dead_letter_are_counted(settings, conn, buyer, smtp):
    accounts = [
        account(buyer, "acme-pm", "acme", 0, delivery={"pause_after_failures": 1}),
        account(buyer, "bolt-pm", "bolt", 1, caps={"daily": 1}),
    ]
    await apply_yaml(settings.database_url, catalog_yaml(buyer, delivery_accounts=accounts))
    buyer.on("/acme-pm", status=503, body="busy")
    fast = with_smtp(settings, smtp.port).model_copy(update={"metrics_interval": 0.2, "metrics_port": "0"})
    before = {
        "pauses": value("leadwire_delivery_account_pauses_total", account="acme-pm"),
        "refusals": value("leadwire_router_refusals_total", account="bolt-pm", reason="cap"),
        "dead": value("leadwire_dead_letters_total", queue="router.leads"),
        "transient": value("leadwire_posts_total", account="acme-pm", result="transient"),
        "unsold": value("leadwire_leads_total", source="web", lead_type="solar", outcome="unsold"),
        "alerts": value("leadwire_emails_total", kind="account_paused", result="sent"),
    }
    async with (
        build_router(fast).running(),
        build_delivery(fast).running(),
        build_notifier(fast).running(),
        EventTap(settings, "lead.*") as tap,
    ):
        # acme answers 503: its post fails, and one failure pauses it; bolt buys (its daily cap of 1).
        await publish_raw(settings, lead_body("415-555-0201"), headers={"idempotency-key": "pm-1"})
        await wait_for(lambda: tap.bodies("lead.sold"), timeout=30)
        # acme is paused (skipped), bolt's cap is full (refused): unsold.
        await publish_raw(settings, lead_body("415-555-0202"), headers={"idempotency-key": "pm-2"})
        await wait_for(lambda: tap.bodies("lead.unsold"), timeout=30)
        await publish_raw(settings, b"{not json", headers={"idempotency-key": "pm-3"})
        await wait_for(lambda: conn.fetchval("SELECT count(*) = 1 FROM dead_letters"), timeout=30)
        # The sampler reads the pause from the database.
        await wait_for(lambda: value("leadwire_delivery_accounts_paused") == 1, timeout=10)
        await wait_for(lambda: value("leadwire_outbox_rows") == 0, timeout=10)
        await wait_for(lambda: smtp.of_kind("account_paused"), timeout=20)
        await wait_for(lambda: value("leadwire_emails_total", kind="account_paused", result="sent") > before["alerts"])
        # ... and the dead-letter queue's depth from the broker.
        await wait_for(lambda: value("leadwire_queue_messages", queue="router.leads.dlq") == 1, timeout=10)

    assert value("leadwire_delivery_account_pauses_total", account="acme-pm") - before["pauses"] == 1
    assert value("leadwire_emails_total", kind="account_paused", result="sent") - before["alerts"] == 1
    assert value("leadwire_router_refusals_total", account="bolt-pm", reason="cap") - before["refusals"] == 1
    assert value("leadwire_dead_letters_total", queue="router.leads") - before["dead"] == 1
    assert value("leadwire_posts_total", account="acme-pm", result="transient") - before["transient"] == 1
    assert value("leadwire_leads_total", source="web", lead_type="solar", outcome="unsold") - before["unsold"] == 1
    assert await conn.fetchval("SELECT paused FROM delivery_account_state WHERE delivery_account_id = 'acme-pm'")

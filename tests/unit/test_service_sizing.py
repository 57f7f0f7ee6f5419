"""Per-service sizing: delivery's prefetch and its per-account connection pools."""

from __future__ import annotations

import pytest

from services.delivery import buyers
from services.delivery.buyers import BuyerClients
from shared.settings import Settings


@pytest.mark.parametrize(
    ("configured", "service", "prefetch"),
    [
        (None, "delivery", 128),  # handlers mostly wait on buyers: many slots
        (None, "router", 32),
        (None, "notifier", 32),
        (8, "delivery", 8),  # LEADWIRE_PREFETCH, when set, is every service's
        (8, "router", 8),
    ],
)
def test_prefetch_per_service(configured, service, prefetch):
    assert Settings(LEADWIRE_PREFETCH=configured).prefetch_for(service) == prefetch


async def test_each_delivery_account_has_its_own_connection_pool_and_all_close():
    clients = BuyerClients()
    slow, fast = clients.for_account("slow-post"), clients.for_account("fast-post")
    assert slow is not fast and clients.for_account("slow-post") is slow
    await clients.aclose()
    assert slow.closed and fast.closed
    assert clients.for_account("slow-post") is not slow  # a fresh pool after a close
    await clients.aclose()


@pytest.mark.parametrize(
    ("declared", "charset"),
    [
        (None, "utf-8"),
        ("utf-8", "utf-8"),
        ("ISO-8859-1", "iso8859-1"),
        ("latin1", "iso8859-1"),
        ("no-such-charset", "utf-8"),
    ],
)
def test_a_buyers_answer_is_read_in_its_declared_charset_when_known(declared, charset):
    assert buyers._charset(declared) == charset

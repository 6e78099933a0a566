"""The in-memory ledger keeps only what is open: settled and expired reservations
leave the open set, so a reservation's cost does not grow with every request made."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

from openova_sandbox.services.gateway_ledger import (
    BudgetDefaults,
    BudgetKey,
    GatewayIdentity,
    MemoryLedger,
    UsageRecord,
)

DEV = GatewayIdentity("box", "acme", "sub", "dev@acme.com", "acme")
START = datetime(2026, 12, 6, 10, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> datetime:
        return self.now


def record(cost: str) -> UsageRecord:
    return UsageRecord(
        DEV, "m", "p", "openai-chat", 1, 1, 0, 0, Decimal(cost), 1.0, 200, False, START
    )


async def test_settled_reservations_leave_the_open_set_and_settle_once() -> None:
    ledger = MemoryLedger(clock=Clock())
    ids = [await ledger.reserve(DEV, Decimal("0.01")) for _ in range(100)]
    for reservation_id in ids:
        await ledger.settle(reservation_id, record("0.001"))
    assert not ledger._open
    await ledger.settle(ids[0], record("0.001"))  # a repeat changes nothing
    spent, reserved = ledger.spend_of(BudgetKey("sandbox", "acme", "box"), "2026-12")
    assert (spent, reserved) == (Decimal("0.1"), Decimal(0))


async def test_expiry_releases_the_old_and_forgets_closed_ones_after_a_week() -> None:
    clock = Clock()
    ledger = MemoryLedger(
        clock=clock, defaults=BudgetDefaults(user=Decimal(1)), reservation_ttl=timedelta(hours=1)
    )
    lost = await ledger.reserve(DEV, Decimal(1))
    clock.now = START + timedelta(hours=2)
    kept = await ledger.reserve(DEV, Decimal("0.5"))  # the lost one was released first
    assert list(ledger._open) == [kept]
    assert list(ledger._released) == [lost]
    await ledger.settle(kept, record("0.5"))
    clock.now = START + timedelta(days=8)
    await ledger.reserve(DEV, Decimal(0))
    assert not ledger._released and not ledger._settled

"""The gateway ledger's rules (services/gateway_ledger.py), on every backend: in memory,
SQLite (a file in ``tmp_path``) and a real PostgreSQL server.

``ledgers.open()`` gives a new handle on the same data (SQL: a second engine on the same
database, as a second replica would have), so the restart and concurrency tests say
nothing backend-specific.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from openova_sandbox.domain.errors import BackendUnavailable
from openova_sandbox.domain.ledger import UsageRow, UsageTotals, hash_token
from openova_sandbox.domain.model import Sandbox
from openova_sandbox.services.gateway_ledger import (
    BudgetDefaults,
    BudgetExceeded,
    BudgetKey,
    GatewayIdentity,
    Ledger,
    MemoryLedger,
    UsageQuery,
    UsageRecord,
    usage_report,
)
from openova_sandbox.services.usage import UsageService
from openova_sandbox.store.sql_ledger import SqlLedger
from support.postgres import free_port, fresh_database

BACKENDS = [
    pytest.param("memory", id="memory"),
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]

DEV = GatewayIdentity("aider-dev", "acme", "sub-dev", "Dev@Acme.com", "acme")
DEV2 = GatewayIdentity("qwen-dev", "acme", "sub-dev", "Dev@Acme.com", "acme")
OPS = GatewayIdentity("aider-ops", "acme", "sub-ops", "ops@acme.com", "acme")
OTHER = GatewayIdentity("aider-x", "globex", "sub-x", "x@globex.com", "globex")
START = datetime(2026, 11, 30, 23, 0, tzinfo=UTC)


class Clock:
    def __init__(self, now: datetime = START) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class Ledgers:
    """Opens ledgers of one backend over one shared location; closes them all."""

    def __init__(self, backend: str, url: str | None) -> None:
        self.backend = backend
        self.url = url
        self.clock = Clock()
        self._memory: MemoryLedger | None = None
        self._opened: list[Ledger] = []

    async def open(self, **options: Any) -> Ledger:
        options.setdefault("clock", self.clock)
        ledger: Ledger
        if self.url is None:
            if self._memory is None:
                self._memory = MemoryLedger(**options)
            elif "defaults" in options:
                self._memory.defaults = options["defaults"]
            ledger = self._memory
        else:
            ledger = SqlLedger(self.url, **options)
        await ledger.start()
        self._opened.append(ledger)
        return ledger

    async def close_all(self) -> None:
        for ledger in reversed(self._opened):
            await ledger.close()


@pytest.fixture(params=BACKENDS)
async def ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledgers]:
    url: str | None = None
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'sandbox.db'}"
    elif request.param == "postgres":
        url = await fresh_database(request.getfixturevalue("postgres_url"))
    opened = Ledgers(request.param, url)
    yield opened
    await opened.close_all()


def record(
    identity: GatewayIdentity,
    cost: str,
    *,
    at: datetime = START,
    model: str = "gpt-4.1-mini",
    tokens: tuple[int, int] = (100, 20),
    status: int = 200,
) -> UsageRecord:
    return UsageRecord(
        identity=identity,
        model=model,
        provider="openai",
        api="openai-chat",
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        cache_read_tokens=3,
        cache_write_tokens=1,
        cost_usd=Decimal(cost),
        latency_ms=12.5,
        status=status,
        stream=True,
        started_at=at,
    )


def key(scope: str, name: str, namespace: str = "acme") -> BudgetKey:
    return BudgetKey(scope, namespace, name)  # type: ignore[arg-type]


async def state(ledger: Ledger, k: BudgetKey) -> tuple[Decimal | None, Decimal, Decimal, str]:
    (found,) = await ledger.budgets([k])
    return found.limit_usd, found.spent_usd, found.reserved_usd, found.source


# --- tokens ---------------------------------------------------------------------------


async def test_tokens_authenticate_until_replaced_or_revoked(ledgers: Ledgers) -> None:
    ledger = await ledgers.open()
    first = await ledger.issue_token(DEV)
    other = await ledger.issue_token(OPS)
    assert first.startswith("sk-sandbox-") and len(first) > 40
    assert await ledger.authenticate(first) == DEV
    second = await ledger.issue_token(DEV)
    assert second != first
    assert await ledger.authenticate(first) is None  # replaced
    assert await ledger.authenticate(second) == DEV
    await ledger.revoke("acme", "aider-dev")
    await ledger.revoke("acme", "aider-dev")  # idempotent
    assert await ledger.authenticate(second) is None
    assert await ledger.authenticate(other) == OPS  # others untouched
    assert await ledger.authenticate("") is None
    assert await ledger.authenticate("sk-sandbox-made-up") is None


async def test_tokens_survive_a_restart_and_are_stored_hashed(
    ledgers: Ledgers, tmp_path: Path
) -> None:
    if ledgers.url is None:
        pytest.skip("the memory ledger keeps nothing across restarts")
    ledger = await ledgers.open()
    token = await ledger.issue_token(DEV)
    await ledger.close()
    again = await ledgers.open()
    assert await again.authenticate(token) == DEV
    if ledgers.backend == "sqlite":
        files = list((tmp_path / "data").iterdir())
        blob = b"".join(path.read_bytes() for path in files)
        assert token.encode() not in blob
        assert hash_token(token).encode() in blob


# --- reserve and settle ---------------------------------------------------------------


async def test_reserve_then_settle_moves_the_real_cost_to_spent(ledgers: Ledgers) -> None:
    ledger = await ledgers.open()
    reservation = await ledger.reserve(DEV, Decimal("0.50"))
    for k in DEV.budget_keys():
        assert await state(ledger, k) == (None, Decimal(0), Decimal("0.5"), "default")
    await ledger.settle(reservation, record(DEV, "0.123456789"))
    for k in DEV.budget_keys():
        assert await state(ledger, k) == (None, Decimal("0.123456789"), Decimal(0), "default")
    # the user key is the email, lowercased
    assert DEV.budget_keys()[1] == key("user", "dev@acme.com")


async def test_settle_twice_counts_once(ledgers: Ledgers) -> None:
    ledger = await ledgers.open()
    reservation = await ledger.reserve(DEV, Decimal("1"))
    await ledger.settle(reservation, record(DEV, "0.25"))
    await ledger.settle(reservation, record(DEV, "0.25"))
    assert await state(ledger, key("sandbox", "aider-dev")) == (
        None,
        Decimal("0.25"),
        Decimal(0),
        "default",
    )
    report = await usage_report(ledger, UsageQuery("acme", START - timedelta(days=1)))
    assert report.totals.requests == 1


async def test_unknown_reservation_still_records_usage_and_cost(ledgers: Ledgers) -> None:
    ledger = await ledgers.open()
    await ledger.settle("0" * 32, record(DEV, "0.5"))
    assert await state(ledger, key("user", "dev@acme.com")) == (
        None,
        Decimal("0.5"),
        Decimal(0),
        "default",
    )
    report = await usage_report(ledger, UsageQuery("acme", START - timedelta(days=1)))
    assert report.totals.requests == 1


@pytest.mark.parametrize(
    ("defaults", "refused", "message"),
    [
        (BudgetDefaults(org=Decimal(1)), "org", "monthly budget of $1.00 for org acme reached"),
        (
            BudgetDefaults(user=Decimal(1)),
            "user",
            "monthly budget of $1.00 for user dev@acme.com reached",
        ),
        (
            BudgetDefaults(org=Decimal(5), sandbox=Decimal("1")),
            "sandbox",
            "monthly budget of $1.00 for sandbox aider-dev reached",
        ),
    ],
)
async def test_each_scope_refuses_what_would_pass_its_budget(
    ledgers: Ledgers, defaults: BudgetDefaults, refused: str, message: str
) -> None:
    ledger = await ledgers.open(defaults=defaults)
    await ledger.reserve(DEV, Decimal("0.75"))
    with pytest.raises(BudgetExceeded) as caught:
        await ledger.reserve(DEV, Decimal("0.30"))
    error = caught.value
    assert error.code == "budget-exceeded"
    assert error.key.scope == refused
    assert error.detail == f"{message} (resets 2026-12-01 UTC)"
    # nothing was reserved anywhere by the refused request
    for k in DEV.budget_keys():
        assert (await state(ledger, k))[2] == Decimal("0.75")
    # what still fits is taken
    await ledger.reserve(DEV, Decimal("0.25"))


async def test_a_used_up_budget_refuses_even_a_free_request(ledgers: Ledgers) -> None:
    ledger = await ledgers.open(defaults=BudgetDefaults(user=Decimal(1)))
    reservation = await ledger.reserve(DEV, Decimal(1))
    await ledger.settle(reservation, record(DEV, "1"))
    with pytest.raises(BudgetExceeded):
        await ledger.reserve(DEV, Decimal(0))
    # another user of the org is not limited by it
    await ledger.reserve(OPS, Decimal(1))


async def test_set_budgets_override_defaults_and_clear_back(ledgers: Ledgers) -> None:
    ledger = await ledgers.open(defaults=BudgetDefaults(user=Decimal(10)))
    user = key("user", "dev@acme.com")
    await ledger.set_budget(user, Decimal("0.5"), by="admin@acme.com")
    limit, _, _, source = await state(ledger, user)
    assert (limit, source) == (Decimal("0.5"), "set")
    with pytest.raises(BudgetExceeded):
        await ledger.reserve(DEV, Decimal(1))
    # an explicit "no cap" beats the default
    await ledger.set_budget(user, None, by="admin@acme.com")
    assert (await state(ledger, user))[0] is None
    await ledger.reserve(DEV, Decimal(50))
    overrides = await ledger.budget_overrides("acme")
    assert [(o.key, o.limit_usd, o.updated_by) for o in overrides] == [
        (user, None, "admin@acme.com")
    ]
    assert await ledger.budget_overrides("globex") == []
    assert await ledger.clear_budget(user) is True
    assert await ledger.clear_budget(user) is False
    assert await state(ledger, user) == (Decimal(10), Decimal(0), Decimal(50), "default")
    # budgets of another org are their own
    await ledger.set_budget(key("org", "globex", "globex"), Decimal(0), by="boss@globex.com")
    with pytest.raises(BudgetExceeded):
        await ledger.reserve(OTHER, Decimal("0.01"))
    await ledger.reserve(OPS, Decimal("0.01"))


async def test_a_month_has_its_own_budget_and_a_settle_goes_to_its_reservation_month(
    ledgers: Ledgers,
) -> None:
    ledger = await ledgers.open(defaults=BudgetDefaults(sandbox=Decimal(1)))
    late = await ledger.reserve(DEV, Decimal("0.8"))  # 2026-11-30 23:00 UTC
    ledgers.clock.now = START + timedelta(hours=2)  # December
    fresh = await ledger.reserve(DEV, Decimal("0.9"))
    await ledger.settle(late, record(DEV, "0.7", at=START))
    await ledger.settle(fresh, record(DEV, "0.1", at=ledgers.clock.now))
    december = await state(ledger, key("sandbox", "aider-dev"))
    assert december[1:3] == (Decimal("0.1"), Decimal(0))
    ledgers.clock.now = START
    november = await state(ledger, key("sandbox", "aider-dev"))
    assert november[1:3] == (Decimal("0.7"), Decimal(0))


async def test_reservations_never_settled_are_released_after_the_ttl(ledgers: Ledgers) -> None:
    ledger = await ledgers.open(
        defaults=BudgetDefaults(user=Decimal(1)), reservation_ttl=timedelta(minutes=10)
    )
    lost = await ledger.reserve(DEV, Decimal(1))  # its process "dies"
    ledgers.clock.now = START + timedelta(minutes=5)
    with pytest.raises(BudgetExceeded):
        await ledger.reserve(DEV, Decimal("0.5"))
    ledgers.clock.now = START + timedelta(minutes=11)
    if isinstance(ledger, SqlLedger):
        await ledger.sweep()  # (reserve sweeps at most once a minute per process)
    late = await ledger.reserve(DEV, Decimal("0.5"))
    # the lost request finally settles: its cost counts, its reservation is not
    # released a second time
    await ledger.settle(lost, record(DEV, "0.25"))
    assert await state(ledger, key("user", "dev@acme.com")) == (
        Decimal(1),
        Decimal("0.25"),
        Decimal("0.5"),
        "default",
    )
    await ledger.settle(late, record(DEV, "0.5"))
    assert (await state(ledger, key("user", "dev@acme.com")))[1:3] == (Decimal("0.75"), 0)


# --- budgets hold under concurrency ---------------------------------------------------


async def test_twenty_concurrent_requests_against_a_budget_that_fits_five(
    ledgers: Ledgers,
) -> None:
    """Each request reserves its worst case ($1) and settles to exactly that; the user's
    budget is $5. Spread over two handles on the same data (two replicas), at most $5 is
    ever spent and exactly 15 requests are refused."""
    defaults = BudgetDefaults(user=Decimal(5))
    replicas = [await ledgers.open(defaults=defaults), await ledgers.open(defaults=defaults)]
    go = asyncio.Event()

    async def request(i: int) -> str:
        ledger = replicas[i % 2]
        identity = DEV if i % 3 else DEV2  # two sandboxes of the same user
        await go.wait()
        try:
            reservation = await ledger.reserve(identity, Decimal(1))
        except BudgetExceeded as exc:
            return exc.detail
        await asyncio.sleep(0.01 * (i % 4))  # the upstream answers
        await ledger.settle(reservation, record(identity, "1"))
        return "served"

    tasks = [asyncio.create_task(request(i)) for i in range(20)]
    await asyncio.sleep(0)
    go.set()
    outcomes = await asyncio.gather(*tasks)
    assert outcomes.count("served") == 5
    refused = [o for o in outcomes if o != "served"]
    assert len(refused) == 15
    assert all(
        o.startswith("monthly budget of $5.00 for user dev@acme.com reached") for o in refused
    )
    limit, spent, reserved, _ = await state(replicas[0], key("user", "dev@acme.com"))
    assert (limit, spent, reserved) == (Decimal(5), Decimal(5), Decimal(0))
    report = await usage_report(replicas[1], UsageQuery("acme", START - timedelta(days=1)))
    assert report.totals.requests == 5
    assert report.totals.cost_usd == Decimal(5)


# --- reports --------------------------------------------------------------------------


async def test_usage_rows_by_day_and_group_with_filters(ledgers: Ledgers) -> None:
    ledger = await ledgers.open()
    day1 = datetime(2026, 11, 28, 10, tzinfo=UTC)
    day2 = datetime(2026, 11, 29, 23, 59, tzinfo=UTC)
    for identity, cost, at, model in [
        (DEV, "0.10", day1, "gpt-4.1-mini"),
        (DEV, "0.20", day2, "claude-sonnet"),
        (DEV2, "0.30", day2, "gpt-4.1-mini"),
        (OPS, "1.00", day1, "gpt-4.1-mini"),
        (OTHER, "9.00", day1, "gpt-4.1-mini"),
    ]:
        await ledger.settle(
            await ledger.reserve(identity, Decimal(0)), record(identity, cost, at=at, model=model)
        )
    since = datetime(2026, 11, 1, tzinfo=UTC)

    org = await usage_report(ledger, UsageQuery("acme", since, group_by="user"))
    assert org.totals.requests == 4
    assert org.totals.cost_usd == Decimal("1.6")
    assert org.totals.input_tokens == 400 and org.totals.cache_read_tokens == 12
    assert [(d, t.cost_usd) for d, t in org.days] == [
        ("2026-11-28", Decimal("1.1")),
        ("2026-11-29", Decimal("0.5")),
    ]
    assert [(g, t.requests) for g, t in org.groups] == [("ops@acme.com", 1), ("dev@acme.com", 3)]

    own = await usage_report(
        ledger, UsageQuery("acme", since, owner_sub="sub-dev", group_by="sandbox")
    )
    assert [(g, t.cost_usd) for g, t in own.groups] == [
        ("aider-dev", Decimal("0.3")),  # same cost: by name
        ("qwen-dev", Decimal("0.3")),
    ]
    models = await usage_report(ledger, UsageQuery("acme", since, group_by="model", by_day=False))
    assert models.days == ()
    assert [g for g, _ in models.groups] == ["gpt-4.1-mini", "claude-sonnet"]

    window = await usage_report(
        ledger, UsageQuery("acme", day2 - timedelta(hours=1), until=day2 + timedelta(minutes=1))
    )
    assert window.totals.requests == 2
    nothing = await usage_report(ledger, UsageQuery("acme", since, sandboxes=()))
    assert nothing.totals.requests == 0 and nothing.days == ()
    one = await usage_report(ledger, UsageQuery("acme", since, sandboxes=("aider-dev",)))
    assert one.totals.cost_usd == Decimal("0.3")
    empty = await usage_report(ledger, UsageQuery("initech", since))
    assert empty.totals.requests == 0 and empty.groups == ()


def by_group(rows: list[UsageRow]) -> dict[str | None, UsageTotals]:
    return {row.group: row.totals for row in rows}


async def test_the_items_usage_matches_the_general_query(
    ledgers: Ledgers, monkeypatch: pytest.MonkeyPatch, make_sandbox: Callable[..., Sandbox]
) -> None:
    """Session items ask for named sandboxes of one namespace in a window, per sandbox:
    the SQL ledger answers that shape with statements of its own (batched, the names
    padded to a power of two). Their figures are the general query's, over rows inside
    and outside the window, other sandboxes, another owner and the same name in another
    namespace; and the same past one batch of names."""
    ledger = await ledgers.open()
    now = ledgers.clock.now
    since = now - timedelta(days=30)
    ns_twin = GatewayIdentity("aider-dev", "globex", "sub-x", "x@globex.com", "globex")
    unlisted = GatewayIdentity("unlisted", "acme", "sub-dev", "Dev@Acme.com", "acme")
    for identity, cost, at, tokens in [
        (DEV, "0.10", now - timedelta(hours=1), (100, 20)),
        (DEV, "0.20", since, (7, 3)),  # the window's first moment: in
        (DEV, "5.00", since - timedelta(microseconds=1), (1000, 1000)),  # out
        (DEV, "7.00", now, (1000, 1000)),  # the window's end is not in it
        (DEV2, "0.30", now - timedelta(days=10), (50, 5)),
        (DEV2, "0.01", now - timedelta(days=29), (1, 1)),
        (OPS, "1.00", now - timedelta(days=2), (10, 1)),  # another owner: counted
        (ns_twin, "9.00", now - timedelta(hours=2), (900, 90)),  # same name, globex
        (OTHER, "3.00", now - timedelta(hours=3), (30, 3)),
        (unlisted, "4.00", now - timedelta(hours=4), (40, 4)),
    ]:
        await ledger.settle(
            await ledger.reserve(identity, Decimal(0)),
            record(identity, cost, at=at, tokens=tokens),
        )

    def items(namespace: str, names: list[str]) -> UsageQuery:
        return UsageQuery(
            namespace, since, until=now, sandboxes=tuple(names), group_by="sandbox", by_day=False
        )

    wanted = ["aider-dev", "qwen-dev", "aider-ops", "never-metered"]
    many = [f"idle-{i}" for i in range(700)]
    many[0], many[513], many[600], many[699] = "qwen-dev", "aider-dev", "aider-ops", "qwen-dev"
    queries = [
        items("acme", wanted),
        items("acme", ["aider-dev"]),
        items("acme", ["qwen-dev", "aider-ops", "qwen-dev"]),  # 3 names: padded to 4
        items("acme", many),  # two batches
        items("globex", ["aider-dev", "aider-x", "qwen-dev"]),
        items("initech", ["aider-dev"]),
    ]
    if isinstance(ledger, SqlLedger):
        general = ledger.general_usage_rows

        async def refused(query: UsageQuery) -> list[UsageRow]:
            raise AssertionError("the items' shape took the general query")

        expected = [by_group(await general(query)) for query in queries]
        monkeypatch.setattr(ledger, "general_usage_rows", refused)
    else:
        expected = [by_group(await ledger.usage_rows(query)) for query in queries]
    found = [await ledger.usage_rows(query) for query in queries]
    assert [by_group(rows) for rows in found] == expected
    assert all(len(rows) == len(by_group(rows)) for rows in found)  # one row a sandbox
    assert all(row.day is None for rows in found for row in rows)

    first = by_group(found[0])
    assert set(first) == {"aider-dev", "aider-ops", "qwen-dev"}
    assert (first["aider-dev"].requests, first["aider-dev"].cost_usd) == (2, Decimal("0.3"))
    assert (first["aider-dev"].input_tokens, first["aider-dev"].output_tokens) == (107, 23)
    assert first["aider-dev"].cache_read_tokens == 6 and first["aider-dev"].cache_write_tokens == 2
    assert first["qwen-dev"].cost_usd == Decimal("0.31")
    assert first["aider-ops"].cost_usd == Decimal(1)
    assert by_group(found[3]) == first
    assert {g: t.cost_usd for g, t in by_group(found[4]).items()} == {
        "aider-dev": Decimal(9),
        "aider-x": Decimal(3),
    }
    assert found[5] == []

    # the service: per namespace, keyed by name, zeros for none
    service = UsageService(ledger=ledger, sessions=cast(Any, None), clock=ledgers.clock)
    boxes = [make_sandbox("aider-dev", "acme"), make_sandbox("never-metered", "acme")]
    usage = await service.sandbox_usage(cast(Any, None), boxes)
    assert usage == {"aider-dev": first["aider-dev"], "never-metered": UsageTotals()}
    twin = await service.sandbox_usage(cast(Any, None), [make_sandbox("aider-dev", "globex")])
    assert twin is not None and twin["aider-dev"].cost_usd == Decimal(9)


async def test_items_without_a_readable_ledger_have_no_usage(
    tmp_path: Path, make_sandbox: Callable[..., Sandbox]
) -> None:
    """A ledger that cannot be read (its table gone; a server that does not answer)
    fails the items' query as it fails the general one, and the service then answers
    ``None``: the items are served without usage."""
    path = tmp_path / "data" / "sandbox.db"
    broken = SqlLedger(f"sqlite+aiosqlite:///{path}")
    unreachable = SqlLedger(
        f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing", call_timeout=1.0
    )
    try:
        await broken.start()
        await broken.settle(await broken.reserve(DEV, Decimal(0)), record(DEV, "0.5"))
        with sqlite3.connect(path) as other:
            other.execute("DROP TABLE gateway_usage")
        now = datetime.now(UTC)
        query = UsageQuery(
            "acme",
            now - timedelta(days=30),
            until=now,
            sandboxes=("aider-dev",),
            group_by="sandbox",
            by_day=False,
        )
        for ledger in (broken, unreachable):
            for call in (ledger.usage_rows, ledger.general_usage_rows):
                with pytest.raises(BackendUnavailable):
                    await call(query)
            service = UsageService(ledger=ledger, sessions=cast(Any, None))
            assert await service.sandbox_usage(cast(Any, None), [make_sandbox("aider-dev")]) is None
    finally:
        await broken.close()
        await unreachable.close()


# --- assembly and an unreachable database ---------------------------------------------


async def test_the_ledger_follows_the_store_setting(tmp_path: Path) -> None:
    from openova_sandbox.config import load_settings
    from openova_sandbox.services.gateway_ledger import make_ledger

    memory = make_ledger(load_settings(store="memory", budget_org_usd="7"))
    assert isinstance(memory, MemoryLedger)
    assert memory.defaults == BudgetDefaults(org=Decimal(7))
    sql = make_ledger(load_settings(store="sql", data_dir=tmp_path))
    assert isinstance(sql, SqlLedger) and sql.url.endswith("sandbox.db")


async def test_an_unreachable_database_does_not_stop_the_server() -> None:
    from openova_sandbox.domain.errors import BackendUnavailable
    from openova_sandbox.services.gateway_ledger import LedgerLifecycle
    from support.postgres import free_port

    ledger = SqlLedger(
        f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/nothing", call_timeout=1.0
    )
    part = LedgerLifecycle(ledger)
    await part.start()  # logged, not raised
    with pytest.raises(BackendUnavailable) as caught:
        await ledger.authenticate("sk-sandbox-x")
    assert caught.value.code == "sandbox-backend-unavailable"
    await part.stop()


async def test_a_revoke_in_another_process_applies_within_the_token_cache_time(
    tmp_path: Path,
) -> None:
    """Each SQL ledger keeps a token's identity for ``token_cache_seconds``: a revoke
    in the same process applies at once, one by another process within that time."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'data' / 'sandbox.db'}"
    issuer = SqlLedger(url)
    cached = SqlLedger(url, token_cache_seconds=0.3)
    uncached = SqlLedger(url, token_cache_seconds=0)
    try:
        token = await issuer.issue_token(DEV)
        assert await cached.authenticate(token) == DEV
        assert await uncached.authenticate(token) == DEV
        assert await issuer.authenticate(token) == DEV
        await issuer.revoke("acme", "aider-dev")
        assert await issuer.authenticate(token) is None  # this process: at once
        assert await uncached.authenticate(token) is None
        assert await cached.authenticate(token) == DEV  # another: within its cache time
        await asyncio.sleep(0.35)
        assert await cached.authenticate(token) is None
    finally:
        for ledger in (issuer, cached, uncached):
            await ledger.close()


async def test_a_sqlite_database_locked_by_another_process_is_waited_for_off_the_loop(
    tmp_path: Path,
) -> None:
    """The hot path tries the event loop's connection first, which never waits for a
    lock; a database another writer holds sends the call to the worker thread, which
    waits (the loop keeps running meanwhile) and then succeeds."""
    path = tmp_path / "data" / "sandbox.db"
    ledger = SqlLedger(f"sqlite+aiosqlite:///{path}", defaults=BudgetDefaults(user=Decimal(5)))
    try:
        await ledger.start()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process writing
        task = asyncio.ensure_future(ledger.reserve(DEV, Decimal(1)))
        await asyncio.sleep(0.2)  # the loop is not blocked
        assert not task.done()
        other.execute("COMMIT")
        other.close()
        reservation = await asyncio.wait_for(task, 5)
        await ledger.settle(reservation, record(DEV, "0.5"))
        assert await state(ledger, key("user", "dev@acme.com")) == (
            Decimal(5),
            Decimal("0.5"),
            Decimal(0),
            "default",
        )
    finally:
        await ledger.close()

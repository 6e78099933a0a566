"""Usage and budgets through the real app (SQLite store) under uvicorn.

The usage is written the way the gateway writes it: by a second ledger on the same
database (as the gateway process or another replica would hold), so these tests also
show that the API and the gateway share one ledger across processes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, TypeVar

import pytest

from openova_sandbox.services.gateway_ledger import (
    BudgetDefaults,
    BudgetExceeded,
    GatewayIdentity,
    Ledger,
    UsageRecord,
)
from openova_sandbox.store.sql_ledger import SqlLedger

if TYPE_CHECKING:
    from conftest import Api

T = TypeVar("T")
USAGE = "/api/v1/sandbox/usage"
BUDGETS = "/api/v1/sandbox/budgets"
SESSIONS = "/api/v1/sandbox/sessions"
DEV = {"sub": "sub-dev-0001", "email": "dev@acme.com", "org": "acme"}
OPS = {"sub": "sub-ops-0001", "email": "ops@acme.com", "org": "acme"}
ADMIN = {"sub": "sub-admin-01", "email": "admin@acme.com", "org": "acme", "roles": ("org-admin",)}
GLOBEX_ADMIN = {
    "sub": "sub-globex-1",
    "email": "boss@globex.com",
    "org": "globex",
    "roles": ("org-admin",),
}


def identity(who: dict[str, Any], sandbox: str) -> GatewayIdentity:
    return GatewayIdentity(sandbox, who["org"], who["sub"], who["email"], who["org"])


def gateway(api: Api, work: Callable[[Ledger], Awaitable[T]], **options: Any) -> T:
    """Run ``work`` on a second ledger over the server's database (the gateway's)."""

    async def run() -> T:
        ledger = SqlLedger(api.deps.settings.effective_database_url, **options)
        await ledger.start()
        try:
            return await work(ledger)
        finally:
            await ledger.close()

    return asyncio.run(run())


def meter(
    api: Api,
    who: dict[str, Any],
    sandbox: str,
    cost: str,
    *,
    at: datetime | None = None,
    model: str = "gpt-4.1-mini",
) -> None:
    async def work(ledger: Ledger) -> None:
        me = identity(who, sandbox)
        reservation = await ledger.reserve(me, Decimal(cost))
        await ledger.settle(
            reservation,
            UsageRecord(
                identity=me,
                model=model,
                provider="openai",
                api="openai-chat",
                input_tokens=1000,
                output_tokens=200,
                cache_read_tokens=0,
                cache_write_tokens=0,
                cost_usd=Decimal(cost),
                latency_ms=40.0,
                status=200,
                stream=False,
                started_at=at or datetime.now(UTC),
            ),
        )

    gateway(api, work)


@pytest.fixture
def sql_api(make_api: Callable[..., Api]) -> Api:
    return make_api(store="sql", budget_user_usd="10")


def error(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code, body
    return str(body.get("detail", ""))


# --- usage ----------------------------------------------------------------------------


def test_a_caller_sees_own_usage_and_an_org_admin_the_org(sql_api: Api) -> None:
    api = sql_api
    meter(api, DEV, "aider-one", "0.25")
    meter(api, DEV, "qwen-two", "0.50", model="qwen3-coder")
    meter(api, OPS, "aider-ops", "1.00")
    meter(api, DEV, "aider-one", "9.00", at=datetime.now(UTC) - timedelta(days=40))

    own = api.http.get(USAGE, headers=api.auth(**DEV), params={"groupBy": "sandbox"}).json()
    assert own["scope"] == "own" and own["org"] == "acme" and own["currency"] == "USD"
    assert own["totals"]["requests"] == 2
    assert own["totals"]["costUsd"] == pytest.approx(0.75)
    assert own["totals"]["inputTokens"] == 2000 and own["totals"]["outputTokens"] == 400
    assert len(own["days"]) == 30  # every day of the window, zeros included
    assert own["days"][-1]["date"] == datetime.now(UTC).date().isoformat()
    assert own["days"][-1]["costUsd"] == pytest.approx(0.75)
    assert sum(d["requests"] for d in own["days"]) == 2
    assert [(g["key"], g["costUsd"]) for g in own["groups"]] == [
        ("qwen-two", 0.5),
        ("aider-one", 0.25),
    ]
    # an older window includes the 40-day-old request
    since = (datetime.now(UTC) - timedelta(days=45)).date().isoformat()
    older = api.http.get(USAGE, headers=api.auth(**DEV), params={"since": since}).json()
    assert older["totals"]["costUsd"] == pytest.approx(9.75)

    refused = api.http.get(USAGE, headers=api.auth(**DEV), params={"scope": "org"})
    error(refused, 403, "org-admin-required")

    org = api.http.get(
        USAGE, headers=api.auth(**ADMIN), params={"scope": "org", "groupBy": "user"}
    ).json()
    assert org["totals"]["costUsd"] == pytest.approx(1.75)
    assert [(g["key"], g["requests"]) for g in org["groups"]] == [
        ("ops@acme.com", 1),
        ("dev@acme.com", 2),
    ]
    by_model = api.http.get(
        USAGE, headers=api.auth(**ADMIN), params={"scope": "org", "groupBy": "model"}
    ).json()
    assert {g["key"] for g in by_model["groups"]} == {"gpt-4.1-mini", "qwen3-coder"}
    # the admin's own usage is theirs alone; another org sees none of acme's
    assert api.http.get(USAGE, headers=api.auth(**ADMIN)).json()["totals"]["requests"] == 0
    other = api.http.get(USAGE, headers=api.auth(**GLOBEX_ADMIN), params={"scope": "org"})
    assert other.json()["totals"]["requests"] == 0


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"scope": "everyone"}, "invalid-scope"),
        ({"groupBy": "day"}, "invalid-group-by"),
        ({"since": "last week"}, "invalid-since"),
        ({"since": "2099-01-01"}, "invalid-since"),
        ({"since": "2026-01-01T00:00:00"}, "invalid-since"),
        ({"since": "1999-01-01"}, "invalid-since"),
    ],
)
def test_every_bad_query_parameter_is_a_named_400(
    api: Api, params: dict[str, str], code: str
) -> None:
    detail = error(api.http.get(USAGE, headers=api.auth(**DEV), params=params), 400, code)
    assert detail


def test_usage_needs_a_token(api: Api) -> None:
    assert api.http.get(USAGE).status_code == 401
    assert api.http.get(BUDGETS).status_code == 401
    assert api.http.put(f"{BUDGETS}/user/dev@acme.com", json={"monthlyUsd": 1}).status_code == 401


# --- session items --------------------------------------------------------------------


def test_session_items_carry_the_last_30_days(sql_api: Api) -> None:
    api = sql_api
    created = api.http.post(
        SESSIONS, headers=api.auth(**DEV), json={"agent": "aider", "name": "one"}
    )
    assert created.status_code == 201, created.text
    fresh = created.json()
    assert fresh["spend30d"] == "USD 0.00"
    assert fresh["usage30d"] == {"inputTokens": 0, "outputTokens": 0, "costUsd": 0.0}

    meter(api, DEV, "one", "0.125")
    meter(api, DEV, "one", "0.25")
    meter(api, DEV, "one", "5", at=datetime.now(UTC) - timedelta(days=31))
    meter(api, DEV, "someone-elses", "3")

    item = api.http.get(f"{SESSIONS}/one", headers=api.auth(**DEV)).json()
    assert item["spend30d"] == "USD 0.38"
    assert item["usage30d"] == {"inputTokens": 2000, "outputTokens": 400, "costUsd": 0.375}
    (listed,) = api.http.get(SESSIONS, headers=api.auth(**DEV)).json()["sandboxes"]
    assert listed["usage30d"] == item["usage30d"]
    org = api.http.get(SESSIONS, headers=api.auth(**ADMIN), params={"scope": "org"}).json()
    assert [s["spend30d"] for s in org["sandboxes"]] == ["USD 0.38"]


def test_session_items_without_a_ledger_are_unchanged(make_api: Callable[..., Api]) -> None:
    api = make_api(store="memory")
    api.deps.ledger = None
    created = api.http.post(SESSIONS, headers=api.auth(**DEV), json={"agent": "aider"}).json()
    assert "usage30d" not in created and "spend30d" not in created
    error(api.http.get(USAGE, headers=api.auth(**DEV)), 503, "usage-unavailable")


# --- budgets --------------------------------------------------------------------------


def test_org_admins_set_budgets_that_the_gateway_enforces(sql_api: Api) -> None:
    api = sql_api
    admin = api.auth(**ADMIN)
    # the operator's default (SANDBOX_BUDGET_USER_USD=10) until one is set
    mine = api.http.get(f"{BUDGETS}/user/dev@acme.com", headers=api.auth(**DEV)).json()
    assert (mine["monthlyUsd"], mine["source"], mine["spentUsd"]) == (10.0, "default", 0.0)

    put = api.http.put(f"{BUDGETS}/user/Dev@Acme.com", headers=admin, json={"monthlyUsd": "1.50"})
    assert put.status_code == 200, put.text
    body = put.json()
    assert (body["scope"], body["name"], body["monthlyUsd"], body["source"]) == (
        "user",
        "dev@acme.com",
        1.5,
        "set",
    )
    assert body["updatedBy"] == "admin@acme.com" and body["updatedAt"]
    assert body["month"] == datetime.now(UTC).strftime("%Y-%m")

    # the gateway (another process on the same database) holds the user to it
    meter(api, DEV, "aider-one", "1.00")

    async def too_much(ledger: Ledger) -> str:
        with pytest.raises(BudgetExceeded) as caught:
            await ledger.reserve(identity(DEV, "aider-one"), Decimal("0.60"))
        return caught.value.detail

    detail = gateway(api, too_much, defaults=BudgetDefaults(user=Decimal(10)))
    assert detail.startswith("monthly budget of $1.50 for user dev@acme.com reached")
    state = api.http.get(f"{BUDGETS}/user/dev@acme.com", headers=api.auth(**DEV)).json()
    assert (state["spentUsd"], state["remainingUsd"]) == (1.0, 0.5)

    # no cap, then back to the default
    lifted = api.http.put(f"{BUDGETS}/user/dev@acme.com", headers=admin, json={"monthlyUsd": None})
    assert (lifted.json()["monthlyUsd"], lifted.json()["remainingUsd"]) == (None, None)
    reset = api.http.delete(f"{BUDGETS}/user/dev@acme.com", headers=admin).json()
    assert (reset["monthlyUsd"], reset["source"]) == (10.0, "default")

    # the org's budget by its slug
    org = api.http.put(f"{BUDGETS}/org/acme", headers=admin, json={"monthlyUsd": 100})
    assert (org.json()["name"], org.json()["monthlyUsd"], org.json()["spentUsd"]) == (
        "acme",
        100.0,
        1.0,
    )


def test_budget_lists_show_what_applies(sql_api: Api) -> None:
    api = sql_api
    admin = api.auth(**ADMIN)
    api.http.post(SESSIONS, headers=api.auth(**DEV), json={"agent": "aider", "name": "one"})
    assert (
        api.http.put(f"{BUDGETS}/sandbox/one", headers=admin, json={"monthlyUsd": 2}).status_code
        == 200
    )
    assert (
        api.http.put(
            f"{BUDGETS}/user/ops@acme.com", headers=admin, json={"monthlyUsd": 3}
        ).status_code
        == 200
    )

    listed = api.http.get(BUDGETS, headers=admin).json()
    assert listed["defaults"] == {"org": None, "user": 10.0, "sandbox": None}
    assert [(b["scope"], b["name"], b["monthlyUsd"]) for b in listed["budgets"]] == [
        ("org", "acme", None),
        ("user", "ops@acme.com", 3.0),
        ("sandbox", "one", 2.0),
    ]
    own = api.http.get(BUDGETS, headers=api.auth(**DEV)).json()
    assert [(b["scope"], b["name"], b["monthlyUsd"], b["source"]) for b in own["budgets"]] == [
        ("org", "acme", None, "default"),
        ("user", "dev@acme.com", 10.0, "default"),
        ("sandbox", "one", 2.0, "set"),
    ]
    # a user reads their own budgets, not another user's
    assert api.http.get(f"{BUDGETS}/sandbox/one", headers=api.auth(**DEV)).status_code == 200
    assert api.http.get(f"{BUDGETS}/org/acme", headers=api.auth(**DEV)).status_code == 200
    error(
        api.http.get(f"{BUDGETS}/user/ops@acme.com", headers=api.auth(**DEV)),
        403,
        "org-admin-required",
    )
    error(api.http.get(f"{BUDGETS}/sandbox/one", headers=api.auth(**OPS)), 404, "sandbox-not-found")


@pytest.mark.parametrize(
    ("who", "path", "body", "status", "code"),
    [
        (DEV, "user/dev@acme.com", {"monthlyUsd": 1}, 403, "org-admin-required"),
        (ADMIN, "org/globex", {"monthlyUsd": 1}, 403, "other-org"),
        (ADMIN, "team/x", {"monthlyUsd": 1}, 400, "invalid-scope"),
        (ADMIN, "sandbox/Not_An_Id", {"monthlyUsd": 1}, 400, "invalid-name"),
        (ADMIN, "sandbox/no-such-sandbox", {"monthlyUsd": 1}, 404, "sandbox-not-found"),
        (ADMIN, "user/dev@acme.com", None, 400, "empty-body"),
        (ADMIN, "user/dev@acme.com", b"{not json", 400, "invalid-json"),
        (ADMIN, "user/dev@acme.com", {"usd": 1}, 400, "invalid-budget"),
        (ADMIN, "user/dev@acme.com", [1], 400, "invalid-budget"),
        (ADMIN, "user/dev@acme.com", {"monthlyUsd": -1}, 400, "invalid-budget"),
        (ADMIN, "user/dev@acme.com", {"monthlyUsd": "lots"}, 400, "invalid-budget"),
        (ADMIN, "user/dev@acme.com", {"monthlyUsd": True}, 400, "invalid-budget"),
        (ADMIN, "user/dev@acme.com", {"monthlyUsd": 1e12}, 400, "invalid-budget"),
    ],
)
def test_every_bad_budget_change_is_named(
    api: Api, who: dict[str, Any], path: str, body: Any, status: int, code: str
) -> None:
    if body is None:
        response = api.http.put(f"{BUDGETS}/{path}", headers=api.auth(**who))
    elif isinstance(body, bytes):
        response = api.http.put(f"{BUDGETS}/{path}", headers=api.auth(**who), content=body)
    else:
        response = api.http.put(f"{BUDGETS}/{path}", headers=api.auth(**who), json=body)
    assert error(response, status, code)


def test_a_non_admin_cannot_reset_a_budget(api: Api) -> None:
    error(
        api.http.delete(f"{BUDGETS}/user/dev@acme.com", headers=api.auth(**DEV)),
        403,
        "org-admin-required",
    )

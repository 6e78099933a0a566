"""``usage.*``: the model gateway's metering of this owner's sandboxes (docs/mcp.md,
"Tools: session, sandbox, usage"; docs/gateway.md for what is counted)."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any

from ...domain.ledger import UsageQuery, UsageTotals, fold_rows
from ...domain.model import Sandbox, format_time, utcnow
from ...services.usage import parse_since
from .base import Tool, ToolContext, object_schema


def _days(since: datetime, until: datetime) -> list[str]:
    day, last, out = since.date(), until.date(), []
    while day <= last:
        out.append(day.isoformat())
        day += timedelta(days=1)
    return out


async def get(ctx: ToolContext, args: Mapping[str, Any]) -> Any:
    principal = ctx.caller.principal()
    target = str(args.get("sandbox") or ctx.caller.sandbox)
    sandbox: Sandbox = await ctx.services.sessions.get(principal, target)
    now = utcnow()
    since = parse_since(args.get("since"), now)
    rows = await ctx.services.ledger.usage_rows(
        UsageQuery(
            namespace=sandbox.namespace,
            since=since,
            until=now,
            sandboxes=(sandbox.name,),
            by_day=True,
        )
    )
    report = fold_rows(rows)
    days = dict(report.days)
    return {
        "sandbox": sandbox.name,
        "since": format_time(since),
        "until": format_time(now),
        "currency": "USD",
        "totals": report.totals.to_dict(),
        "days": [
            {"date": day, **days.get(day, UsageTotals()).to_dict()} for day in _days(since, now)
        ],
    }


TOOLS: list[Tool] = [
    Tool(
        name="usage.get",
        description=(
            "Model usage metered by the gateway for this sandbox (or another of its "
            "owner's, `sandbox`): requests, input/output/cache tokens and cost in USD, "
            "in total and per day since `since` (default: the last 30 days)."
        ),
        input_schema=object_schema(
            {
                "sandbox": {"type": "string", "minLength": 1, "maxLength": 253},
                "since": {
                    "type": "string",
                    "maxLength": 40,
                    "description": "a date (2026-11-01) or an RFC 3339 time",
                },
            }
        ),
        handler=get,
        available=lambda s: s.ledger is not None and s.sessions is not None,
    ),
]

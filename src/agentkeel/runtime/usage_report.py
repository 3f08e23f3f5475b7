"""The usage reports that ``GET /admin/usage`` and ``keel usage`` print, from a ``UsageReader``.

Both windows are UTC: ``day`` is today, ``month`` the first of this month to
today. A quota's ``used`` is the tokens settled in the window (every agent, every
key link: a call on the user's own key counts toward the user's quotas too);
``headroom`` is what is left of it, ``None`` when there is no quota.

>>> report = await top_report(store, period="day", top=20, organization=None,
...                           quotas_for=lambda user, org: settings.quotas, now=time.time())
>>> report["users"][0]["quota"]
{'limit': 2000000, 'used': 48210, 'headroom': 1951790}
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from agentkeel.config.quotas import QuotaSettings
from agentkeel.resilience.budget import quota_limit
from agentkeel.resilience.windows import PERIODS, Period, utc_window
from agentkeel.runtime.usage import UsageReader, UsageTotals

QuotasFor = Callable[[str, str | None], QuotaSettings]
"""The quotas in force for a (user, organization): the live settings' where known."""

MAX_TOP = 1000
"""The most users one top report lists."""


def quota_json(limit: int, used: int) -> dict[str, int | None]:
    """``{limit, used, headroom}``; ``limit`` and ``headroom`` are ``None`` without a quota."""
    if limit <= 0:
        return {"limit": None, "used": used, "headroom": None}
    return {"limit": limit, "used": used, "headroom": max(0, limit - used)}


async def top_report(
    reader: UsageReader,
    *,
    period: Period,
    top: int,
    organization: str | None,
    quotas_for: QuotasFor,
    now: float,
) -> dict[str, Any]:
    """The ``top`` users by tokens in the current ``period`` (of ``organization`` only,
    when given), each with spend, BYOK tokens and their quota for the period."""
    window = utc_window(period, now)
    rows = await reader.top_users(
        first_day=window.first_day,
        last_day=window.last_day,
        limit=top,
        organization=organization,
    )
    users = []
    for row in rows:
        quotas = quotas_for(row.user_id, row.organization)
        users.append(
            {
                "user": row.user_id,
                "organization": row.organization,
                **row.totals.to_json(),
                "quota": quota_json(quota_limit(quotas, "user", period), row.totals.total_tokens),
            }
        )
    return {
        "period": period,
        "start": window.first_day,
        "resets_at": window.end.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "organization": organization,
        "top": top,
        "users": users,
    }


async def user_report(
    reader: UsageReader,
    user_id: str,
    *,
    organization: str | None,
    period: Period,
    quotas: QuotaSettings,
    now: float,
) -> dict[str, Any]:
    """One user's usage by UTC day and model in the current ``period``, with the headroom
    of the user's (and the organization's) daily and monthly quotas."""
    month = utc_window("month", now)
    today = utc_window("day", now).first_day
    rows = await reader.user_usage(
        user_id, organization=organization, first_day=month.first_day, last_day=today
    )
    day_totals = sum((row.totals for row in rows if row.day == today), UsageTotals())
    month_totals = sum((row.totals for row in rows), UsageTotals())
    shown = [row for row in rows if period == "month" or row.day == today]
    user_used = {"day": day_totals.total_tokens, "month": month_totals.total_tokens}
    quota: dict[str, Any] = {
        "user": {p: quota_json(quota_limit(quotas, "user", p), user_used[p]) for p in PERIODS}
    }
    if organization:
        org_used = {
            "month": await reader.organization_usage(
                organization, first_day=month.first_day, last_day=today
            ),
            "day": await reader.organization_usage(organization, first_day=today, last_day=today),
        }
        quota["organization"] = {
            p: quota_json(quota_limit(quotas, "organization", p), org_used[p].total_tokens)
            for p in PERIODS
        }
    return {
        "user": user_id,
        "organization": organization,
        "period": period,
        "start": today if period == "day" else month.first_day,
        "totals": (day_totals if period == "day" else month_totals).to_json(),
        "usage": [{"day": row.day, "model": row.model, **row.totals.to_json()} for row in shown],
        "quota": quota,
    }

"""What the SQLite and PostgreSQL stores share for quotas and usage: rows and key patterns.

Usage rows (table ``token_usage``, schema version 4) hold the sums of every
settled call per (UTC day, organization, user, agent, model, key link). The
organization is stored as ``''`` for a user without one (a primary key column
cannot be NULL) and read back as ``None``.

A user's quota keys in the budget ledger are ``user_budget_prefix(user, org)`` plus
a window label, ``YYYY-MM-DD`` or ``YYYY-MM``; a forget matches the label's exact
shape, so forgetting user ``a`` never touches the keys of user ``a:b`` or
``a:2025``. The retention sweep deletes the quota rows (``user:``, ``org:``,
``orgquota:``) whose label names a window that ended long enough ago.

The usage statements are written once (``usage_statements``) and rendered in each
driver's placeholder style.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from agentkeel.resilience.budget import user_budget_prefix
from agentkeel.resilience.windows import DAY_LABEL_CHARS, MONTH_LABEL_CHARS
from agentkeel.runtime.usage import (
    PLATFORM_LINK,
    DailyUsage,
    UsageRecord,
    UsageTotals,
    UserUsage,
)

__all__ = [
    "LABELS",
    "QUOTA_KEY_PREFIXES",
    "USAGE_COLUMNS",
    "USAGE_SUMS",
    "UsageStatements",
    "daily_usage_from_row",
    "ended_window_params",
    "org_column",
    "totals_from_row",
    "usage_statements",
    "usage_values",
    "user_budget_params",
    "user_usage_from_row",
]

LABELS: tuple[tuple[int, str, str], ...] = (
    (DAY_LABEL_CHARS, "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]", "^[0-9]{4}-[0-9]{2}-[0-9]{2}$"),
    (MONTH_LABEL_CHARS, "[0-9][0-9][0-9][0-9]-[0-9][0-9]", "^[0-9]{4}-[0-9]{2}$"),
)
"""Each window label's length, its SQLite GLOB and its PostgreSQL regular expression."""

USAGE_COLUMNS = (
    "day, organization, user_id, agent_id, model, key_link,"
    " input_tokens, output_tokens, calls, spend"
)

# The sums every usage query selects, in UsageTotals order (the placeholder-free part).
USAGE_SUMS = f"""sum(input_tokens), sum(output_tokens), sum(calls), sum(spend),
    sum(CASE WHEN key_link <> '{PLATFORM_LINK}' THEN input_tokens + output_tokens ELSE 0 END)"""

QUOTA_KEY_PREFIXES = ("user:", "org:", "orgquota:")
"""What the ledger keys of quota windows start with (a session's key is ``session:``)."""


@dataclass(frozen=True, slots=True)
class UsageStatements:
    """The usage table's statements in one driver's placeholder style."""

    record: str
    """Add one call (``usage_values``, positional) to its row."""
    top_users: str
    """The top users of a window (``first_day``, ``last_day``, ``limit``)."""
    top_users_in: str
    """The same, of one organization (and ``organization``: its column value)."""
    organization: str
    """An organization's totals (``organization``, ``first_day``, ``last_day``)."""
    user: str
    """One user's rows by day and model (``user_id``, ``organization``, the days)."""

    def top_users_query(
        self, *, first_day: str, last_day: str, limit: int, organization: str | None
    ) -> tuple[str, dict[str, Any]]:
        """The statement and parameters for the top users of a window (of ``organization``
        when given)."""
        params: dict[str, Any] = {"first_day": first_day, "last_day": last_day, "limit": limit}
        if organization is None:
            return self.top_users, params
        params["organization"] = org_column(organization)
        return self.top_users_in, params


def usage_statements(named: Callable[[str], str], positional: str) -> UsageStatements:
    """The usage statements with ``named(name)`` for a named parameter and ``positional``
    for a positional one: ``(lambda n: f":{n}", "?")`` for SQLite,
    ``(lambda n: f"%({n})s", "%s")`` for psycopg."""
    first, last = named("first_day"), named("last_day")
    values = ", ".join([positional] * len(USAGE_COLUMNS.split(",")))
    top = f"""
SELECT user_id, organization, {USAGE_SUMS} FROM token_usage
WHERE day >= {first} AND day <= {last} {{organization}}
GROUP BY user_id, organization
ORDER BY sum(input_tokens) + sum(output_tokens) DESC, user_id, organization LIMIT {named("limit")}
"""
    return UsageStatements(
        record=f"""
INSERT INTO token_usage ({USAGE_COLUMNS}) VALUES ({values})
ON CONFLICT (day, organization, user_id, agent_id, model, key_link) DO UPDATE SET
    input_tokens = token_usage.input_tokens + excluded.input_tokens,
    output_tokens = token_usage.output_tokens + excluded.output_tokens,
    calls = token_usage.calls + excluded.calls,
    spend = token_usage.spend + excluded.spend
""",
        top_users=top.format(organization=""),
        top_users_in=top.format(organization=f"AND organization = {named('organization')}"),
        organization=f"""
SELECT {USAGE_SUMS} FROM token_usage
WHERE organization = {named("organization")} AND day >= {first} AND day <= {last}
""",
        user=f"""
SELECT day, model, {USAGE_SUMS} FROM token_usage
WHERE user_id = {named("user_id")} AND organization = {named("organization")}
    AND day >= {first} AND day <= {last}
GROUP BY day, model ORDER BY day, model
""",
    )


def org_column(organization: str | None) -> str:
    """The ``organization`` column's value: ``''`` for none."""
    return organization or ""


def usage_values(record: UsageRecord) -> tuple[Any, ...]:
    """A record as ``USAGE_COLUMNS`` values (one call)."""
    return (
        record.day,
        org_column(record.organization),
        record.user_id,
        record.agent_id,
        record.model,
        record.key_link,
        record.input_tokens,
        record.output_tokens,
        1,
        record.spend,
    )


def totals_from_row(row: Sequence[Any]) -> UsageTotals:
    """A row of ``USAGE_SUMS`` (sums over no rows are NULL: zero)."""
    return UsageTotals(
        input_tokens=int(row[0] or 0),
        output_tokens=int(row[1] or 0),
        calls=int(row[2] or 0),
        spend=float(row[3] or 0.0),
        byok_tokens=int(row[4] or 0),
    )


def user_usage_from_row(row: Sequence[Any]) -> UserUsage:
    """A ``(user_id, organization, *USAGE_SUMS)`` row."""
    return UserUsage(user_id=row[0], organization=row[1] or None, totals=totals_from_row(row[2:]))


def daily_usage_from_row(row: Sequence[Any]) -> DailyUsage:
    """A ``(day, model, *USAGE_SUMS)`` row."""
    return DailyUsage(day=row[0], model=row[1], totals=totals_from_row(row[2:]))


def user_budget_params(user_id: str, organization: str | None) -> dict[str, Any]:
    """The parameters of the stores' forget clauses for the user's quota keys.

    ``prefix``: the keys of ``user_id`` in ``organization`` (or of the user without
    one). ``org_user``: what sits between the organization and the window label in an
    organization's user key, for a forget in every organization: the organization part
    is percent-encoded, so it holds no ':' of its own. The labels' patterns are
    ``LABELS``.
    """
    return {
        "prefix": user_budget_prefix(user_id, organization),
        "org_user": f":user:{user_id}:",
        **{f"glob{length}": glob for length, glob, _ in LABELS},
        **{f"regex{length}": regex for length, _, regex in LABELS},
    }


def ended_window_params(
    *, day_before: str, month_before: str, after: str, limit: int
) -> dict[str, Any]:
    """The parameters of the stores' ended-window statements: quota rows whose day label
    is before ``day_before`` or whose month label is before ``month_before``, with keys
    after ``after`` (``""``: from the start), at most ``limit`` of them."""
    before = {DAY_LABEL_CHARS: day_before, MONTH_LABEL_CHARS: month_before}
    return {
        "after": after,
        "limit": limit,
        **{f"glob{length}": glob for length, glob, _ in LABELS},
        **{f"regex{length}": regex for length, _, regex in LABELS},
        **{f"before{length}": label for length, label in before.items()},
    }

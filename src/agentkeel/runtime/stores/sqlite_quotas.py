"""The SQLite store's budget ledger and usage table: statements, and the functions that
run them on the store's connection (``SqliteSessionStore`` calls them through ``_run``).

A reservation is one write transaction (``BEGIN IMMEDIATE`` takes the file's write
lock first): read every key of the call, check every limit, add the reservation to
all of them or to none. Other replicas on the same file wait for the lock, so they
never both take the last tokens of a limit.
"""

from __future__ import annotations

import sqlite3

from agentkeel.resilience.ledger import Hold, ReserveResult
from agentkeel.runtime.stores import codec, quota_codec
from agentkeel.runtime.usage import DailyUsage, UsageTotals, UserUsage
from agentkeel.storage import sqlite as storage

__all__ = [
    "TOP_USERS_SQL",
    "organization_usage",
    "record_usage",
    "reserve",
    "settle",
    "top_users",
    "used",
    "user_budgets_where",
    "user_usage",
    "user_usage_where",
]

# The user's quota keys: the prefix, then exactly a day or a month label (quota_codec).
_USER_BUDGETS_WHERE = (
    "substr(key, 1, length(:prefix)) = :prefix AND ("
    + " OR ".join(
        f"(length(key) = length(:prefix) + {length}"
        f" AND substr(key, length(:prefix) + 1) GLOB :glob{length})"
        for length, _, _ in quota_codec.LABELS
    )
    + ")"
)
# 'org:<organization>:user:<user>:<label>' for any organization (see quota_codec).
_ANY_ORG_BUDGETS_WHERE = (
    "substr(key, 1, 4) = 'org:' AND ("
    + " OR ".join(
        f"""(length(key) > 4 + length(:org_user) + {length}
    AND substr(key, length(key) - {length - 1} - length(:org_user), length(:org_user)) = :org_user
    AND substr(key, length(key) - {length - 1}) GLOB :glob{length}
    AND instr(substr(key, 5, length(key) - {4 + length} - length(:org_user)), ':') = 0)"""
        for length, _, _ in quota_codec.LABELS
    )
    + ")"
)

# One JSON array parameter for the keys of a call.
_HELD_SQL = """
SELECT key, used + reserved FROM budgets WHERE key IN (SELECT value FROM json_each(:keys))
"""

_HOLD_SQL = """
INSERT INTO budgets (key, used, reserved) SELECT value, 0, :amount FROM json_each(:keys) WHERE true
ON CONFLICT (key) DO UPDATE SET reserved = budgets.reserved + excluded.reserved
"""

_SETTLE_SQL = """
INSERT INTO budgets (key, used, reserved) SELECT value, :used, 0 FROM json_each(:keys) WHERE true
ON CONFLICT (key) DO UPDATE SET
    reserved = max(budgets.reserved - :reserved, 0), used = budgets.used + excluded.used
"""

_RECORD_USAGE_SQL = f"""
INSERT INTO token_usage ({quota_codec.USAGE_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (day, organization, user_id, agent_id, model, key_link) DO UPDATE SET
    input_tokens = token_usage.input_tokens + excluded.input_tokens,
    output_tokens = token_usage.output_tokens + excluded.output_tokens,
    calls = token_usage.calls + excluded.calls,
    spend = token_usage.spend + excluded.spend
"""

TOP_USERS_SQL = f"""
SELECT user_id, organization, {quota_codec.USAGE_SUMS} FROM token_usage
WHERE day >= :first_day AND day <= :last_day {{organization}}
GROUP BY user_id, organization
ORDER BY sum(input_tokens) + sum(output_tokens) DESC, user_id, organization LIMIT :limit
"""
"""The top users of a window; ``{organization}`` is empty or the organization's clause."""

_ORG_USAGE_SQL = f"""
SELECT {quota_codec.USAGE_SUMS} FROM token_usage
WHERE organization = :organization AND day >= :first_day AND day <= :last_day
"""

_USER_USAGE_SQL = f"""
SELECT day, model, {quota_codec.USAGE_SUMS} FROM token_usage
WHERE user_id = :user_id AND organization = :organization
    AND day >= :first_day AND day <= :last_day
GROUP BY day, model ORDER BY day, model
"""


def user_budgets_where(organization: str | None) -> str:
    """The user's quota rows: in ``organization``, or in every one (and none)."""
    if organization is not None:
        return _USER_BUDGETS_WHERE
    return f"({_USER_BUDGETS_WHERE}) OR ({_ANY_ORG_BUDGETS_WHERE})"


def user_usage_where(organization: str | None) -> str:
    """The user's usage rows: in ``organization``, or in every one (and none)."""
    if organization is not None:
        return "user_id = :user_id AND organization = :organization_column"
    return "user_id = :user_id"


def reserve(conn: sqlite3.Connection, holds: tuple[Hold, ...], amount: int) -> ReserveResult:
    keys = codec.dumps([hold.key for hold in holds])
    with storage.write(conn):
        held = dict(conn.execute(_HELD_SQL, {"keys": keys}).fetchall())
        committed = tuple(int(held.get(hold.key, 0)) for hold in holds)
        for index, hold in enumerate(holds):
            if committed[index] + amount > hold.limit:
                return ReserveResult(refused=index, committed=committed)
        conn.execute(_HOLD_SQL, {"keys": keys, "amount": amount})
    return ReserveResult(refused=None, committed=tuple(c + amount for c in committed))


def settle(conn: sqlite3.Connection, keys: str, reserved: int, used: int) -> None:
    """``keys`` is the JSON array of the keys."""
    conn.execute(_SETTLE_SQL, {"keys": keys, "reserved": reserved, "used": used})


def used(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT used FROM budgets WHERE key = ?", (key,)).fetchone()
    return 0 if row is None else int(row[0])


def record_usage(conn: sqlite3.Connection, values: tuple[object, ...]) -> None:
    conn.execute(_RECORD_USAGE_SQL, values)


def top_users(conn: sqlite3.Connection, sql: str, params: dict[str, object]) -> list[UserUsage]:
    return [quota_codec.user_usage_from_row(row) for row in conn.execute(sql, params)]


def user_usage(conn: sqlite3.Connection, params: dict[str, object]) -> list[DailyUsage]:
    rows = conn.execute(_USER_USAGE_SQL, params)
    return [quota_codec.daily_usage_from_row(row) for row in rows]


def organization_usage(conn: sqlite3.Connection, params: dict[str, object]) -> UsageTotals:
    return quota_codec.totals_from_row(conn.execute(_ORG_USAGE_SQL, params).fetchone())

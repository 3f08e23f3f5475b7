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
    "USAGE",
    "count_ended_windows",
    "organization_usage",
    "purge_ended_windows",
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

# Quota rows whose window label is older than :before<length> (labels compare as text),
# after the key :after, in key order: one batch of the retention sweep.
_ENDED_WINDOWS_WHERE = (
    "key > :after AND ("
    + " OR ".join(
        f"substr(key, 1, {len(prefix)}) = '{prefix}'" for prefix in quota_codec.QUOTA_KEY_PREFIXES
    )
    + ") AND ("
    + " OR ".join(
        f"(substr(key, -{length + 1}, 1) = ':' AND substr(key, -{length}) GLOB :glob{length}"
        f" AND substr(key, -{length}) < :before{length})"
        for length, _, _ in quota_codec.LABELS
    )
    + ")"
)
_ENDED_WINDOWS_SQL = (
    f"SELECT key FROM budgets WHERE {_ENDED_WINDOWS_WHERE} ORDER BY key LIMIT :limit"
)
_COUNT_ENDED_WINDOWS_SQL = f"SELECT count(*) FROM budgets WHERE {_ENDED_WINDOWS_WHERE}"

# One JSON array parameter for the keys of a call.
_HELD_SQL = """
SELECT key, used, reserved FROM budgets WHERE key IN (SELECT value FROM json_each(:keys))
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

USAGE = quota_codec.usage_statements(lambda name: f":{name}", "?")
"""The usage table's statements (shared with PostgreSQL, ``quota_codec``)."""


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
        rows = {
            key: (int(used), int(reserved))
            for key, used, reserved in conn.execute(_HELD_SQL, {"keys": keys})
        }
        used = tuple(rows.get(hold.key, (0, 0))[0] for hold in holds)
        committed = tuple(sum(rows.get(hold.key, (0, 0))) for hold in holds)
        for index, hold in enumerate(holds):
            if committed[index] + amount > hold.limit:
                return ReserveResult(refused=index, committed=committed, used=used)
        conn.execute(_HOLD_SQL, {"keys": keys, "amount": amount})
    return ReserveResult(refused=None, committed=tuple(c + amount for c in committed))


def settle(conn: sqlite3.Connection, keys: str, reserved: int, used: int) -> None:
    """``keys`` is the JSON array of the keys."""
    conn.execute(_SETTLE_SQL, {"keys": keys, "reserved": reserved, "used": used})


def used(conn: sqlite3.Connection, key: str) -> int:
    row = conn.execute("SELECT used FROM budgets WHERE key = ?", (key,)).fetchone()
    return 0 if row is None else int(row[0])


def record_usage(conn: sqlite3.Connection, values: tuple[object, ...]) -> None:
    conn.execute(USAGE.record, values)


def top_users(conn: sqlite3.Connection, sql: str, params: dict[str, object]) -> list[UserUsage]:
    return [quota_codec.user_usage_from_row(row) for row in conn.execute(sql, params)]


def user_usage(conn: sqlite3.Connection, params: dict[str, object]) -> list[DailyUsage]:
    rows = conn.execute(USAGE.user, params)
    return [quota_codec.daily_usage_from_row(row) for row in rows]


def organization_usage(conn: sqlite3.Connection, params: dict[str, object]) -> UsageTotals:
    return quota_codec.totals_from_row(conn.execute(USAGE.organization, params).fetchone())


def purge_ended_windows(
    conn: sqlite3.Connection, params: dict[str, object]
) -> tuple[int, str | None]:
    """Delete one batch of ended quota windows (``quota_codec.ended_window_params``): how
    many, and the last key of the batch (where the next one starts)."""
    with storage.write(conn):
        keys = [row[0] for row in conn.execute(_ENDED_WINDOWS_SQL, params)]
        if keys:
            conn.execute(
                "DELETE FROM budgets WHERE key IN (SELECT value FROM json_each(?))",
                (codec.dumps(keys),),
            )
    return len(keys), (keys[-1] if keys else None)


def count_ended_windows(conn: sqlite3.Connection, params: dict[str, object]) -> int:
    return int(conn.execute(_COUNT_ENDED_WINDOWS_SQL, params).fetchone()[0])

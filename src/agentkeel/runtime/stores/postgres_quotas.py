"""The PostgreSQL store's budget ledger and usage table: the statements
``PostgresSessionStore`` runs, and the reservation function the schema upgrade creates.
"""

from __future__ import annotations

from agentkeel.runtime.stores import quota_codec

__all__ = [
    "COUNT_ENDED_WINDOWS_SQL",
    "PURGE_ENDED_WINDOWS_SQL",
    "RESERVE_FUNCTION",
    "RESERVE_SQL",
    "SETTLE_SQL",
    "USAGE",
    "USED_SQL",
    "user_budgets_where",
    "user_usage_where",
]

# All or nothing over the call's keys, one round trip. Rows are created first (in key
# order, as they are locked, so two calls never wait on each other in a cycle); each
# statement of a function reads the latest committed rows, so the check after the
# lock sees every reservation committed before it. Returns the refused key's
# position (1-based, 0 = reserved) followed by each key's used + reserved.
RESERVE_FUNCTION = """
CREATE OR REPLACE FUNCTION keel_reserve_tokens(p_keys text[], p_limits bigint[], p_amount bigint)
RETURNS bigint[] LANGUAGE plpgsql AS $$
DECLARE
    refused bigint := 0;
    committed bigint[] := '{}';
    held bigint;
BEGIN
    INSERT INTO budgets (key, used, reserved)
        SELECT k, 0, 0 FROM unnest(p_keys) AS k ORDER BY k
        ON CONFLICT (key) DO NOTHING;
    PERFORM 1 FROM budgets WHERE key = ANY(p_keys) ORDER BY key FOR UPDATE;
    FOR i IN 1 .. coalesce(array_length(p_keys, 1), 0) LOOP
        SELECT used + reserved INTO held FROM budgets WHERE key = p_keys[i];
        committed := committed || held;
        IF refused = 0 AND held + p_amount > p_limits[i] THEN
            refused := i;
        END IF;
    END LOOP;
    IF refused = 0 THEN
        UPDATE budgets SET reserved = reserved + p_amount WHERE key = ANY(p_keys);
    END IF;
    RETURN refused || committed;
END
$$
"""

# The user's quota keys: the prefix, then exactly a day or a month label (quota_codec).
_USER_BUDGETS_WHERE = (
    "left(key, length(%(prefix)s)) = %(prefix)s AND ("
    + " OR ".join(
        f"(length(key) = length(%(prefix)s) + {length}"
        f" AND substr(key, length(%(prefix)s) + 1) ~ %(regex{length})s)"
        for length, _, _ in quota_codec.LABELS
    )
    + ")"
)
# 'org:<organization>:user:<user>:<label>' for any organization (see quota_codec).
_ANY_ORG_BUDGETS_WHERE = (
    "left(key, 4) = 'org:' AND ("
    + " OR ".join(
        f"""(length(key) > 4 + length(%(org_user)s) + {length}
    AND substr(key, length(key) - {length - 1} - length(%(org_user)s),
        length(%(org_user)s)) = %(org_user)s
    AND right(key, {length}) ~ %(regex{length})s
    AND strpos(substr(key, 5,
        length(key) - {4 + length} - length(%(org_user)s)), ':') = 0)"""
        for length, _, _ in quota_codec.LABELS
    )
    + ")"
)

# Quota rows whose window label is older than %(before<length>)s, after the key
# %(after)s, in key order (labels compared byte-wise, whatever the database's collation).
_ENDED_WINDOWS_WHERE = (
    "key > %(after)s AND ("
    + " OR ".join(
        f"left(key, {len(prefix)}) = '{prefix}'" for prefix in quota_codec.QUOTA_KEY_PREFIXES
    )
    + ") AND ("
    + " OR ".join(
        f"(substr(key, length(key) - {length}, 1) = ':'"
        f" AND right(key, {length}) ~ %(regex{length})s"
        f' AND right(key, {length}) COLLATE "C" < %(before{length})s)'
        for length, _, _ in quota_codec.LABELS
    )
    + ")"
)

# One batch of the retention sweep: how many rows went, and the batch's last key.
PURGE_ENDED_WINDOWS_SQL = f"""
WITH gone AS (
    DELETE FROM budgets WHERE key IN (
        SELECT key FROM budgets WHERE {_ENDED_WINDOWS_WHERE}
        ORDER BY key LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ) RETURNING key
)
SELECT count(*), max(key) FROM gone
"""

COUNT_ENDED_WINDOWS_SQL = f"SELECT count(*) FROM budgets WHERE {_ENDED_WINDOWS_WHERE}"

RESERVE_SQL = "SELECT keel_reserve_tokens(%s::text[], %s::bigint[], %s::bigint)"

# After a refusal: each key's settled tokens, apart from what calls in flight hold.
USED_SQL = "SELECT key, used FROM budgets WHERE key = ANY(%s::text[])"

# Keys in order, as the reservation locks them.
SETTLE_SQL = """
INSERT INTO budgets AS b (key, used, reserved)
SELECT k, %(used)s::bigint, 0 FROM unnest(%(keys)s::text[]) AS k ORDER BY k
ON CONFLICT (key) DO UPDATE SET
    reserved = GREATEST(b.reserved - %(reserved)s::bigint, 0), used = b.used + excluded.used
"""

USAGE = quota_codec.usage_statements(lambda name: f"%({name})s", "%s")
"""The usage table's statements (shared with SQLite, ``quota_codec``)."""


def user_budgets_where(organization: str | None) -> str:
    """The user's quota rows: in ``organization``, or in every one (and none)."""
    if organization is not None:
        return _USER_BUDGETS_WHERE
    return f"({_USER_BUDGETS_WHERE}) OR ({_ANY_ORG_BUDGETS_WHERE})"


def user_usage_where(organization: str | None) -> str:
    """The user's usage rows: in ``organization``, or in every one (and none)."""
    if organization is not None:
        return "user_id = %(user_id)s AND organization = %(organization_column)s"
    return "user_id = %(user_id)s"

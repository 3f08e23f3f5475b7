"""The PostgreSQL store's budget ledger and usage table: the statements
``PostgresSessionStore`` runs, and the reservation function the schema upgrade creates.
"""

from __future__ import annotations

from agentkeel.runtime.stores import quota_codec

__all__ = [
    "ORG_USAGE_SQL",
    "RECORD_USAGE_SQL",
    "RESERVE_FUNCTION",
    "RESERVE_SQL",
    "SETTLE_SQL",
    "TOP_USERS_SQL",
    "USER_USAGE_SQL",
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

RESERVE_SQL = "SELECT keel_reserve_tokens(%s::text[], %s::bigint[], %s::bigint)"

# Keys in order, as the reservation locks them.
SETTLE_SQL = """
INSERT INTO budgets AS b (key, used, reserved)
SELECT k, %(used)s::bigint, 0 FROM unnest(%(keys)s::text[]) AS k ORDER BY k
ON CONFLICT (key) DO UPDATE SET
    reserved = GREATEST(b.reserved - %(reserved)s::bigint, 0), used = b.used + excluded.used
"""

RECORD_USAGE_SQL = f"""
INSERT INTO token_usage AS u ({quota_codec.USAGE_COLUMNS})
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
ON CONFLICT (day, organization, user_id, agent_id, model, key_link) DO UPDATE SET
    input_tokens = u.input_tokens + excluded.input_tokens,
    output_tokens = u.output_tokens + excluded.output_tokens,
    calls = u.calls + excluded.calls,
    spend = u.spend + excluded.spend
"""

TOP_USERS_SQL = f"""
SELECT user_id, organization, {quota_codec.USAGE_SUMS} FROM token_usage
WHERE day >= %(first_day)s AND day <= %(last_day)s {{organization}}
GROUP BY user_id, organization
ORDER BY sum(input_tokens) + sum(output_tokens) DESC, user_id, organization LIMIT %(limit)s
"""

ORG_USAGE_SQL = f"""
SELECT {quota_codec.USAGE_SUMS} FROM token_usage
WHERE organization = %(organization)s AND day >= %(first_day)s AND day <= %(last_day)s
"""

USER_USAGE_SQL = f"""
SELECT day, model, {quota_codec.USAGE_SUMS} FROM token_usage
WHERE user_id = %(user_id)s AND organization = %(organization)s
    AND day >= %(first_day)s AND day <= %(last_day)s
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
        return "user_id = %(user_id)s AND organization = %(organization_column)s"
    return "user_id = %(user_id)s"

"""The usage table and the quota keys in the session stores, on SQLite and PostgreSQL:
rows add up per (day, organization, user, agent, model, key link), the reports read them
back, and forgetting a user removes their usage and quota rows, nobody else's."""

from __future__ import annotations

from agentkeel.resilience.ledger import Hold
from agentkeel.runtime.stores import SessionBackend
from agentkeel.runtime.usage import UsageRecord


def call(
    user: str = "ana",
    *,
    organization: str | None = "acme",
    day: str = "2025-01-31",
    model: str = "gpt-4o",
    link: str = "platform",
    agent: str = "support",
    tokens: tuple[int, int] = (100, 20),
    spend: float = 0.001,
) -> UsageRecord:
    return UsageRecord(
        day=day,
        user_id=user,
        organization=organization,
        agent_id=agent,
        model=model,
        key_link=link,
        input_tokens=tokens[0],
        output_tokens=tokens[1],
        spend=spend if link == "platform" else 0.0,
    )


async def test_calls_add_up_in_one_row_per_day_user_agent_model_and_link(
    session_store: SessionBackend,
) -> None:
    """Two calls of the same kind add up in one row (calls 2); a BYOK call counts its
    tokens apart from spend; another day and another model get rows of their own."""
    await session_store.record_usage(call())
    await session_store.record_usage(call())
    await session_store.record_usage(call(link="byok", tokens=(50, 5)))
    await session_store.record_usage(call(model="claude", tokens=(10, 1), spend=0.5))
    await session_store.record_usage(call(day="2025-01-30"))
    rows = await session_store.user_usage(
        "ana", organization="acme", first_day="2025-01-01", last_day="2025-01-31"
    )
    summary = [
        (
            r.day,
            r.model,
            r.totals.input_tokens,
            r.totals.output_tokens,
            r.totals.calls,
            round(r.totals.spend, 6),
            r.totals.byok_tokens,
        )
        for r in rows
    ]
    assert summary == [
        ("2025-01-30", "gpt-4o", 100, 20, 1, 0.001, 0),
        ("2025-01-31", "claude", 10, 1, 1, 0.5, 0),
        ("2025-01-31", "gpt-4o", 250, 45, 3, 0.002, 55),
    ]


async def test_top_users_ranks_by_tokens_within_the_window(session_store: SessionBackend) -> None:
    """The top report sums every agent, model and link per user, most tokens first, only
    inside the days asked for, and keeps users of two organizations apart."""
    await session_store.record_usage(call("ana", tokens=(100, 0)))
    await session_store.record_usage(call("ana", agent="billing", tokens=(100, 0)))
    await session_store.record_usage(call("bob", tokens=(300, 0)))
    await session_store.record_usage(call("bob", organization="globex", tokens=(50, 0)))
    await session_store.record_usage(call("cy", organization=None, tokens=(10, 0)))
    await session_store.record_usage(call("dan", day="2025-02-01", tokens=(9999, 0)))

    top = await session_store.top_users(first_day="2025-01-01", last_day="2025-01-31", limit=10)
    assert [(u.user_id, u.organization, u.totals.total_tokens) for u in top] == [
        ("bob", "acme", 300),
        ("ana", "acme", 200),
        ("bob", "globex", 50),
        ("cy", None, 10),
    ]
    two = await session_store.top_users(first_day="2025-01-01", last_day="2025-01-31", limit=2)
    assert len(two) == 2
    acme = await session_store.top_users(
        first_day="2025-01-31", last_day="2025-01-31", limit=10, organization="acme"
    )
    assert [u.user_id for u in acme] == ["bob", "ana"]
    org = await session_store.organization_usage(
        "acme", first_day="2025-01-01", last_day="2025-01-31"
    )
    assert (org.total_tokens, org.calls) == (500, 3)
    nobody = await session_store.organization_usage(
        "initech", first_day="2025-01-01", last_day="2025-01-31"
    )
    assert (nobody.total_tokens, nobody.spend) == (0, 0.0)


async def test_a_user_without_an_organization_is_read_as_such(
    session_store: SessionBackend,
) -> None:
    """organization=None in user_usage is the user without one, not every organization."""
    await session_store.record_usage(call("ana", organization=None, tokens=(1, 0)))
    await session_store.record_usage(call("ana", organization="acme", tokens=(2, 0)))
    rows = await session_store.user_usage(
        "ana", organization=None, first_day="2025-01-31", last_day="2025-01-31"
    )
    assert [r.totals.total_tokens for r in rows] == [1]


async def test_forget_removes_the_users_usage_and_quota_rows_only(
    session_store: SessionBackend,
) -> None:
    """A forget in one organization removes that user's usage rows and day and month quota
    keys there; without an organization, in every one. Users whose id extends the
    forgotten one (``ana:x``, ``ana:2025``) and the organization's own keys stay."""
    keys = [
        "org:acme:user:ana:2025-01-31",
        "org:acme:user:ana:2025-01",
        "org:globex:user:ana:2025-01-31",
        "user:ana:2025-01",
        "org:acme:user:ana:x:2025-01",
        "org:acme:user:ana:2025:2025-01",
        "user:ana:bc:2025-01",
        "orgquota:acme:2025-01",
    ]
    for key in keys:
        await session_store.reserve([Hold(key, 1000)], 5)
        await session_store.settle([key], reserved=5, used=5)
    await session_store.record_usage(call("ana", organization="acme"))
    await session_store.record_usage(call("ana", organization="globex"))
    await session_store.record_usage(call("ana", organization=None))
    await session_store.record_usage(call("ana:x", organization="acme"))

    dry = await session_store.count_user_data("ana", organization="acme")
    assert (dry.budget_rows, dry.usage_rows) == (2, 1)
    done = await session_store.forget_user("ana", limit=10, organization="acme")
    assert (done.budget_rows, done.usage_rows) == (2, 1)
    assert [await session_store.used(key) for key in keys] == [0, 0, 5, 5, 5, 5, 5, 5]

    everywhere = await session_store.forget_user("ana", limit=10)
    assert (everywhere.budget_rows, everywhere.usage_rows) == (2, 2)
    assert [await session_store.used(key) for key in keys] == [0, 0, 0, 0, 5, 5, 5, 5]
    left = await session_store.top_users(first_day="2025-01-01", last_day="2025-01-31", limit=9)
    assert [(u.user_id, u.organization) for u in left] == [("ana:x", "acme")]


async def test_ended_quota_windows_are_purged_in_batches_and_nothing_else(
    session_store: SessionBackend,
) -> None:
    """The retention sweep's statement deletes the quota rows (user, organization user,
    organization) of days before the day label and months before the month label, batch
    by batch in key order, and never a session's row, a current window, or a key whose
    label only looks like a window."""
    old = [
        "user:ana:2025-01-28",
        "user:ana:2024-12",
        "org:acme:user:ana:2025-01-01",
        "org:acme:user:a%3Ab:2024-11",
        "orgquota:acme:2025-01-27",
        "orgquota:acme:2024-12",
        "user:x:2025-01-31:2025-01-02",  # user 'x:2025-01-31', an old day
    ]
    kept = [
        "user:ana:2025-01-29",  # the day the labels start from
        "user:ana:2025-01",  # this month
        "orgquota:acme:2025-01-30",
        "session:2025-01-01",  # a session whose id looks like a day
        "session:s1:2024-12",
        "user:ana:2025-1-01",  # not a label's shape
        "other:2024-12",
    ]
    for key in old + kept:
        assert (await session_store.reserve([Hold(key, 100)], 10)).ok
    window = {"day_before": "2025-01-29", "month_before": "2025-01"}
    assert await session_store.count_quota_windows(**window) == len(old)
    removed, after, batches = 0, "", 0
    while True:
        count, last = await session_store.purge_quota_windows(**window, after=after, limit=3)
        removed, batches = removed + count, batches + 1
        if count < 3 or last is None:
            break
        after = last
    assert (removed, batches) == (len(old), 3)
    assert await session_store.count_quota_windows(**window) == 0
    held = {key: (await session_store.reserve([Hold(key, 100)], 91)).ok for key in old + kept}
    # A purged row starts afresh (room for 91 more); a kept one still holds its 10.
    assert [key for key, fits in held.items() if fits] == old

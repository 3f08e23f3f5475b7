from __future__ import annotations

import asyncio

import pytest

from agentkeel.errors import TokenBudgetExhausted
from agentkeel.resilience.budget import BudgetLedger, InMemoryLedger, TokenBudget
from agentkeel.resilience.clock import ManualClock

# 2023-11-14T22:13:20Z: 6400 s before UTC midnight.
WALL_START = 1_700_000_000.0


def make_budget(
    *, session_limit: int = 1000, user_daily_limit: int = 5000
) -> tuple[TokenBudget, InMemoryLedger, ManualClock]:
    clock = ManualClock(wall_start=WALL_START)
    ledger = InMemoryLedger()
    budget = TokenBudget(
        ledger=ledger, session_limit=session_limit, user_daily_limit=user_daily_limit, clock=clock
    )
    return budget, ledger, clock


def test_in_memory_ledger_is_a_budget_ledger() -> None:
    """InMemoryLedger satisfies the BudgetLedger Protocol that the stores also implement."""
    assert isinstance(InMemoryLedger(), BudgetLedger)


def test_budget_ledger_is_reexported_by_the_session_store_module() -> None:
    """runtime.store keeps exporting BudgetLedger (it lives in resilience now)."""
    from agentkeel.runtime import store

    assert store.BudgetLedger is BudgetLedger


async def test_reserve_then_settle_records_real_usage() -> None:
    """Settling releases the reservation and counts what the call really used on both keys."""
    budget, ledger, _ = make_budget()
    reservation = await budget.reserve("s1", "alice", 300)
    assert await ledger.reserved("session:s1") == 300
    assert reservation.user_key == "user:alice:2023-11-14"
    await budget.settle(reservation, used=120)
    assert await ledger.reserved("session:s1") == 0
    assert await ledger.used("session:s1") == 120
    assert await ledger.used("user:alice:2023-11-14") == 120


async def test_the_same_user_id_in_two_organizations_has_two_daily_budgets() -> None:
    """bob of acme spending his day's budget leaves bob of globex and bob without an
    organization theirs; the organization's key is percent-encoded, so no organization
    name can spell another's key."""
    budget, ledger, _ = make_budget(session_limit=0, user_daily_limit=300)
    spent = await budget.reserve("s1", "bob", 300, organization="acme")
    assert spent.user_key == "org:acme:user:bob:2023-11-14"
    await budget.settle(spent, used=300)
    with pytest.raises(TokenBudgetExhausted) as info:
        await budget.reserve("s2", "bob", 10, organization="acme")
    assert "User 'bob' of organization 'acme'" in info.value.message
    other = await budget.reserve("s3", "bob", 300, organization="globex")
    plain = await budget.reserve("s4", "bob", 300)
    assert (other.user_key, plain.user_key) == (
        "org:globex:user:bob:2023-11-14",
        "user:bob:2023-11-14",
    )
    assert budget.user_key("bob", "a:user:x") == "org:a%3Auser%3Ax:user:bob:2023-11-14"
    assert await ledger.used("user:bob:2023-11-14") == 0


async def test_session_budget_exhausted() -> None:
    """A reservation beyond the session limit fails and holds nothing on either key."""
    budget, ledger, _ = make_budget(session_limit=500)
    first = await budget.reserve("s1", "alice", 400)
    await budget.settle(first, used=400)
    with pytest.raises(TokenBudgetExhausted) as info:
        await budget.reserve("s1", "alice", 200)
    assert "session_token_budget" in info.value.message
    assert info.value.retry_after is None
    assert await ledger.reserved("user:alice:2023-11-14") == 0


async def test_daily_budget_rolls_back_the_session_reservation() -> None:
    """When the user's daily budget refuses, the session reservation is undone, and
    retry_after is the time to UTC midnight."""
    budget, ledger, _ = make_budget(session_limit=1000, user_daily_limit=300)
    with pytest.raises(TokenBudgetExhausted) as info:
        await budget.reserve("s1", "alice", 400)
    assert await ledger.reserved("session:s1") == 0
    assert info.value.retry_after == pytest.approx(6400.0)
    assert info.value.status == 429


async def test_daily_budget_resets_on_the_next_utc_day() -> None:
    """Usage is keyed per UTC day, so tomorrow starts from zero."""
    budget, _, clock = make_budget(session_limit=0, user_daily_limit=300)
    await budget.settle(await budget.reserve("s1", "alice", 300), used=300)
    with pytest.raises(TokenBudgetExhausted):
        await budget.reserve("s2", "alice", 10)
    clock.advance(6400)
    reservation = await budget.reserve("s2", "alice", 10)
    assert reservation.user_key == "user:alice:2023-11-15"


async def test_zero_limits_mean_unlimited_and_skip_the_ledger() -> None:
    """Limit 0 is no limit: nothing is written to the ledger."""
    budget, ledger, _ = make_budget(session_limit=0, user_daily_limit=0)
    reservation = await budget.reserve("s1", "alice", 10**9)
    await budget.settle(reservation, used=10**9)
    assert reservation.session_key is None and reservation.user_key is None
    assert await ledger.used("session:s1") == 0


async def test_concurrent_reservations_cannot_overspend() -> None:
    """Fifty concurrent reservations of 30 tokens against a 1000-token session budget:
    exactly 33 succeed, and the ledger never holds more than the limit."""
    budget, ledger, _ = make_budget(session_limit=1000, user_daily_limit=100_000)

    async def one() -> bool:
        try:
            await budget.reserve("s1", "alice", 30)
        except TokenBudgetExhausted:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(50)))
    assert sum(results) == 33
    assert await ledger.reserved("session:s1") == 990
    assert await ledger.reserved("user:alice:2023-11-14") == 990


async def test_concurrent_reservations_across_sessions_respect_the_daily_budget() -> None:
    """Fifty sessions of one user racing for a 1000-token day never exceed it, and the
    refused ones leave no session reservation behind."""
    budget, ledger, _ = make_budget(session_limit=100, user_daily_limit=1000)

    async def one(n: int) -> bool:
        try:
            await budget.reserve(f"s{n}", "alice", 30)
        except TokenBudgetExhausted:
            return False
        return True

    results = await asyncio.gather(*(one(n) for n in range(50)))
    assert sum(results) == 33
    assert await ledger.reserved("user:alice:2023-11-14") == 990
    held = [await ledger.reserved(f"session:s{n}") for n in range(50)]
    assert sum(held) == 990

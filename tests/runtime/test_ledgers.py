"""Every budget ledger on one contract: in memory, SQLite, PostgreSQL and Redis.

``ledgers`` opens two ledger objects on one backend, as two replicas would (in
memory: the same object, it serves one process). PostgreSQL and Redis skip with a
reason when they are not reachable.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import redis.asyncio as aioredis

from agentkeel.errors import InvalidRequest, Unavailable
from agentkeel.resilience.ledger import BudgetLedger, Hold, InMemoryLedger
from agentkeel.runtime.stores import open_store
from agentkeel.runtime.stores.redis_ledger import RedisLedger

LedgerFactory = Callable[[], Awaitable[BudgetLedger]]


@pytest.fixture(
    params=[
        "memory",
        "sqlite",
        pytest.param("postgres", marks=pytest.mark.postgres),
        pytest.param("redis", marks=pytest.mark.redis),
    ]
)
async def ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LedgerFactory]:
    """Opens ledgers on one backend (each call: another replica's); closes them after."""
    closers: list[Callable[[], Awaitable[None]]] = []
    if request.param == "memory":
        shared = InMemoryLedger()

        async def memory() -> BudgetLedger:
            return shared

        yield memory
        return
    if request.param == "redis":
        url: str = request.getfixturevalue("redis_url")
        prefix = f"keeltest:{uuid.uuid4().hex[:12]}:"

        async def redis_one() -> BudgetLedger:
            ledger = RedisLedger(url=url, prefix=prefix)
            await ledger.open()
            closers.append(ledger.aclose)
            return ledger

        yield redis_one
        for close in closers:
            await close()
        client = aioredis.Redis.from_url(url)
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
        await client.aclose()
        return
    store_url = (
        f"sqlite:///{tmp_path / 'sessions.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_schema_url")
    )

    async def store_one() -> BudgetLedger:
        store = open_store(store_url)
        await store.open()
        closers.append(store.aclose)
        return store

    yield store_one
    for close in closers:
        await close()


async def test_a_ledger_is_a_budget_ledger(ledgers: LedgerFactory) -> None:
    """Every implementation satisfies the Protocol the budget is written against."""
    assert isinstance(await ledgers(), BudgetLedger)


async def test_reservation_is_all_or_nothing(ledgers: LedgerFactory) -> None:
    """A call whose second key has no room reserves on neither; the result names the
    refusing hold and what each key held; a call that fits holds on both."""
    ledger = await ledgers()
    holds = [Hold("session:s1", 1000), Hold("user:ana:2025-01-31", 50, ttl_s=3600)]
    refused = await ledger.reserve(holds, 60)
    assert (refused.ok, refused.refused, refused.committed) == (False, 1, (0, 0))
    fits = await ledger.reserve(holds, 50)
    assert (fits.ok, fits.committed) == (True, (50, 50))
    after = await ledger.reserve(holds, 1)
    assert (after.refused, after.committed) == (1, (50, 50))
    await ledger.settle([h.key for h in holds], reserved=50, used=20)
    assert await ledger.used("session:s1") == await ledger.used("user:ana:2025-01-31") == 20
    assert (await ledger.reserve(holds, 30)).committed == (50, 50)


async def test_a_refusal_tells_used_tokens_from_held_ones(ledgers: LedgerFactory) -> None:
    """A refusal reports each key's used tokens apart from what calls in flight hold, as
    they stood, so the budget can tell a used-up quota from a busy one; a success
    reports no split."""
    ledger = await ledgers()
    day = Hold("user:ana:2025-01-31", 100, ttl_s=3600)
    assert (await ledger.reserve([day], 30)).ok
    await ledger.settle([day.key], reserved=30, used=30)
    running = await ledger.reserve([Hold("session:s1", 1000), day], 50)
    assert (running.ok, running.used) == (True, ())
    refused = await ledger.reserve([Hold("session:s2", 1000), day], 40)
    assert (refused.refused, refused.committed, refused.used) == (1, (0, 80), (0, 30))
    assert (refused.held(0), refused.held(1)) == (0, 50)
    fresh = await ledger.reserve([Hold("never-seen", 5)], 6)
    assert (fresh.committed, fresh.used) == ((0,), (0,))


async def test_the_first_refusing_hold_is_reported(ledgers: LedgerFactory) -> None:
    """When several holds have no room, the first one is named."""
    ledger = await ledgers()
    result = await ledger.reserve([Hold("a", 100), Hold("b", 5), Hold("c", 5)], 10)
    assert result.refused == 1


async def test_no_holds_is_a_reservation_of_nothing(ledgers: LedgerFactory) -> None:
    """An empty call succeeds and holds nothing."""
    result = await (await ledgers()).reserve([], 10)
    assert (result.ok, result.committed) == (True, ())


async def test_settle_releases_the_reservation_and_records_use(ledgers: LedgerFactory) -> None:
    """settle frees what was reserved, counts what was used, and never goes below 0."""
    ledger = await ledgers()
    k = [Hold("k", 100)]
    assert (await ledger.reserve(k, 100)).ok
    assert not (await ledger.reserve(k, 1)).ok

    await ledger.settle(["k"], reserved=100, used=40)
    assert await ledger.used("k") == 40
    assert (await ledger.reserve(k, 60)).ok
    assert not (await ledger.reserve(k, 1)).ok

    # Settling more than is reserved must not leave a negative reservation behind.
    await ledger.settle(["k"], reserved=500, used=0)
    assert (await ledger.reserve(k, 60)).ok
    assert not (await ledger.reserve(k, 1)).ok


async def test_a_first_reservation_above_the_limit_fails(ledgers: LedgerFactory) -> None:
    """A new key refuses more than its limit and takes exactly its limit."""
    ledger = await ledgers()
    assert not (await ledger.reserve([Hold("fresh", 10)], 11)).ok
    assert await ledger.used("fresh") == 0
    assert (await ledger.reserve([Hold("fresh", 10)], 10)).ok


async def test_negative_amounts_are_refused(ledgers: LedgerFactory) -> None:
    """Token counts are never negative; a negative one is an InvalidRequest naming the key."""
    ledger = await ledgers()
    with pytest.raises(InvalidRequest, match="'k'"):
        await ledger.reserve([Hold("k", 10)], -1)
    with pytest.raises(InvalidRequest):
        await ledger.settle(["k"], reserved=0, used=-5)


async def test_two_replicas_never_reserve_past_a_shared_limit(ledgers: LedgerFactory) -> None:
    """50 concurrent calls from two replicas, each on its own session key and the user's
    shared day key (limit 205, 10 each): exactly 20 succeed, and every refused call left
    its session key untouched."""
    replicas = [await ledgers(), await ledgers()]

    async def call(n: int) -> bool:
        holds = [Hold(f"session:s{n}", 1000), Hold("user:u1:2025-01-31", 205)]
        return (await replicas[n % 2].reserve(holds, 10)).ok

    results = await asyncio.gather(*(call(n) for n in range(50)))

    assert sum(results) == 20
    for n in range(50):
        if results[n]:
            await replicas[n % 2].settle(
                [f"session:s{n}", "user:u1:2025-01-31"], reserved=10, used=10
            )
    assert await replicas[1].used("user:u1:2025-01-31") == 200
    for n in range(50):
        assert await replicas[1].used(f"session:s{n}") == (10 if results[n] else 0)
    assert not (await replicas[1].reserve([Hold("user:u1:2025-01-31", 205)], 6)).ok
    assert (await replicas[1].reserve([Hold("user:u1:2025-01-31", 205)], 5)).ok


async def test_overlapping_calls_in_any_key_order_keep_every_limit(
    ledgers: LedgerFactory,
) -> None:
    """Calls holding overlapping keys in every order, from two replicas at once, neither
    wait on each other forever nor pass any key's limit."""
    replicas = [await ledgers(), await ledgers()]
    keys = ["user:a", "user:b", "orgquota:acme:2025-01", "orgquota:acme:2025-01-31"]
    limit = 100
    rng = random.Random(7)
    calls = [rng.sample(keys, rng.randint(1, len(keys))) for _ in range(80)]

    async def call(n: int, chosen: list[str]) -> list[str]:
        result = await replicas[n % 2].reserve([Hold(key, limit) for key in chosen], 7)
        return chosen if result.ok else []

    held = await asyncio.wait_for(
        asyncio.gather(*(call(n, chosen) for n, chosen in enumerate(calls))), timeout=30
    )
    assert any(held) and not all(held)
    for chosen in held:
        if chosen:
            await replicas[0].settle(chosen, reserved=7, used=7)
    for key in keys:
        used = await replicas[1].used(key)
        assert used == 7 * sum(key in chosen for chosen in held)
        assert used <= limit


@pytest.mark.redis
async def test_redis_keys_expire_after_their_window_and_settle_never_revives_them(
    redis_url: str,
) -> None:
    """A hold's ttl becomes the key's expiry; a key without one never expires; settling a
    key that is gone does not create it again (it would never expire)."""
    prefix = f"keeltest:{uuid.uuid4().hex[:12]}:"
    ledger = RedisLedger(url=redis_url, prefix=prefix)
    await ledger.open()
    try:
        await ledger.reserve([Hold("day", 100, ttl_s=90_000), Hold("forever", 100)], 5)
        day_ttl = await ledger.ttl_s("day")
        assert day_ttl is not None and 89_000 < day_ttl <= 90_000
        assert await ledger.ttl_s("forever") is None
        await ledger.settle(["gone"], reserved=5, used=5)
        assert await ledger.used("gone") == 0
        assert await ledger.ttl_s("gone") is None
    finally:
        client = aioredis.Redis.from_url(redis_url)
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
        await client.aclose()
        await ledger.aclose()


async def test_an_unreachable_redis_is_unavailable() -> None:
    """A Redis that refuses connections is a 503 ledger_unavailable naming the ledger."""
    ledger = RedisLedger(url="redis://127.0.0.1:9/0")
    with pytest.raises(Unavailable) as caught:
        await ledger.open()
    assert caught.value.code == "ledger_unavailable"
    assert "Redis budget ledger redis://127.0.0.1:9/0" in caught.value.message


@pytest.mark.redis
async def test_redis_forget_removes_exactly_the_users_quota_keys(redis_url: str) -> None:
    """forget_user deletes the user's day and month keys (in one organization, or in every
    one and without one), never those of a user whose id extends theirs or is spelled with
    glob characters, nor the organization's own; a dry run only counts."""
    prefix = f"keeltest:{uuid.uuid4().hex[:12]}:"
    ledger = RedisLedger(url=redis_url, prefix=prefix)
    await ledger.open()
    keys = [
        "org:acme:user:a*:2025-01-31",
        "org:acme:user:a*:2025-01",
        "org:globex:user:a*:2025-01",
        "user:a*:2025-01-31",
        "org:acme:user:a*:x:2025-01",
        "user:a*:bc:2025-01",
        "user:ab:2025-01",
        "org:acme:user:ab:2025-01",
        "orgquota:acme:2025-01",
    ]
    try:
        for key in keys:
            await ledger.reserve([Hold(key, 100, ttl_s=600)], 1)
        assert await ledger.forget_user("a*", organization="acme", dry_run=True) == 2
        assert await ledger.reserved(keys[0]) == 1
        assert await ledger.forget_user("a*", organization="acme") == 2
        assert await ledger.forget_user("a*") == 2
        assert [await ledger.reserved(key) for key in keys] == [0, 0, 0, 0, 1, 1, 1, 1, 1]
    finally:
        client = aioredis.Redis.from_url(redis_url)
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
        await client.aclose()
        await ledger.aclose()

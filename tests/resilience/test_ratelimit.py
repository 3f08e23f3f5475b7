from __future__ import annotations

import uuid

import pytest

from agentkeel.errors import ConfigError
from agentkeel.resilience.ratelimit import RateLimiter


async def test_memory_limiter_allows_up_to_the_limit_then_refuses() -> None:
    """Three per minute: three hits pass, the fourth is refused with a wait of at most a minute."""
    limiter = RateLimiter(per_minute=3)
    try:
        decisions = [await limiter.hit("tools:s1") for _ in range(4)]
        assert [d.allowed for d in decisions] == [True, True, True, False]
        assert 0 < decisions[-1].retry_after <= 60
        assert decisions[0].remaining == 2
    finally:
        await limiter.aclose()


async def test_keys_are_limited_separately() -> None:
    """One session hitting its limit does not limit another."""
    limiter = RateLimiter(per_minute=1)
    try:
        assert (await limiter.hit("a")).allowed
        assert not (await limiter.hit("a")).allowed
        assert (await limiter.hit("b")).allowed
    finally:
        await limiter.aclose()


async def test_zero_means_no_limit() -> None:
    """per_minute=0 never refuses and builds no storage."""
    limiter = RateLimiter(per_minute=0)
    for _ in range(100):
        assert (await limiter.hit("a")).allowed


def test_negative_limit_and_unknown_storage_are_config_errors() -> None:
    """Bad settings fail with a message naming the fix."""
    with pytest.raises(ConfigError, match="0 for no limit"):
        RateLimiter(per_minute=-1)


async def test_unknown_storage_scheme_is_a_config_error() -> None:
    """Only memory:// and redis:// storages are accepted."""
    limiter = RateLimiter(per_minute=5, storage_uri="mongodb://user:pw@db")
    with pytest.raises(ConfigError, match=r"mongodb://user:\*\*\*@db"):
        await limiter.hit("a")


@pytest.mark.redis
async def test_redis_limiter_shares_counts_between_instances(redis_url: str) -> None:
    """Two limiters on one Redis (two replicas) draw on the same counter."""
    prefix = f"agentkeel-test-{uuid.uuid4().hex}"
    first = RateLimiter(per_minute=2, storage_uri=redis_url, key_prefix=prefix)
    second = RateLimiter(per_minute=2, storage_uri=redis_url, key_prefix=prefix)
    try:
        assert (await first.hit("tools:s1")).allowed
        assert (await second.hit("tools:s1")).allowed
        refused = await first.hit("tools:s1")
        assert not refused.allowed
        assert 0 < refused.retry_after <= 60
        assert (await second.hit("tools:s2")).allowed
    finally:
        await first.reset()
        await first.aclose()
        await second.aclose()


async def test_unreachable_redis_lets_hits_through() -> None:
    """A Redis outage fails open: the hit is allowed (and a warning logged)."""
    limiter = RateLimiter(per_minute=1, storage_uri="redis://127.0.0.1:1/0")
    try:
        assert (await limiter.hit("a")).allowed
        assert (await limiter.hit("a")).allowed
    finally:
        await limiter.aclose()

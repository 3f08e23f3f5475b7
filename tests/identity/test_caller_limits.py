"""Front-door limits: request rate and concurrent turns per credential and per user,
in memory and shared through Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest

from agentkeel.config.auth import AuthLimitSettings
from agentkeel.errors import RateLimited
from agentkeel.identity.caller_limits import CallerLimits
from agentkeel.identity.principal import ANONYMOUS, Principal


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def principal(credential: str = "api_key:ci", user: str | None = "ana") -> Principal:
    return Principal(
        kind="api_key",
        credential=credential,
        user_id=user,
        organization="acme",
        scopes=frozenset({"chat"}),
    )


def unique(name: str) -> Principal:
    """A principal whose counters no earlier run left in Redis."""
    return principal(f"api_key:{name}-{uuid.uuid4().hex[:8]}", user=f"u-{uuid.uuid4().hex[:8]}")


def test_request_rate_per_key_is_429_with_the_seconds_until_the_window_frees() -> None:
    """Three requests a minute: the fourth is 429 rate_limited; Retry-After is the time
    until the first leaves the window; then it is let through."""
    clock = Clock()
    limits = CallerLimits(
        AuthLimitSettings(requests_per_minute_per_key=3, requests_per_minute_per_user=0),
        clock=clock,
    )
    assert limits.sync
    for step in range(3):
        limits.check_request_now(principal())
        clock.now += 10 if step < 2 else 0
    with pytest.raises(RateLimited) as caught:
        limits.check_request_now(principal())
    assert caught.value.code == "rate_limited"
    assert caught.value.retry_after == pytest.approx(40.0)
    assert "requests_per_minute_per_key" in caught.value.message
    limits.check_request_now(principal("api_key:other"))
    clock.now += 40.01
    limits.check_request_now(principal())


def test_request_rate_per_user_spans_keys() -> None:
    """Two keys acting for one user share the user's limit."""
    limits = CallerLimits(
        AuthLimitSettings(requests_per_minute_per_key=0, requests_per_minute_per_user=2),
        clock=Clock(),
    )
    limits.check_request_now(principal("api_key:a"))
    limits.check_request_now(principal("api_key:b"))
    with pytest.raises(RateLimited, match="user 'ana'"):
        limits.check_request_now(principal("api_key:c"))
    limits.check_request_now(principal("api_key:c", user="bob"))


def test_concurrent_turns_are_limited_and_released_once() -> None:
    """With 2 turns per key, a third is 429 too_many_concurrent_turns with a Retry-After;
    releasing a slot (twice is the same as once) lets one more start."""
    limits = CallerLimits(
        AuthLimitSettings(concurrent_turns_per_key=2, concurrent_turns_per_user=0), clock=Clock()
    )
    first = limits.start_turn_now(principal())
    limits.start_turn_now(principal())
    with pytest.raises(RateLimited) as caught:
        limits.start_turn_now(principal())
    assert caught.value.code == "too_many_concurrent_turns"
    assert caught.value.retry_after is not None and caught.value.retry_after > 0
    first.release()
    first.release()
    limits.start_turn_now(principal())
    with pytest.raises(RateLimited):
        limits.start_turn_now(principal())


def test_a_refused_user_slot_takes_no_key_slot() -> None:
    """When the user's limit refuses, the key's count is unchanged (both or neither)."""
    limits = CallerLimits(
        AuthLimitSettings(concurrent_turns_per_key=5, concurrent_turns_per_user=1), clock=Clock()
    )
    limits.start_turn_now(principal())
    with pytest.raises(RateLimited, match="user 'ana'"):
        limits.start_turn_now(principal())
    assert limits.running_turns(principal()) == 1


def test_anonymous_and_zero_mean_no_limits() -> None:
    """ANONYMOUS is never limited; 0 turns a limit off."""
    limits = CallerLimits(
        AuthLimitSettings(requests_per_minute_per_key=1, concurrent_turns_per_key=1),
        clock=Clock(),
    )
    for _ in range(5):
        limits.check_request_now(ANONYMOUS)
        limits.start_turn_now(ANONYMOUS)
    off = CallerLimits(
        AuthLimitSettings(
            requests_per_minute_per_key=0,
            requests_per_minute_per_user=0,
            concurrent_turns_per_key=0,
            concurrent_turns_per_user=0,
        ),
        clock=Clock(),
    )
    for _ in range(5):
        off.check_request_now(principal())
        off.start_turn_now(principal())


@pytest.fixture
async def redis_limits(redis_url: str) -> AsyncIterator[CallerLimits]:
    limits = CallerLimits(
        AuthLimitSettings(
            requests_per_minute_per_key=2,
            requests_per_minute_per_user=0,
            concurrent_turns_per_key=1,
            concurrent_turns_per_user=0,
            turn_slot_ttl_s=0.5,
        ),
        storage_uri=redis_url,
    )
    yield limits
    await limits.aclose()


@pytest.mark.redis
async def test_redis_request_rate_is_shared_between_instances(
    redis_limits: CallerLimits, redis_url: str
) -> None:
    """Two CallerLimits on one Redis (two routers) share a key's window: the third request
    on either is 429 with a Retry-After within the minute."""
    other = CallerLimits(redis_limits.settings, storage_uri=redis_url)
    try:
        assert not redis_limits.sync
        caller = unique("rate")
        await redis_limits.check_request(caller)
        await other.check_request(caller)
        with pytest.raises(RateLimited) as caught:
            await other.check_request(caller)
        assert caught.value.code == "rate_limited"
        assert caught.value.retry_after is not None and 50 < caught.value.retry_after <= 60
    finally:
        await other.aclose()


@pytest.mark.redis
@pytest.mark.slow
async def test_redis_turn_slots_are_shared_released_and_lapse(
    redis_limits: CallerLimits, redis_url: str
) -> None:
    """A slot taken on one instance refuses a turn on another; released, it frees; a slot
    never released (a crashed process) lapses after turn_slot_ttl_s."""
    import asyncio

    other = CallerLimits(redis_limits.settings, storage_uri=redis_url)
    try:
        caller = unique("turns")
        slot = await redis_limits.start_turn(caller)
        with pytest.raises(RateLimited) as caught:
            await other.start_turn(caller)
        assert caught.value.code == "too_many_concurrent_turns"
        slot.release()
        await redis_limits.aclose()  # waits for the scheduled release
        await other.start_turn(caller)  # never released: lapses
        with pytest.raises(RateLimited):
            await redis_limits.start_turn(caller)
        await asyncio.sleep(0.7)
        await redis_limits.start_turn(caller)
    finally:
        await other.aclose()

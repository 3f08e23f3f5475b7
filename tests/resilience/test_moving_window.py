from __future__ import annotations

import asyncio

import pytest

from agentkeel.resilience.clock import ManualClock
from agentkeel.resilience.moving_window import MovingWindows
from agentkeel.resilience.ratelimit import RateLimiter


def test_window_allows_the_limit_then_refuses_until_the_oldest_hit_leaves() -> None:
    """Three in 60 s: the fourth is refused with the wait until the first hit is a minute
    old, and allowed once it is."""
    clock = ManualClock(start=100.0)
    windows = MovingWindows(limit=3, window_s=60, clock=clock)
    first = windows.hit("k")
    clock.advance(10)
    assert [windows.hit("k").remaining for _ in range(2)] == [1, 0]
    refused = windows.hit("k")
    assert (first.allowed, first.remaining) == (True, 2)
    assert (refused.allowed, refused.remaining, refused.retry_after) == (False, 0, 50.0)
    clock.advance(49.9)
    assert not windows.hit("k").allowed
    clock.advance(0.1)
    assert windows.hit("k").allowed


def test_refused_hits_do_not_count() -> None:
    """A caller that keeps knocking is let in as soon as the window has room, not later."""
    clock = ManualClock()
    windows = MovingWindows(limit=1, window_s=60, clock=clock)
    assert windows.hit("k").allowed
    for _ in range(10):
        clock.advance(5)
        assert not windows.hit("k").allowed
    clock.advance(10)
    assert windows.hit("k").allowed


def test_keys_are_separate_and_the_least_recently_used_are_forgotten() -> None:
    """Each key has its own window; beyond max_keys the key hit longest ago is dropped."""
    windows = MovingWindows(limit=1, window_s=60, clock=ManualClock(), max_keys=2)
    assert windows.hit("a").allowed and windows.hit("b").allowed
    assert not windows.hit("a").allowed
    assert windows.hit("c").allowed
    assert len(windows) == 2
    assert windows.hit("b").allowed, "b was the least recently used key and was forgotten"
    assert not windows.hit("c").allowed


@pytest.mark.parametrize("arguments", [{"limit": 0}, {"window_s": 0.0}, {"max_keys": 0}], ids=str)
def test_bad_bounds_are_refused(arguments: dict[str, float]) -> None:
    """A window that could never allow a hit, or never forget, is a programming error."""
    options = {"limit": 1, "window_s": 60.0, "max_keys": 10, **arguments}
    with pytest.raises(ValueError, match="limit >= 1"):
        MovingWindows(clock=ManualClock(), **options)  # type: ignore[arg-type]


async def test_memory_rate_limiter_counts_on_its_clock_without_background_work() -> None:
    """The in-memory limiter slides on the clock it is given, and a hit leaves no task or
    worker thread behind (the cost that made every guarded tool call slower)."""
    clock = ManualClock()
    limiter = RateLimiter(per_minute=2, clock=clock)
    before = asyncio.all_tasks()
    decisions = [await limiter.hit("tools:s1") for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[-1].retry_after == 60.0
    assert asyncio.all_tasks() == before
    clock.advance(60)
    assert (await limiter.hit("tools:s1")).allowed
    await limiter.reset()
    assert (await limiter.hit("tools:s1")).remaining == 1

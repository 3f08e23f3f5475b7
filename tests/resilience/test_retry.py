from __future__ import annotations

import random

import pytest

from agentkeel.config.settings import RetrySettings
from agentkeel.errors import ProviderError, ProviderRateLimited, ProviderTimeout
from agentkeel.resilience.clock import ManualClock
from agentkeel.resilience.retry import RetryPolicy, parse_retry_after, retry_after_seconds


class Flaky:
    """Fails with the given errors in order, then returns 'ok'."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def server_error() -> ProviderError:
    return ProviderError("HTTP 503", provider="p", retryable=True, status_code=503)


async def test_retries_retryable_errors_with_capped_full_jitter_backoff() -> None:
    """Each wait is drawn from [0, min(max, initial * 2**n)], and the call then succeeds."""
    clock = ManualClock()
    settings = RetrySettings(max_attempts=4, initial_backoff_s=1.0, max_backoff_s=3.0)
    policy = RetryPolicy(settings=settings, clock=clock, rng=random.Random(7))
    call = Flaky(server_error(), ProviderTimeout("t", provider="p", retryable=True), server_error())
    assert await policy.run(call) == "ok"
    assert call.calls == 4
    assert len(clock.slept) == 3
    for wait, ceiling in zip(clock.slept, (1.0, 2.0, 3.0), strict=True):
        assert 0.0 <= wait <= ceiling
    expected = random.Random(7)
    assert clock.slept == [
        expected.uniform(0, 1.0),
        expected.uniform(0, 2.0),
        expected.uniform(0, 3.0),
    ]


async def test_honours_retry_after_instead_of_backoff() -> None:
    """A 429 with Retry-After waits exactly that long before the retry."""
    clock = ManualClock()
    policy = RetryPolicy(settings=RetrySettings(max_retry_after_s=30), clock=clock)
    call = Flaky(ProviderRateLimited("429", provider="p", retryable=True, retry_after=12.0))
    assert await policy.run(call) == "ok"
    assert clock.slept == [12.0]


async def test_gives_up_at_once_on_a_retry_after_longer_than_allowed() -> None:
    """A Retry-After above max_retry_after_s is not waited out: the error goes back to fall back."""
    clock = ManualClock()
    policy = RetryPolicy(settings=RetrySettings(max_retry_after_s=30), clock=clock)
    error = ProviderRateLimited("429", provider="p", retryable=True, retry_after=120.0)
    call = Flaky(error)
    with pytest.raises(ProviderRateLimited) as info:
        await policy.run(call)
    assert info.value is error
    assert call.calls == 1
    assert clock.slept == []


async def test_non_retryable_errors_are_raised_without_retry() -> None:
    """A 400-style error is not retried."""
    clock = ManualClock()
    policy = RetryPolicy(settings=RetrySettings(), clock=clock)
    call = Flaky(ProviderError("HTTP 400", provider="p", retryable=False, status_code=400))
    with pytest.raises(ProviderError):
        await policy.run(call)
    assert call.calls == 1
    assert clock.slept == []


async def test_raises_the_last_error_after_max_attempts_and_counts_retries() -> None:
    """After max_attempts the last error propagates; the hook saw every retry with its wait."""
    clock = ManualClock()
    seen: list[tuple[int, float]] = []
    policy = RetryPolicy(
        settings=RetrySettings(max_attempts=3, initial_backoff_s=0.5),
        clock=clock,
        on_retry=lambda exc, attempt, wait: seen.append((attempt, wait)),
    )
    last = server_error()
    call = Flaky(server_error(), server_error(), last, server_error())
    with pytest.raises(ProviderError) as info:
        await policy.run(call)
    assert info.value is last
    assert call.calls == 3
    assert [attempt for attempt, _ in seen] == [1, 2]
    assert [wait for _, wait in seen] == clock.slept


async def test_other_exceptions_are_not_retried() -> None:
    """Bugs (non-provider exceptions) surface at once."""
    clock = ManualClock()
    policy = RetryPolicy(settings=RetrySettings(), clock=clock)
    call = Flaky(RuntimeError("bug"))
    with pytest.raises(RuntimeError):
        await policy.run(call)
    assert call.calls == 1


def test_parse_retry_after_reads_seconds_and_http_dates() -> None:
    """Retry-After is delta-seconds or an HTTP date; junk reads as unknown."""
    now = 1_700_000_000.0
    assert parse_retry_after("12", now=now) == 12.0
    assert parse_retry_after(" 1.5 ", now=now) == 1.5
    assert parse_retry_after("-3", now=now) == 0.0
    assert parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now=now) == pytest.approx(60.0)
    assert parse_retry_after("soon", now=now) is None
    assert parse_retry_after(None, now=now) is None
    assert parse_retry_after("", now=now) is None


def test_retry_after_seconds_rounds_up_to_whole_seconds() -> None:
    """A caller told to wait never comes back early: fractions round up, and the
    wait is at least one second."""
    assert [retry_after_seconds(s) for s in (0.0, 0.2, 1.0, 1.4, 29.01)] == [1, 1, 1, 2, 30]

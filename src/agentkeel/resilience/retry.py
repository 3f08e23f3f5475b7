"""Retries on one provider: exponential backoff with full jitter, honouring Retry-After.

Built on tenacity; the sleeps go through the injected ``Clock`` so tests see
every wait without waiting. A ``Retry-After`` longer than
``max_retry_after_s`` is not waited out: the error goes straight back to the
caller, which falls back to the next provider instead.
"""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt
from tenacity.wait import wait_base

from agentkeel.errors import ProviderError
from agentkeel.resilience.clock import Clock

if TYPE_CHECKING:
    from agentkeel.config.settings import RetrySettings

T = TypeVar("T")

RetryListener = Callable[[ProviderError, int, float], None]
"""Called before each retry with the error, the attempt that failed (1-based) and the wait."""


def retry_after_seconds(seconds: float) -> int:
    """The wait to tell a caller, in whole seconds: rounded up and at least 1, since a
    retry even a fraction of a second early is refused again."""
    return max(1, math.ceil(seconds))


class _BackoffWait(wait_base):
    """Full jitter (uniform in [0, min(max, initial * 2**n)]) unless the error names a wait."""

    def __init__(self, *, initial_s: float, max_s: float, rng: random.Random) -> None:
        self._initial_s = initial_s
        self._max_s = max_s
        self._rng = rng

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        if isinstance(exc, ProviderError) and exc.retry_after is not None:
            return max(0.0, exc.retry_after)
        ceiling = min(self._max_s, self._initial_s * 2 ** (retry_state.attempt_number - 1))
        return self._rng.uniform(0.0, ceiling)


class RetryPolicy:
    """Runs an async call, retrying retryable ``ProviderError``s.

    >>> policy = RetryPolicy(settings=RetrySettings(), clock=SystemClock())
    >>> response = await policy.run(lambda: provider.complete(request))
    """

    def __init__(
        self,
        *,
        settings: RetrySettings,
        clock: Clock,
        on_retry: RetryListener | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._on_retry = on_retry
        self._rng = rng or random.Random()

    def should_retry(self, exc: BaseException) -> bool:
        """Retryable errors only, and only when their Retry-After is short enough to wait."""
        if not isinstance(exc, ProviderError) or not exc.retryable:
            return False
        return exc.retry_after is None or exc.retry_after <= self.settings.max_retry_after_s

    async def run(self, call: Callable[[], Awaitable[T]]) -> T:
        """Await ``call()`` up to ``max_attempts`` times; re-raise the last error."""
        retrying = AsyncRetrying(
            sleep=self._clock.sleep,
            stop=stop_after_attempt(self.settings.max_attempts),
            wait=_BackoffWait(
                initial_s=self.settings.initial_backoff_s,
                max_s=self.settings.max_backoff_s,
                rng=self._rng,
            ),
            retry=retry_if_exception(self.should_retry),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        return await retrying(call)

    def _before_sleep(self, retry_state: RetryCallState) -> None:
        if self._on_retry is None or retry_state.outcome is None:
            return
        exc = retry_state.outcome.exception()
        if isinstance(exc, ProviderError):
            wait = retry_state.next_action.sleep if retry_state.next_action else 0.0
            self._on_retry(exc, retry_state.attempt_number, wait)


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds from a ``Retry-After`` header: delta-seconds or an HTTP date.

    ``now`` is the wall-clock time (epoch seconds) to measure a date against.
    Returns None for a missing or unreadable header.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        return max(0.0, float(text))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now)

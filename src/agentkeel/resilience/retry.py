"""Retries on one provider: exponential backoff with full jitter, honouring Retry-After.

A plain loop rather than tenacity: it runs around every model call, and the
first attempt (nearly always the only one) should cost one ``await``, not a
retry state machine. The sleeps go through the injected ``Clock`` so tests see
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
        attempt = 1
        while True:
            try:
                return await call()
            except ProviderError as exc:
                if attempt >= self.settings.max_attempts or not self.should_retry(exc):
                    raise
                wait = self.backoff(exc, attempt)
                if self._on_retry is not None:
                    self._on_retry(exc, attempt, wait)
            await self._clock.sleep(wait)
            attempt += 1

    def backoff(self, exc: ProviderError, attempt: int) -> float:
        """The wait after failed ``attempt`` (1-based): the error's Retry-After when it
        names one, else full jitter, uniform in [0, min(max, initial * 2**(attempt-1))]."""
        if exc.retry_after is not None:
            return max(0.0, exc.retry_after)
        ceiling = min(
            self.settings.max_backoff_s, self.settings.initial_backoff_s * 2 ** (attempt - 1)
        )
        return self._rng.uniform(0.0, ceiling)


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

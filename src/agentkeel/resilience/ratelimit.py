"""Per-key rate limits, in this process's memory or shared through Redis.

A moving window: at most ``per_minute`` hits in any 60 seconds. With a
``redis://`` storage every replica draws on the same counters (through the
``limits`` library); ``memory://`` counts in ``MovingWindows``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItemPerMinute
from limits.aio.strategies import MovingWindowRateLimiter
from limits.errors import ConfigurationError
from limits.storage import storage_from_string

from agentkeel.errors import ConfigError
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.resilience.moving_window import MovingWindows
from agentkeel.resilience.storage import (
    MEMORY_SCHEME,
    REDIS_TIMEOUT_S,
    check_storage_uri,
)
from agentkeel.secrets.redact import redact_url

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Whether one hit was allowed; when not, how many seconds until one would be."""

    allowed: bool
    retry_after: float = 0.0
    remaining: int | None = None


class RateLimiter:
    """At most ``per_minute`` hits per key in any minute; ``per_minute=0`` means no limit.

    Redis storage is connected on the first hit. When it is unreachable the
    limiter lets the hit through and logs a warning: a Redis outage should not
    stop every agent. ``clock`` times the in-memory windows.

    >>> limiter = RateLimiter(per_minute=60, storage_uri="redis://127.0.0.1:6379/0")
    >>> decision = await limiter.hit("tool:session-123")
    >>> await limiter.aclose()
    """

    def __init__(
        self,
        *,
        per_minute: int,
        storage_uri: str = "memory://",
        key_prefix: str = "agentkeel",
        clock: Clock | None = None,
    ) -> None:
        if per_minute < 0:
            raise ConfigError(
                f"Rate limit per_minute is {per_minute}; use a positive number, or 0 for no limit."
            )
        self.per_minute = per_minute
        self.storage_uri = storage_uri
        self._key_prefix = key_prefix
        self._item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        self._windows = (
            MovingWindows(limit=per_minute, window_s=60.0, clock=clock or SystemClock())
            if per_minute > 0 and storage_uri.startswith(MEMORY_SCHEME)
            else None
        )
        self._storage: Any = None
        self._strategy: MovingWindowRateLimiter | None = None
        self._redis_pool: Any = None

    async def hit(self, key: str) -> RateDecision:
        """Count one hit on ``key`` if the limit allows it."""
        if self._item is None:
            return RateDecision(allowed=True)
        if self._windows is not None:
            counted = self._windows.hit(key)
            return RateDecision(
                allowed=counted.allowed,
                retry_after=counted.retry_after,
                remaining=counted.remaining,
            )
        strategy = self._ensure_strategy()
        try:
            allowed = await strategy.hit(self._item, key)
            stats = await strategy.get_window_stats(self._item, key)
        except Exception as exc:
            logger.warning(
                "Rate-limit storage %s is unreachable (%s); allowing the hit. "
                "Check Redis or set redis_url to empty for per-replica limits.",
                redact_url(self.storage_uri),
                exc,
            )
            return RateDecision(allowed=True)
        if allowed:
            return RateDecision(allowed=True, remaining=stats.remaining)
        retry_after = max(0.0, stats.reset_time - time.time())
        return RateDecision(allowed=False, retry_after=retry_after, remaining=0)

    async def reset(self) -> None:
        """Forget every counter under this limiter's key prefix (tests, or lifting a limit)."""
        if self._windows is not None:
            self._windows.clear()
        if self._storage is not None:
            await self._storage.reset()

    async def aclose(self) -> None:
        """Release the storage's connections."""
        if self._redis_pool is not None:
            await self._redis_pool.disconnect()
            self._redis_pool = None
        self._storage = None
        self._strategy = None

    def _ensure_strategy(self) -> MovingWindowRateLimiter:
        if self._strategy is not None:
            return self._strategy
        uri = self.storage_uri
        # memory:// is counted by MovingWindows, so a valid URI here is Redis.
        check_storage_uri(uri, what="Rate-limit storage")
        import redis.asyncio

        try:
            # We own the pool so that aclose() can close its connections.
            self._redis_pool = redis.asyncio.ConnectionPool.from_url(
                uri, socket_connect_timeout=REDIS_TIMEOUT_S, socket_timeout=REDIS_TIMEOUT_S
            )
            self._storage = storage_from_string(
                f"async+{uri}",
                implementation="redispy",
                key_prefix=self._key_prefix,
                connection_pool=self._redis_pool,
            )
        except ConfigurationError as exc:
            raise ConfigError(
                f"Rate-limit storage '{redact_url(uri)}' cannot be used: {exc}."
            ) from exc
        self._strategy = MovingWindowRateLimiter(self._storage)
        return self._strategy

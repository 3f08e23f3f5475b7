"""Per-key rate limits over the ``limits`` library, in memory or shared through Redis.

A moving window: at most ``per_minute`` hits in any 60 seconds. With a
``redis://`` storage every replica draws on the same counters.
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

logger = logging.getLogger(__name__)

_REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://")


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Whether one hit was allowed; when not, how many seconds until one would be."""

    allowed: bool
    retry_after: float = 0.0
    remaining: int | None = None


class RateLimiter:
    """At most ``per_minute`` hits per key in any minute; ``per_minute=0`` means no limit.

    Storage is built on the first hit (the memory backend needs a running event
    loop). When the shared storage is unreachable the limiter lets the hit
    through and logs a warning: a Redis outage should not stop every agent.

    >>> limiter = RateLimiter(per_minute=60, storage_uri="redis://127.0.0.1:6379/0")
    >>> decision = await limiter.hit("tool:session-123")
    >>> await limiter.aclose()
    """

    def __init__(
        self, *, per_minute: int, storage_uri: str = "memory://", key_prefix: str = "agentkeel"
    ) -> None:
        if per_minute < 0:
            raise ConfigError(
                f"Rate limit per_minute is {per_minute}; use a positive number, or 0 for no limit."
            )
        self.per_minute = per_minute
        self.storage_uri = storage_uri
        self._key_prefix = key_prefix
        self._item = RateLimitItemPerMinute(per_minute) if per_minute > 0 else None
        self._storage: Any = None
        self._strategy: MovingWindowRateLimiter | None = None
        self._redis_pool: Any = None

    async def hit(self, key: str) -> RateDecision:
        """Count one hit on ``key`` if the limit allows it."""
        if self._item is None:
            return RateDecision(allowed=True)
        strategy = self._ensure_strategy()
        try:
            allowed = await strategy.hit(self._item, key)
            stats = await strategy.get_window_stats(self._item, key)
        except Exception as exc:
            if self._is_memory:
                raise
            logger.warning(
                "Rate-limit storage %s is unreachable (%s); allowing the hit. "
                "Check Redis or set redis_url to empty for per-replica limits.",
                _redact(self.storage_uri),
                exc,
            )
            return RateDecision(allowed=True)
        if allowed:
            return RateDecision(allowed=True, remaining=stats.remaining)
        retry_after = max(0.0, stats.reset_time - time.time())
        return RateDecision(allowed=False, retry_after=retry_after, remaining=0)

    async def reset(self) -> None:
        """Forget every counter under this limiter's key prefix (tests, or lifting a limit)."""
        if self._storage is not None:
            await self._storage.reset()

    async def aclose(self) -> None:
        """Release the storage's connections."""
        if self._redis_pool is not None:
            await self._redis_pool.disconnect()
            self._redis_pool = None
        self._storage = None
        self._strategy = None

    @property
    def _is_memory(self) -> bool:
        return self.storage_uri.startswith("memory://")

    def _ensure_strategy(self) -> MovingWindowRateLimiter:
        if self._strategy is not None:
            return self._strategy
        uri = self.storage_uri
        try:
            if uri.startswith("memory://"):
                self._storage = storage_from_string("async+memory://")
            elif uri.startswith(_REDIS_SCHEMES):
                import redis.asyncio

                # We own the pool so that aclose() can close its connections.
                # Bounded timeouts: a blackholed Redis must not hang every tool call.
                self._redis_pool = redis.asyncio.ConnectionPool.from_url(
                    uri, socket_connect_timeout=2.0, socket_timeout=2.0
                )
                self._storage = storage_from_string(
                    f"async+{uri}",
                    implementation="redispy",
                    key_prefix=self._key_prefix,
                    connection_pool=self._redis_pool,
                )
            else:
                raise ConfigError(
                    f"Rate-limit storage '{_redact(uri)}' is not supported; "
                    "use memory:// or redis://host:port/db."
                )
        except ConfigurationError as exc:
            raise ConfigError(
                f"Rate-limit storage '{_redact(uri)}' cannot be used: {exc}."
            ) from exc
        self._strategy = MovingWindowRateLimiter(self._storage)
        return self._strategy


def _redact(uri: str) -> str:
    """The URI without a password (redis://:secret@host → redis://***@host)."""
    scheme, sep, rest = uri.partition("://")
    if "@" not in rest:
        return uri
    return f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}"

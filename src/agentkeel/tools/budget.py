"""``SessionCallBudget``: at most N tool calls in one session, across all its turns.

The storm detector stops the same call repeated within a turn; this stops a
session that keeps calling tools turn after turn. Counts live in this
process's memory, or in Redis when ``redis://`` storage is given so that a
session that moves to another replica keeps its count.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

from agentkeel.errors import ConfigError
from agentkeel.resilience.storage import (
    MEMORY_SCHEME,
    REDIS_TIMEOUT_S,
    check_storage_uri,
)
from agentkeel.secrets.redact import redact_url

logger = logging.getLogger("agentkeel.tools.client")


@dataclass(frozen=True, slots=True)
class BudgetDecision:
    """Whether one more call fits; ``used`` counts calls including this one."""

    allowed: bool
    used: int
    limit: int


class SessionCallBudget:
    """Counts tool calls per session against ``limit`` (0 = no limit).

    When Redis is unreachable the call is allowed and a warning logged: a Redis
    outage must not stop every agent.

    >>> budget = SessionCallBudget(limit=200, storage_uri="redis://127.0.0.1:6379/0")
    >>> decision = await budget.spend("session-123")
    """

    def __init__(
        self,
        *,
        limit: int,
        storage_uri: str = "memory://",
        ttl_s: int = 7 * 24 * 3600,
        max_sessions: int = 100_000,
        key_prefix: str = "agentkeel:tool-budget:",
    ) -> None:
        if limit < 0:
            raise ConfigError(
                f"tools.session_call_budget is {limit}; use a positive number, or 0 for no limit."
            )
        check_storage_uri(storage_uri, what="Tool budget storage")
        self.limit = limit
        self.storage_uri = storage_uri
        self._ttl_s = ttl_s
        self._max_sessions = max_sessions
        self._prefix = key_prefix
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._redis: Any = None

    async def spend(self, session_id: str) -> BudgetDecision:
        """Count one call for ``session_id`` if the budget has room for it."""
        if self.limit == 0:
            return BudgetDecision(allowed=True, used=0, limit=0)
        if self.storage_uri.startswith(MEMORY_SCHEME):
            used = self._counts.pop(session_id, 0)
            if used < self.limit:
                used += 1
                allowed = True
            else:
                allowed = False
            self._counts[session_id] = used
            while len(self._counts) > self._max_sessions:
                self._counts.popitem(last=False)
            return BudgetDecision(allowed=allowed, used=used, limit=self.limit)
        return await self._spend_redis(session_id)

    async def _spend_redis(self, session_id: str) -> BudgetDecision:
        key = f"{self._prefix}{session_id}"
        try:
            client = self._client()
            async with client.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.expire(key, self._ttl_s)
                used, _ = await pipe.execute()
        except Exception as exc:
            logger.warning(
                "Tool budget storage %s is unreachable (%s); allowing the call. Check Redis.",
                redact_url(self.storage_uri),
                exc,
            )
            return BudgetDecision(allowed=True, used=0, limit=self.limit)
        # Calls over the limit still count, which is harmless: the answer stays "no".
        return BudgetDecision(allowed=int(used) <= self.limit, used=int(used), limit=self.limit)

    def _client(self) -> Any:
        if self._redis is None:
            import redis.asyncio

            self._redis = redis.asyncio.Redis.from_url(
                self.storage_uri,
                socket_connect_timeout=REDIS_TIMEOUT_S,
                socket_timeout=REDIS_TIMEOUT_S,
            )
        return self._redis

    async def aclose(self) -> None:
        """Release Redis connections."""
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None

"""``RedisLedger``: the token budget ledger in Redis, shared by every replica.

Each budget key is a hash ``<prefix><key>`` with the fields ``used`` and
``reserved``. A reservation is one Lua script over all the keys of the call:
Redis runs a script alone, so it checks every limit and adds the reservation to
all of them or to none, atomically across replicas. Keys expire after their
window plus a margin (``Hold.ttl_s``; a session's key a while after its last
reservation), so old days and months leave Redis by themselves; settling never
creates a key that is gone.

Chosen by ``quotas.ledger: redis`` (or ``auto`` with ``redis_url`` set). The
keys of one call are read in one script, so on Redis Cluster they must share a
slot: give the prefix (``quotas.redis_prefix``) a hash tag (``{agentkeel}:budget:``).

>>> ledger = RedisLedger(url="redis://127.0.0.1:6379/0")
>>> await ledger.open()
>>> await ledger.reserve([Hold("session:s1", 200_000, 2_592_000.0)], 900)
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agentkeel.errors import Unavailable
from agentkeel.resilience.budget import user_budget_prefix
from agentkeel.resilience.ledger import Hold, ReserveResult, check_amounts
from agentkeel.resilience.storage import redis_client
from agentkeel.secrets.redact import redact_url

__all__ = ["DEFAULT_PREFIX", "RedisLedger"]

DEFAULT_PREFIX = "agentkeel:budget:"

# KEYS: the call's budget keys. ARGV[1]: the amount; then each key's limit; then each
# key's time to live in ms (0: none). Returns {refused (1-based, 0 = reserved), each
# key's used + reserved before the call, then each key's used alone}.
_RESERVE = """
local amount = tonumber(ARGV[1])
local n = #KEYS
local refused = 0
local committed = {}
for i = 1, n do
  local values = redis.call('HMGET', KEYS[i], 'used', 'reserved')
  local used = tonumber(values[1]) or 0
  local held = used + (tonumber(values[2]) or 0)
  committed[i] = held
  committed[n + i] = used
  if refused == 0 and held + amount > tonumber(ARGV[1 + i]) then refused = i end
end
if refused == 0 then
  for i = 1, n do
    redis.call('HINCRBY', KEYS[i], 'reserved', amount)
    local ttl = tonumber(ARGV[1 + n + i])
    if ttl > 0 then redis.call('PEXPIRE', KEYS[i], ttl) end
  end
end
table.insert(committed, 1, refused)
return committed
"""

# KEYS: the keys to settle. ARGV: reserved, used. A key that expired or was removed is
# left alone: recreating it would keep it forever.
_SETTLE = """
local reserved = tonumber(ARGV[1])
local used = tonumber(ARGV[2])
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    local held = tonumber(redis.call('HGET', KEYS[i], 'reserved')) or 0
    local left = held - reserved
    if left < 0 then left = 0 end
    redis.call('HSET', KEYS[i], 'reserved', left)
    redis.call('HINCRBY', KEYS[i], 'used', used)
  end
end
return 1
"""


class RedisLedger:
    """A ``BudgetLedger`` in Redis at ``url``, its keys under ``prefix``."""

    def __init__(self, *, url: str, prefix: str = DEFAULT_PREFIX) -> None:
        self.where = f"Redis budget ledger {redact_url(url)}"
        self._url = url
        self._prefix = prefix
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    async def open(self) -> None:
        """Connect and check that Redis answers; ``Unavailable`` when it does not."""
        if self._redis is not None:
            return
        client = redis_client(self._url)
        self._scripts = {
            "reserve": client.register_script(_RESERVE),
            "settle": client.register_script(_SETTLE),
        }
        self._redis = client
        try:
            async with self._call():
                await client.ping()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the connection pool; safe to call twice."""
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    async def reserve(self, holds: Sequence[Hold], amount: int) -> ReserveResult:
        """Reserve ``amount`` on every hold's key if each stays within its limit, or on none."""
        check_amounts([h.key for h in holds], amount=amount)
        if not holds:
            return ReserveResult(refused=None, committed=())
        args: list[int] = [amount, *(hold.limit for hold in holds)]
        args.extend(_ttl_ms(hold.ttl_s) for hold in holds)
        async with self._call():
            reply = await self._scripts["reserve"](
                keys=[self._prefix + hold.key for hold in holds], args=args
            )
        refused, *values = (int(value) for value in reply)
        committed, used = tuple(values[: len(holds)]), tuple(values[len(holds) :])
        if refused:
            return ReserveResult(refused=refused - 1, committed=committed, used=used)
        return ReserveResult(refused=None, committed=tuple(c + amount for c in committed))

    async def settle(self, keys: Sequence[str], reserved: int, used: int) -> None:
        """Release ``reserved`` on each key (never below 0) and record ``used``."""
        check_amounts(keys, reserved=reserved, used=used)
        if not keys:
            return
        async with self._call():
            await self._scripts["settle"](
                keys=[self._prefix + key for key in keys], args=[reserved, used]
            )

    async def used(self, key: str) -> int:
        """Tokens recorded as used under ``key`` (0 if never seen or expired)."""
        async with self._call() as client:
            value = await client.hget(self._prefix + key, "used")
        return int(value) if value is not None else 0

    async def reserved(self, key: str) -> int:
        """Tokens held by reservations not yet settled."""
        async with self._call() as client:
            value = await client.hget(self._prefix + key, "reserved")
        return int(value) if value is not None else 0

    async def forget_user(
        self, user_id: str, *, organization: str | None = None, dry_run: bool = False
    ) -> int:
        """Delete the user's quota keys (day and month; in ``organization``, or in every one
        and without one): how many there were. Scans the ledger's keys, so it is for the
        rare forget, never a turn."""
        prefix = _glob_escape(self._prefix)
        if organization is not None:
            patterns = [prefix + _glob_escape(user_budget_prefix(user_id, organization))]
        else:
            patterns = [
                prefix + _glob_escape(user_budget_prefix(user_id)),
                f"{prefix}org:*:user:{_glob_escape(user_id)}:",
            ]
        found: list[str] = []
        async with self._call() as client:
            for pattern in patterns:
                async for key in client.scan_iter(match=f"{pattern}*", count=1000):
                    name = str(key)[len(self._prefix) :]
                    if _is_user_key(name, user_id, organization):
                        found.append(str(key))
            if found and not dry_run:
                await client.delete(*found)
        return len(found)

    async def ttl_s(self, key: str) -> float | None:
        """Seconds until ``key`` expires; ``None`` when it has no expiry or does not exist."""
        async with self._call() as client:
            ms = await client.pttl(self._prefix + key)
        return None if ms < 0 else ms / 1000

    @asynccontextmanager
    async def _call(self) -> AsyncIterator[aioredis.Redis]:
        client = self._redis
        if client is None:
            raise Unavailable(
                f"{self.where} is not open; call `await ledger.open()` first",
                code="ledger_unavailable",
            )
        try:
            yield client
        except RedisError as exc:
            raise Unavailable(
                f"{self.where} failed: {type(exc).__name__}: {exc}. Check that Redis is up and "
                "reachable at redis_url (quotas.ledger: redis), or set quotas.ledger: store "
                "to keep budgets in the session store.",
                code="ledger_unavailable",
                retry_after=1.0,
            ) from exc


_LABEL = re.compile(r"[0-9]{4}-[0-9]{2}(-[0-9]{2})?")


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis SCAN pattern."""
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def _is_user_key(name: str, user_id: str, organization: str | None) -> bool:
    """Whether ``name`` is exactly a day or month quota key of the user (in
    ``organization``, or in any one and none when it is ``None``)."""
    prefixes = [user_budget_prefix(user_id, organization)]
    if organization is None:
        # An organization's part is percent-encoded: it ends at the first ':' after 'org:'.
        head = name.partition(":user:")[0]
        if head.startswith("org:") and head[4:] and ":" not in head[4:]:
            prefixes.append(f"{head}:user:{user_id}:")
    return any(
        name.startswith(prefix) and _LABEL.fullmatch(name[len(prefix) :]) is not None
        for prefix in prefixes
    )


def _ttl_ms(ttl_s: float | None) -> int:
    return 0 if ttl_s is None else max(1, int(ttl_s * 1000))

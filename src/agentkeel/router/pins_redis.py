"""``RedisPinStore``: pins and the routing table in Redis, shared by several routers.

Keys under one prefix (``router.redis_prefix``):

- ``<prefix>:pin:<session>``: the version, expiring with the pin;
- ``<prefix>:version:<version>``: a sorted set of that version's sessions scored
  by expiry, so counting live pins never scans the keyspace;
- ``<prefix>:table`` and ``<prefix>:table:rev``: the routing table (JSON) and
  its revision, written together by a compare-and-set script.

Writing a pin (new or moved) and deleting one are single scripts, so the pin
key and the per-version sets never disagree.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from agentkeel.errors import Unavailable
from agentkeel.resilience.storage import redis_client
from agentkeel.router.table import TableDoc
from agentkeel.secrets.redact import redact_url

__all__ = ["RedisPinStore"]

_PUT = """
local old = redis.call('GET', KEYS[1])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if old and old ~= ARGV[1] then redis.call('ZREM', ARGV[5] .. old, ARGV[4]) end
redis.call('ZADD', ARGV[5] .. ARGV[1], ARGV[3], ARGV[4])
return 1
"""

_DELETE = """
local old = redis.call('GET', KEYS[1])
if old then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', ARGV[2] .. old, ARGV[1])
end
return 1
"""

_WRITE_TABLE = """
local current = tonumber(redis.call('GET', KEYS[2]) or '0')
if current ~= tonumber(ARGV[1]) then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[3])
return 1
"""

_DROP_BATCH = 500


class RedisPinStore:
    """Pins and the routing table in Redis at ``url`` under ``prefix``.

    >>> store = RedisPinStore(url="redis://127.0.0.1:6379/0", prefix="agentkeel:router",
    ...     ttl_s=172800)
    """

    def __init__(
        self,
        *,
        url: str,
        prefix: str,
        ttl_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.where = f"Redis router store {redact_url(url)}"
        self._url = url
        self._prefix = prefix
        self._ttl_ms = max(1, int(ttl_s * 1000))
        self._clock = clock
        self._versions_prefix = f"{prefix}:version:"
        self._table_key = f"{prefix}:table"
        self._revision_key = f"{prefix}:table:rev"
        self._redis: aioredis.Redis | None = None
        self._scripts: dict[str, Any] = {}

    async def open(self) -> None:
        if self._redis is not None:
            return
        client = redis_client(self._url)
        self._scripts = {
            "put": client.register_script(_PUT),
            "delete": client.register_script(_DELETE),
            "write_table": client.register_script(_WRITE_TABLE),
        }
        self._redis = client
        async with self._call():
            await client.ping()

    async def aclose(self) -> None:
        client, self._redis = self._redis, None
        if client is not None:
            await client.aclose()

    @asynccontextmanager
    async def _call(self) -> AsyncIterator[aioredis.Redis]:
        client = self._redis
        if client is None:
            raise Unavailable(
                f"{self.where} is not open; call `await store.open()` first",
                code="store_unavailable",
            )
        try:
            yield client
        except RedisError as exc:
            raise Unavailable(
                f"{self.where} failed: {type(exc).__name__}: {exc}. Check that Redis is up and "
                "reachable, and the URL in router.pins.",
                code="store_unavailable",
                retry_after=1.0,
            ) from exc

    def _pin_key(self, session_id: str) -> str:
        return f"{self._prefix}:pin:{session_id}"

    async def get(self, session_id: str) -> str | None:
        async with self._call() as client:
            value = await client.get(self._pin_key(session_id))
        return str(value) if value is not None else None

    async def put(self, session_id: str, version: str) -> None:
        expires_at = self._clock() + self._ttl_ms / 1000
        async with self._call():
            await self._scripts["put"](
                keys=[self._pin_key(session_id)],
                args=[version, self._ttl_ms, expires_at, session_id, self._versions_prefix],
            )

    async def delete(self, session_id: str) -> None:
        async with self._call():
            await self._scripts["delete"](
                keys=[self._pin_key(session_id)], args=[session_id, self._versions_prefix]
            )

    async def counts(self, versions: Iterable[str]) -> dict[str, int]:
        names = list(versions)
        now = self._clock()
        async with self._call() as client:
            pipe = client.pipeline(transaction=False)
            for version in names:
                key = self._versions_prefix + version
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.zcard(key)
            results = await pipe.execute()
        return {version: int(results[2 * index + 1]) for index, version in enumerate(names)}

    async def drop_version(self, version: str) -> int:
        key = self._versions_prefix + version
        dropped = 0
        async with self._call() as client:
            while True:
                members = await client.zrange(key, 0, _DROP_BATCH - 1)
                if not members:
                    break
                pipe = client.pipeline(transaction=True)
                pipe.delete(*[self._pin_key(str(member)) for member in members])
                pipe.zrem(key, *members)
                await pipe.execute()
                dropped += len(members)
            await client.delete(key)
        return dropped

    async def table_revision(self) -> int:
        async with self._call() as client:
            value = await client.get(self._revision_key)
        return int(value) if value is not None else 0

    async def read_table(self) -> TableDoc | None:
        async with self._call() as client:
            text = await client.get(self._table_key)
        return TableDoc.from_json(str(text)) if text is not None else None

    async def write_table(self, doc: TableDoc, *, expected_revision: int) -> bool:
        async with self._call():
            written = await self._scripts["write_table"](
                keys=[self._table_key, self._revision_key],
                args=[expected_revision, doc.to_json(), doc.revision],
            )
        return bool(written)

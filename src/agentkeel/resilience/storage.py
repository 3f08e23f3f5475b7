"""Where shared counters live: this process's memory, or Redis so replicas share them.

Rate limits and call budgets take a storage URI (``memory://`` or
``redis://host:port/db``). The rules for those URIs live here once: which
schemes are Redis, how a URI is shown without its password, and how long a
Redis round trip may take before the caller gives up on it.
"""

from __future__ import annotations

import redis.asyncio as aioredis

from agentkeel.errors import ConfigError
from agentkeel.secrets.redact import redact_url

MEMORY_SCHEME = "memory://"
REDIS_SCHEMES = ("redis://", "rediss://", "redis+unix://")
REDIS_TIMEOUT_S = 2.0
"""Connect and socket timeout for counter storage: a blackholed Redis must not
hang every call that consults a limit."""


def is_redis_uri(uri: str) -> bool:
    """Whether ``uri`` names a Redis server."""
    return uri.startswith(REDIS_SCHEMES)


def check_storage_uri(uri: str, *, what: str) -> None:
    """Raise ``ConfigError`` unless ``uri`` is ``memory://`` or a Redis URI.

    ``what`` names the storage in the message, e.g. ``"Rate-limit storage"``.
    """
    if not uri.startswith(MEMORY_SCHEME) and not is_redis_uri(uri):
        raise ConfigError(
            f"{what} '{redact_url(uri)}' is not supported; use memory:// or "
            "redis://host:port/db (redis_url)."
        )


def redis_client(url: str, *, decode_responses: bool = True) -> aioredis.Redis:
    """A Redis client for ``url`` with the counter-storage timeouts (``REDIS_TIMEOUT_S``),
    so a blackholed Redis fails a call instead of hanging it."""
    return aioredis.Redis.from_url(
        url,
        decode_responses=decode_responses,
        socket_timeout=REDIS_TIMEOUT_S,
        socket_connect_timeout=REDIS_TIMEOUT_S,
    )

"""Front-door limits per credential and per user: requests per minute and turns at once.

- Per key: ``principal.credential``; per user: ``(organization, user_id)`` when
  the principal names a user. The anonymous caller (auth off) has no limits.
- Requests: a moving window of one minute. In memory (one process) the project's
  ``MovingWindows``, which answer without awaiting; with Redis, the ``limits``
  library's moving window through ``RateLimiter``, shared by every router and replica.
- Concurrent turns: in memory, counters; in Redis, one sorted set per key whose
  members are the slots held, scored by when they lapse. Taking a slot drops
  lapsed members first, so a process that died holding slots frees them after
  ``turn_slot_ttl_s``; the set itself expires too, so idle keys leave nothing behind.
  Key and user slots are taken together in one script (both or neither).

A refusal is ``RateLimited`` (429): ``rate_limited`` with the seconds until the
window lets one through, or ``too_many_concurrent_turns``.

>>> limits = CallerLimits(settings.auth.limits)
>>> limits.check_request_now(principal)
>>> slot = limits.start_turn_now(principal)
>>> slot.release()
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import secrets
import time
from collections.abc import Callable
from typing import Any

from agentkeel.config.auth import AuthLimitSettings
from agentkeel.errors import ConfigError, RateLimited
from agentkeel.identity.principal import Principal
from agentkeel.resilience.clock import SystemClock
from agentkeel.resilience.moving_window import MovingWindows
from agentkeel.resilience.ratelimit import RateLimiter
from agentkeel.resilience.storage import MEMORY_SCHEME, check_storage_uri, redis_client
from agentkeel.secrets.redact import redact_url

logger = logging.getLogger(__name__)

_PREFIX = "agentkeel:caller"
_CONCURRENCY_RETRY_S = 1.0
"""A turn slot frees when a running turn ends, which no one can predict: ask for a second."""

# KEYS: one sorted set per limit; ARGV: now, lapse time, slot id, set ttl (ms), then a limit
# per key. Returns 0 when every slot was taken, else the 1-based index of the full limit.
_TAKE_SLOTS = """
local now = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
  if redis.call('ZCARD', key) >= tonumber(ARGV[4 + i]) then
    return i
  end
end
for i, key in ipairs(KEYS) do
  redis.call('ZADD', key, ARGV[2], ARGV[3])
  redis.call('PEXPIRE', key, ARGV[4])
end
return 0
"""


class _Clock:
    """A wall and a monotonic clock from one callable (tests pass a fake one)."""

    def __init__(self, clock: Callable[[], float] | None) -> None:
        self._call = clock

    def monotonic(self) -> float:
        return self._call() if self._call is not None else time.monotonic()

    def time(self) -> float:
        return self._call() if self._call is not None else time.time()

    async def sleep(self, seconds: float) -> None:
        await SystemClock().sleep(seconds)


class TurnSlot:
    """One running turn's place in its caller's concurrency limits; ``release`` when the
    turn ends (idempotent; with Redis it schedules the removal)."""

    def __init__(self, release: Callable[[], None] | None = None) -> None:
        self._release = release

    @property
    def released(self) -> bool:
        return self._release is None

    def release(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()

    def __enter__(self) -> TurnSlot:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


class CallerLimits:
    """Request-rate and concurrent-turn limits per credential and per user.

    ``storage_uri``: ``memory://`` (this process) or a Redis URI (``redis_url``).

    >>> limits = CallerLimits(AuthLimitSettings(), storage_uri="redis://127.0.0.1:6379/0")
    >>> await limits.check_request(principal)
    >>> slot = await limits.start_turn(principal)
    """

    def __init__(
        self,
        settings: AuthLimitSettings,
        *,
        storage_uri: str = "memory://",
        clock: Callable[[], float] | None = None,
    ) -> None:
        check_storage_uri(storage_uri, what="Front-door limit storage")
        self.settings = settings
        self.storage_uri = storage_uri
        self._clock = _Clock(clock)
        self._memory = storage_uri.startswith(MEMORY_SCHEME)
        self._key_windows = _windows(settings.requests_per_minute_per_key, self._clock)
        self._user_windows = _windows(settings.requests_per_minute_per_user, self._clock)
        self._key_rates = self._rate_limiter(settings.requests_per_minute_per_key, "key")
        self._user_rates = self._rate_limiter(settings.requests_per_minute_per_user, "user")
        self._turns: dict[str, int] = {}
        self._redis: Any = None
        self._take_slots: Any = None
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def sync(self) -> bool:
        """Whether the ``*_now`` methods may be used (memory storage)."""
        return self._memory

    # Requests -----------------------------------------------------------------------

    def check_request_now(self, principal: Principal) -> None:
        """Count one request; ``RateLimited`` (429, Retry-After) over either limit."""
        self._need_sync("check_request_now")
        if principal.anonymous:
            return
        key, user = _key_of(principal), _user_of(principal)
        if self._key_windows is not None:
            decision = self._key_windows.hit(key)
            if not decision.allowed:
                raise _rate_limited(principal, "credential", decision.retry_after, self.settings)
        if self._user_windows is not None and user is not None:
            decision = self._user_windows.hit(user)
            if not decision.allowed:
                raise _rate_limited(principal, "user", decision.retry_after, self.settings)

    async def check_request(self, principal: Principal) -> None:
        """``check_request_now``, on either storage."""
        if self._memory:
            self.check_request_now(principal)
            return
        if principal.anonymous:
            return
        user = _user_of(principal)
        if self._key_rates is not None:
            decision = await self._key_rates.hit(_key_of(principal))
            if not decision.allowed:
                raise _rate_limited(principal, "credential", decision.retry_after, self.settings)
        if self._user_rates is not None and user is not None:
            decision = await self._user_rates.hit(user)
            if not decision.allowed:
                raise _rate_limited(principal, "user", decision.retry_after, self.settings)

    # Turns --------------------------------------------------------------------------

    def start_turn_now(self, principal: Principal) -> TurnSlot:
        """Take a turn slot; ``RateLimited`` code ``too_many_concurrent_turns`` when the
        credential or the user runs as many turns as allowed."""
        self._need_sync("start_turn_now")
        limits = self._turn_limits(principal)
        if not limits:
            return TurnSlot()
        for counter, limit, which in limits:
            if self._turns.get(counter, 0) >= limit:
                raise _too_many_turns(principal, which, limit)
        for counter, _limit, _which in limits:
            self._turns[counter] = self._turns.get(counter, 0) + 1
        counters = [counter for counter, _limit, _which in limits]
        return TurnSlot(lambda: self._release_memory(counters))

    async def start_turn(self, principal: Principal) -> TurnSlot:
        """``start_turn_now``, on either storage."""
        if self._memory:
            return self.start_turn_now(principal)
        limits = self._turn_limits(principal)
        if not limits:
            return TurnSlot()
        keys = [f"{_PREFIX}:turns:{counter}" for counter, _limit, _which in limits]
        slot_id = secrets.token_hex(8)
        now = self._clock.time()
        ttl_s = self.settings.turn_slot_ttl_s
        try:
            script = self._script()
            full = await script(
                keys=keys,
                args=[now, now + ttl_s, slot_id, int(ttl_s * 1000) + 1000]
                + [limit for _counter, limit, _which in limits],
            )
        except Exception as exc:
            # As for rate limits: a Redis outage lets turns through rather than stopping all.
            logger.warning(
                "Front-door limit storage %s is unreachable (%s); allowing the turn.",
                redact_url(self.storage_uri),
                exc,
            )
            return TurnSlot()
        if int(full):
            _counter, limit, which = limits[int(full) - 1]
            raise _too_many_turns(principal, which, limit)
        return TurnSlot(lambda: self._schedule_release(keys, slot_id))

    async def aclose(self) -> None:
        """Finish pending slot releases and close Redis connections."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        for limiter in (self._key_rates, self._user_rates):
            if limiter is not None:
                await limiter.aclose()
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
            self._take_slots = None

    def running_turns(self, principal: Principal) -> int:
        """Turns this process counts for ``principal``'s credential (memory storage)."""
        return self._turns.get(f"key:{_key_of(principal)}", 0)

    # Internals ------------------------------------------------------------------------

    def _turn_limits(self, principal: Principal) -> list[tuple[str, int, str]]:
        if principal.anonymous:
            return []
        out: list[tuple[str, int, str]] = []
        if self.settings.concurrent_turns_per_key > 0:
            out.append(
                (f"key:{_key_of(principal)}", self.settings.concurrent_turns_per_key, "credential")
            )
        user = _user_of(principal)
        if self.settings.concurrent_turns_per_user > 0 and user is not None:
            out.append((f"user:{user}", self.settings.concurrent_turns_per_user, "user"))
        return out

    def _release_memory(self, counters: list[str]) -> None:
        for counter in counters:
            left = self._turns.get(counter, 0) - 1
            if left > 0:
                self._turns[counter] = left
            else:
                self._turns.pop(counter, None)

    def _schedule_release(self, keys: list[str], slot_id: str) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # no loop to run it on: the slot lapses after turn_slot_ttl_s
        task = loop.create_task(self._release_redis(keys, slot_id))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _release_redis(self, keys: list[str], slot_id: str) -> None:
        try:
            async with self._client().pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.zrem(key, slot_id)
                await pipe.execute()
        except Exception as exc:
            logger.warning(
                "Could not release a turn slot in %s (%s); it lapses after %gs.",
                redact_url(self.storage_uri),
                exc,
                self.settings.turn_slot_ttl_s,
            )

    def _client(self) -> Any:
        if self._redis is None:
            self._redis = redis_client(self.storage_uri, decode_responses=False)
        return self._redis

    def _script(self) -> Any:
        if self._take_slots is None:
            self._take_slots = self._client().register_script(_TAKE_SLOTS)
        return self._take_slots

    def _rate_limiter(self, per_minute: int, kind: str) -> RateLimiter | None:
        if self._memory or per_minute == 0:
            return None
        return RateLimiter(
            per_minute=per_minute, storage_uri=self.storage_uri, key_prefix=f"{_PREFIX}:{kind}"
        )

    def _need_sync(self, method: str) -> None:
        if not self._memory:
            raise ConfigError(
                f"CallerLimits.{method} needs memory storage; with Redis "
                f"({redact_url(self.storage_uri)}) await the async method instead."
            )


def _windows(per_minute: int, clock: _Clock) -> MovingWindows | None:
    return MovingWindows(limit=per_minute, window_s=60.0, clock=clock) if per_minute else None


def _key_of(principal: Principal) -> str:
    return principal.credential


def _user_of(principal: Principal) -> str | None:
    if principal.user_id is None:
        return None
    # Hashed: user ids and organizations may hold any character, a Redis key should not.
    raw = f"{principal.organization or ''}\x00{principal.user_id}".encode()
    return hashlib.sha256(raw).hexdigest()[:32]


def _rate_limited(
    principal: Principal, which: str, retry_after: float, settings: AuthLimitSettings
) -> RateLimited:
    if which == "user":
        subject = f"the user '{principal.user_id}'"
        limit = settings.requests_per_minute_per_user
        setting = "auth.limits.requests_per_minute_per_user"
    else:
        subject = f"the credential '{principal.credential}'"
        limit = settings.requests_per_minute_per_key
        setting = "auth.limits.requests_per_minute_per_key"
    return RateLimited(
        f"Too many requests for {subject}: at most {limit} a minute ({setting}). "
        f"Retry in {max(1, round(retry_after + 0.5))}s.",
        retry_after=max(retry_after, 0.001),
    )


def _too_many_turns(principal: Principal, which: str, limit: int) -> RateLimited:
    if which == "user":
        subject = f"the user '{principal.user_id}'"
        setting = "auth.limits.concurrent_turns_per_user"
    else:
        subject = f"the credential '{principal.credential}'"
        setting = "auth.limits.concurrent_turns_per_key"
    return RateLimited(
        f"{subject[0].upper()}{subject[1:]} is at its limit of {limit} turns running at "
        f"once ({setting}). Wait for one to finish, then retry.",
        retry_after=_CONCURRENCY_RETRY_S,
        code="too_many_concurrent_turns",
    )

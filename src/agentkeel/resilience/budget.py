"""Token budgets: reserve before a model call, settle with the real usage after.

Two limits apply to every call: the session's budget, and the user's budget
for the current UTC day (key ``user:{user_id}:{YYYY-MM-DD}``; for a user of an
organization ``org:{organization}:user:{user_id}:{YYYY-MM-DD}`` with the
organization percent-encoded, so ``bob`` of ``acme`` and ``bob`` of ``globex``
have separate budgets). The counts live
in a ``BudgetLedger``: ``InMemoryLedger`` for one process, a store-backed
ledger (SQLite / PostgreSQL, in ``runtime``) when replicas must share them.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Protocol, runtime_checkable
from urllib.parse import quote

from agentkeel.errors import TokenBudgetExhausted
from agentkeel.resilience.clock import Clock


def user_budget_prefix(user_id: str, organization: str | None = None) -> str:
    """What every daily budget key of the user starts with; the key is this plus the day.

    The organization is percent-encoded (``:`` included), so the organization part of a
    key ends at its first ``:`` and no (organization, user) pair can spell another's key.

    >>> user_budget_prefix("bob"), user_budget_prefix("bob", "acme")
    ('user:bob:', 'org:acme:user:bob:')
    """
    if not organization:
        return f"user:{user_id}:"
    return f"org:{quote(organization, safe='')}:user:{user_id}:"


@runtime_checkable
class BudgetLedger(Protocol):
    """Token accounting shared by every replica that uses the same store.

    ``reserve`` atomically adds ``amount`` to the key's reservations only if
    used + reserved + amount stays within ``limit``; it returns whether it did.
    ``settle`` releases a reservation and records what was really used.
    """

    async def reserve(self, key: str, amount: int, limit: int) -> bool: ...

    async def settle(self, key: str, reserved: int, used: int) -> None: ...

    async def used(self, key: str) -> int: ...


class InMemoryLedger:
    """A ``BudgetLedger`` in this process's memory; safe for concurrent tasks."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def reserve(self, key: str, amount: int, limit: int) -> bool:
        async with self._lock:
            committed = self._used.get(key, 0) + self._reserved.get(key, 0)
            if committed + amount > limit:
                return False
            self._reserved[key] = self._reserved.get(key, 0) + amount
            return True

    async def settle(self, key: str, reserved: int, used: int) -> None:
        async with self._lock:
            self._reserved[key] = max(0, self._reserved.get(key, 0) - reserved)
            self._used[key] = self._used.get(key, 0) + used

    async def used(self, key: str) -> int:
        async with self._lock:
            return self._used.get(key, 0)

    async def reserved(self, key: str) -> int:
        """Tokens held by reservations not yet settled."""
        async with self._lock:
            return self._reserved.get(key, 0)


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens held for one model call; pass it back to ``TokenBudget.settle``."""

    amount: int
    session_key: str | None
    user_key: str | None


class TokenBudget:
    """Session and per-user-per-day token limits over a ledger; a limit of 0 means none.

    >>> budget = TokenBudget(ledger=InMemoryLedger(), session_limit=200_000,
    ...                      user_daily_limit=2_000_000, clock=SystemClock())
    >>> reservation = await budget.reserve("s-1", "alice", estimate)
    >>> await budget.settle(reservation, used=response.usage.total_tokens)
    """

    def __init__(
        self,
        *,
        ledger: BudgetLedger,
        session_limit: int,
        user_daily_limit: int,
        clock: Clock,
    ) -> None:
        self._ledger = ledger
        self.session_limit = session_limit
        self.user_daily_limit = user_daily_limit
        self._clock = clock

    @staticmethod
    def session_key(session_id: str) -> str:
        return f"session:{session_id}"

    def user_key(self, user_id: str, organization: str | None = None) -> str:
        """The user's ledger key for the current UTC day (see the module doc)."""
        day = datetime.fromtimestamp(self._clock.time(), tz=UTC).date().isoformat()
        return f"{user_budget_prefix(user_id, organization)}{day}"

    def seconds_to_utc_midnight(self) -> float:
        now = datetime.fromtimestamp(self._clock.time(), tz=UTC)
        midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
        return (midnight - now).total_seconds()

    async def reserve(
        self, session_id: str, user_id: str, amount: int, *, organization: str | None = None
    ) -> Reservation:
        """Hold ``amount`` tokens on both budgets, or neither; the user's budget is the one
        of ``user_id`` in ``organization`` (``None``: a user without one).

        Raises ``TokenBudgetExhausted``; for the daily budget its ``retry_after``
        is the time until the day resets (UTC midnight).
        """
        amount = max(0, amount)
        session_key = self.session_key(session_id) if self.session_limit > 0 else None
        user_key = self.user_key(user_id, organization) if self.user_daily_limit > 0 else None
        if session_key is not None and not await self._ledger.reserve(
            session_key, amount, self.session_limit
        ):
            raise TokenBudgetExhausted(
                f"Session '{session_id}' has no token budget left for this call "
                f"(limit {self.session_limit} tokens, this call needs about {amount}). "
                "Start a new session, or raise guardrails.session_token_budget."
            )
        if user_key is not None and not await self._ledger.reserve(
            user_key, amount, self.user_daily_limit
        ):
            if session_key is not None:
                await self._ledger.settle(session_key, amount, 0)
            retry_after = self.seconds_to_utc_midnight()
            who = f"User '{user_id}'" + (
                f" of organization '{organization}'" if organization else ""
            )
            raise TokenBudgetExhausted(
                f"{who} has used today's token budget "
                f"(limit {self.user_daily_limit} tokens per UTC day); it resets in "
                f"{retry_after / 3600:.1f}h. Raise quotas.user_daily_tokens "
                "if this user needs more.",
                retry_after=retry_after,
            )
        return Reservation(amount=amount, session_key=session_key, user_key=user_key)

    async def settle(self, reservation: Reservation, used: int) -> None:
        """Release the reservation and record ``used`` tokens on both budgets."""
        used = max(0, used)
        if reservation.session_key is not None:
            await self._ledger.settle(reservation.session_key, reservation.amount, used)
        if reservation.user_key is not None:
            await self._ledger.settle(reservation.user_key, reservation.amount, used)

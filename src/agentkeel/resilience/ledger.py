"""Where reserved and used tokens are counted: the ``BudgetLedger`` Protocol.

A model call holds tokens on several keys at once (the session, the user's day
and month, the organization's day and month), each with its own limit. The
ledger reserves on all of them or on none, atomically, so two replicas racing
for the last tokens of a quota can never both get them, and a call refused by
one limit holds nothing on the others.

Implementations: ``InMemoryLedger`` (one process), the session stores (SQLite,
PostgreSQL: a ``budgets`` table) and ``RedisLedger`` (one Lua script per call),
all held to the same contract tests.

>>> ledger = InMemoryLedger()
>>> result = await ledger.reserve([Hold("session:s1", 1000), Hold("user:ana:2025-01-31", 50)], 60)
>>> result.ok, result.refused
(False, 1)
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from agentkeel.errors import InvalidRequest


@dataclass(frozen=True, slots=True)
class Hold:
    """One limit a reservation must fit: ``key``'s used + reserved + amount <= ``limit``."""

    key: str
    limit: int
    ttl_s: float | None = None
    """How long the key must live from now (its window's end plus a margin); a ledger
    that expires keys (Redis) keeps it at least that long. ``None``: no expiry."""


@dataclass(frozen=True, slots=True)
class ReserveResult:
    """What ``BudgetLedger.reserve`` did.

    ``refused`` is the index of the first hold without room (nothing was reserved
    anywhere), or ``None`` when every hold took the amount. ``committed`` is each
    hold's used + reserved tokens: after this reservation when it succeeded, as they
    stood when it was refused. ``used`` is, on a refusal, each hold's settled tokens
    alone (``committed`` less what other calls still hold), so a refusal can tell a
    quota that is used up from one that calls in flight fill for now; ``()`` when
    the reservation succeeded.
    """

    refused: int | None
    committed: tuple[int, ...]
    used: tuple[int, ...] = ()

    def held(self, index: int) -> int:
        """Tokens that other calls still hold (reserved, not settled) on hold ``index``;
        only known on a refusal. Never negative: a settle between the check and the read
        of ``used`` may have recorded more than it had reserved."""
        return max(0, self.committed[index] - self.used[index]) if self.used else 0

    @property
    def ok(self) -> bool:
        return self.refused is None


@runtime_checkable
class BudgetLedger(Protocol):
    """Token accounting shared by every replica that uses the same ledger.

    ``reserve`` adds ``amount`` to the reservations of every hold's key, only if each
    stays within its limit, all or nothing and atomically (distinct keys); a refusal
    reports each key's used tokens apart from its reserved ones. ``settle``
    releases ``reserved`` tokens on each key (never below 0) and records ``used``.
    ``used`` is the tokens a key has recorded (0 for a key never seen).
    """

    async def reserve(self, holds: Sequence[Hold], amount: int) -> ReserveResult: ...

    async def settle(self, keys: Sequence[str], reserved: int, used: int) -> None: ...

    async def used(self, key: str) -> int: ...


def check_amounts(keys: Iterable[str], **amounts: int) -> None:
    """Budget amounts are token counts and never negative; refuse them before they are
    written anywhere, naming the keys."""
    for name, value in amounts.items():
        if value < 0:
            names = ", ".join(repr(key) for key in keys)
            raise InvalidRequest(
                f"budget {names}: {name} must be a token count >= 0, got {value}",
                code="invalid_budget_amount",
            )


class InMemoryLedger:
    """A ``BudgetLedger`` in this process's memory; safe for concurrent tasks. Keys never
    expire (windows are in the key names, so old ones are only read by nobody)."""

    def __init__(self) -> None:
        self._used: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._lock = asyncio.Lock()

    async def reserve(self, holds: Sequence[Hold], amount: int) -> ReserveResult:
        check_amounts([hold.key for hold in holds], amount=amount)
        async with self._lock:
            used = tuple(self._used.get(h.key, 0) for h in holds)
            committed = [u + self._reserved.get(h.key, 0) for u, h in zip(used, holds, strict=True)]
            for index, hold in enumerate(holds):
                if committed[index] + amount > hold.limit:
                    return ReserveResult(refused=index, committed=tuple(committed), used=used)
            for hold in holds:
                self._reserved[hold.key] = self._reserved.get(hold.key, 0) + amount
            return ReserveResult(refused=None, committed=tuple(c + amount for c in committed))

    async def settle(self, keys: Sequence[str], reserved: int, used: int) -> None:
        check_amounts(keys, reserved=reserved, used=used)
        async with self._lock:
            for key in keys:
                self._reserved[key] = max(0, self._reserved.get(key, 0) - reserved)
                self._used[key] = self._used.get(key, 0) + used

    async def used(self, key: str) -> int:
        async with self._lock:
            return self._used.get(key, 0)

    async def reserved(self, key: str) -> int:
        """Tokens held by reservations not yet settled."""
        async with self._lock:
            return self._reserved.get(key, 0)

"""Token budgets and quotas: reserve before a model call, settle with the real usage after.

Up to five limits hold every call, each one skipped when it is 0 (``BudgetLimits``,
given per call from the turn's live settings):

=============== ===================================================== ===================
limit           ledger key                                            refusal (429)
=============== ===================================================== ===================
session         ``session:{session}``                                 token_budget_exhausted
user, UTC day   ``user:{user}:{YYYY-MM-DD}``                          quota_exhausted
user, UTC month ``user:{user}:{YYYY-MM}``                             quota_exhausted
org, UTC day    ``orgquota:{organization}:{YYYY-MM-DD}``              quota_exhausted
org, UTC month  ``orgquota:{organization}:{YYYY-MM}``                 quota_exhausted
=============== ===================================================== ===================

A user of an organization has the keys ``org:{organization}:user:{user}:…``
(``user_budget_prefix``), so ``bob`` of ``acme`` and ``bob`` of ``globex`` have
separate quotas; organizations are percent-encoded everywhere, so no organization
name can spell another's key, and ``orgquota:`` keys never start like a user's.
The reservation is all or nothing (``BudgetLedger.reserve``); a quota's refusal
says whose quota, which window, the limit and the setting to raise, and its
``retry_after`` is the time until that window resets (UTC midnight, or the first
of the next month).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal, Protocol
from urllib.parse import quote

from agentkeel.errors import QuotaExhausted, TokenBudgetExhausted
from agentkeel.resilience.clock import Clock
from agentkeel.resilience.ledger import (
    BudgetLedger,
    Hold,
    InMemoryLedger,
    ReserveResult,
)
from agentkeel.resilience.windows import Period, Window, utc_window

__all__ = [
    "SESSION_KEY_TTL_S",
    "WINDOW_MARGIN_S",
    "BudgetLedger",
    "BudgetLimits",
    "Hold",
    "InMemoryLedger",
    "QuotaObserver",
    "QuotaScope",
    "Reservation",
    "ReserveResult",
    "TokenBudget",
    "org_quota_prefix",
    "user_budget_prefix",
]

QuotaScope = Literal["user", "organization"]

WINDOW_MARGIN_S = 3600.0
"""How long a window's key outlives the window in a ledger that expires keys, so a
replica whose clock runs a little late still finds it."""
SESSION_KEY_TTL_S = 30 * 86_400.0
"""How long a session's key lives after its last reservation, in a ledger that expires
keys (the stores delete it with the session instead)."""

_SETTINGS: dict[tuple[QuotaScope, Period], str] = {
    ("user", "day"): "quotas.user_daily_tokens",
    ("user", "month"): "quotas.user_monthly_tokens",
    ("organization", "day"): "quotas.org_daily_tokens",
    ("organization", "month"): "quotas.org_monthly_tokens",
}


def user_budget_prefix(user_id: str, organization: str | None = None) -> str:
    """What every quota key of the user starts with; the key is this plus the window.

    The organization is percent-encoded (``:`` included), so the organization part of a
    key ends at its first ``:`` and no (organization, user) pair can spell another's key.

    >>> user_budget_prefix("bob"), user_budget_prefix("bob", "acme")
    ('user:bob:', 'org:acme:user:bob:')
    """
    if not organization:
        return f"user:{user_id}:"
    return f"org:{quote(organization, safe='')}:user:{user_id}:"


def org_quota_prefix(organization: str) -> str:
    """What every quota key of the organization (all its users together) starts with.

    >>> org_quota_prefix("a:b")
    'orgquota:a%3Ab:'
    """
    return f"orgquota:{quote(organization, safe='')}:"


@dataclass(frozen=True, slots=True)
class BudgetLimits:
    """The limits of one call, in tokens; 0 = none. The runtime builds them from the
    turn's live settings (``guardrails.session_token_budget`` and ``quotas.*``)."""

    session: int = 0
    user_day: int = 0
    user_month: int = 0
    org_day: int = 0
    org_month: int = 0

    def quota(self, scope: QuotaScope, period: Period) -> int:
        """The quota of ``scope`` for ``period``."""
        if scope == "user":
            return self.user_day if period == "day" else self.user_month
        return self.org_day if period == "day" else self.org_month


class QuotaObserver(Protocol):
    """Told the headroom left in each quota a reservation touched, and each refusal (the
    metrics: ``telemetry.metrics.QuotaMetrics``)."""

    def observe_headroom(self, scope: QuotaScope, period: Period, ratio: float) -> None: ...

    def quota_exhausted(self, scope: QuotaScope, period: Period) -> None: ...


@dataclass(frozen=True, slots=True)
class Reservation:
    """Tokens held for one model call; pass it back to ``TokenBudget.settle``."""

    amount: int
    keys: tuple[str, ...] = ()
    """The ledger keys holding ``amount`` (none when every limit was 0)."""


@dataclass(frozen=True, slots=True)
class _Target:
    """One hold of a call and what it stands for, to explain a refusal."""

    hold: Hold
    scope: QuotaScope | None  # None: the session budget
    window: Window | None


class TokenBudget:
    """The session budget and the user and organization quotas over one ledger.

    >>> budget = TokenBudget(ledger=store, clock=SystemClock(),
    ...                      limits=BudgetLimits(session=200_000, user_day=2_000_000))
    >>> reservation = await budget.reserve("s-1", "ana", 900, organization="acme")
    >>> await budget.settle(reservation, used=response.usage.total_tokens)

    ``limits`` are the defaults; a call passes its own (the turn's live settings).
    ``observer`` is told each quota's headroom at every reservation, and each refusal.
    """

    def __init__(
        self,
        *,
        ledger: BudgetLedger,
        clock: Clock,
        limits: BudgetLimits | None = None,
        observer: QuotaObserver | None = None,
    ) -> None:
        self._ledger = ledger
        self._clock = clock
        self.limits = limits if limits is not None else BudgetLimits()
        self._observer = observer

    @property
    def ledger(self) -> BudgetLedger:
        return self._ledger

    @staticmethod
    def session_key(session_id: str) -> str:
        return f"session:{session_id}"

    def user_key(
        self, user_id: str, organization: str | None = None, period: Period = "day"
    ) -> str:
        """The user's ledger key for the current UTC day or month (see the module doc)."""
        window = utc_window(period, self._clock.time())
        return f"{user_budget_prefix(user_id, organization)}{window.label}"

    def org_key(self, organization: str, period: Period = "day") -> str:
        """The organization's ledger key for the current UTC day or month."""
        window = utc_window(period, self._clock.time())
        return f"{org_quota_prefix(organization)}{window.label}"

    async def reserve(
        self,
        session_id: str,
        user_id: str,
        amount: int,
        *,
        organization: str | None = None,
        limits: BudgetLimits | None = None,
    ) -> Reservation:
        """Hold ``amount`` tokens on every limit of the call, or on none: the session's, and
        the quotas of ``user_id`` in ``organization`` (``None``: a user without one) and of
        the organization itself.

        Raises ``TokenBudgetExhausted`` for the session budget and ``QuotaExhausted`` for a
        quota, whose ``retry_after`` is the time until its window resets.
        """
        amount = max(0, amount)
        limits = limits if limits is not None else self.limits
        now = self._clock.time()
        targets = self._targets(session_id, user_id, organization, limits, now)
        if not targets:
            return Reservation(amount=amount)
        result = await self._ledger.reserve([t.hold for t in targets], amount)
        self._observe(targets, result)
        if result.refused is not None:
            target = targets[result.refused]
            committed = result.committed[result.refused]
            if target.scope is None:
                raise TokenBudgetExhausted(
                    f"Session '{session_id}' has no token budget left for this call "
                    f"(limit {target.hold.limit} tokens, {committed} used or held, this call "
                    f"needs up to {amount}). Start a new session, or raise "
                    "guardrails.session_token_budget."
                )
            assert target.window is not None
            if self._observer is not None:
                self._observer.quota_exhausted(target.scope, target.window.period)
            raise _quota_refusal(
                target, user_id, organization, amount=amount, committed=committed, now=now
            )
        return Reservation(amount=amount, keys=tuple(t.hold.key for t in targets))

    async def settle(self, reservation: Reservation, used: int) -> None:
        """Release the reservation and record ``used`` tokens on every key it held."""
        if reservation.keys:
            await self._ledger.settle(reservation.keys, reservation.amount, max(0, used))

    def _targets(
        self,
        session_id: str,
        user_id: str,
        organization: str | None,
        limits: BudgetLimits,
        now: float,
    ) -> list[_Target]:
        targets: list[_Target] = []
        if limits.session > 0:
            hold = Hold(self.session_key(session_id), limits.session, SESSION_KEY_TTL_S)
            targets.append(_Target(hold=hold, scope=None, window=None))
        scopes: list[tuple[QuotaScope, str]] = [("user", user_budget_prefix(user_id, organization))]
        if organization:
            scopes.append(("organization", org_quota_prefix(organization)))
        for scope, prefix in scopes:
            for period in ("day", "month"):
                limit = limits.quota(scope, period)
                if limit <= 0:
                    continue
                window = utc_window(period, now)
                ttl = window.seconds_left(now) + WINDOW_MARGIN_S
                hold = Hold(f"{prefix}{window.label}", limit, ttl)
                targets.append(_Target(hold=hold, scope=scope, window=window))
        return targets

    def _observe(self, targets: list[_Target], result: ReserveResult) -> None:
        if self._observer is None:
            return
        for index, target in enumerate(targets):
            if target.scope is None or target.window is None:
                continue
            if result.refused is not None and index != result.refused:
                continue  # only the refusing quota's headroom is known to matter
            limit = target.hold.limit
            ratio = max(0.0, (limit - result.committed[index]) / limit)
            self._observer.observe_headroom(target.scope, target.window.period, ratio)


def _quota_refusal(
    target: _Target,
    user_id: str,
    organization: str | None,
    *,
    amount: int,
    committed: int,
    now: float,
) -> QuotaExhausted:
    assert target.scope is not None and target.window is not None
    scope, window, limit = target.scope, target.window, target.hold.limit
    period = window.period
    setting = _SETTINGS[(scope, period)]
    wait = window.seconds_left(now)
    if scope == "user":
        who = f"User '{user_id}'" + (f" of organization '{organization}'" if organization else "")
        per = f"tokens per UTC {period}"
    else:
        who = f"Organization '{organization}'"
        per = f"tokens per UTC {period} for all its users together"
    if amount > limit:
        advice = (
            f"This call alone needs up to {amount} tokens, more than the whole quota: raise "
            f"{setting}, or lower guardrails.max_output_tokens / send a shorter prompt."
        )
    else:
        advice = f"Raise {setting} if {'this user' if scope == 'user' else 'it'} needs more."
    return QuotaExhausted(
        f"{who} has used this UTC {period}'s token quota ({window.label}: limit {limit} {per}, "
        f"{committed} used or held, this call needs up to {amount}); it resets in "
        f"{_duration(wait)}, at {window.end.strftime('%Y-%m-%dT%H:%M:%SZ')}. {advice}",
        scope=scope,
        period=period,
        limit=limit,
        retry_after=wait,
    )


def _duration(seconds: float) -> str:
    """``45 s``, ``25 min``, ``1.8 h``, ``16 days 2.6 h``: how long an operator waits."""
    if seconds < 120:
        return f"{math.ceil(seconds)} s"
    if seconds < 7200:
        return f"{math.ceil(seconds / 60)} min"
    if seconds < 2 * 86_400:
        return f"{seconds / 3600:.1f} h"
    span = timedelta(seconds=seconds)
    return f"{span.days} days {span.seconds / 3600:.1f} h"

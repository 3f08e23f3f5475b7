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
says whose quota, which window, the limit and the setting to raise, and when a
retry can work:

- the tokens are used up: ``retry_after`` is the time until the window resets (UTC
  midnight, or the first of the next month);
- they would fit but other calls in flight hold the rest (used + amount <= limit):
  ``retry_after`` is ``IN_FLIGHT_RETRY_S``, since those calls settle in seconds;
- the call alone needs more than the whole quota: no ``retry_after`` (waiting never
  helps).

Each quota's setting is named once, in ``QUOTA_SETTINGS``; ``BudgetLimits``, the
refusals and the usage reports all read it. ``settle`` never fails a call whose
reply is there: it retries a failing ledger briefly, then logs what stays held.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Literal, Protocol
from urllib.parse import quote

from agentkeel.errors import QuotaExhausted, TokenBudgetExhausted
from agentkeel.resilience.clock import Clock
from agentkeel.resilience.ledger import (
    BudgetLedger,
    Hold,
    InMemoryLedger,
    ReserveResult,
)
from agentkeel.resilience.windows import PERIODS, Period, Window, utc_window

if TYPE_CHECKING:
    from agentkeel.config.quotas import QuotaSettings

__all__ = [
    "IN_FLIGHT_RETRY_S",
    "QUOTA_SETTINGS",
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
    "quota_limit",
    "quota_setting",
    "user_budget_prefix",
]

logger = logging.getLogger("agentkeel.resilience.budget")

QuotaScope = Literal["user", "organization"]

WINDOW_MARGIN_S = 3600.0
"""How long a window's key outlives the window in a ledger that expires keys, so a
replica whose clock runs a little late still finds it."""
SESSION_KEY_TTL_S = 30 * 86_400.0
"""How long a session's key lives after its last reservation, in a ledger that expires
keys (the stores delete it with the session instead)."""

IN_FLIGHT_RETRY_S = 2.0
"""The Retry-After of a quota that only calls in flight fill: they settle within seconds."""

QUOTA_SETTINGS: Mapping[tuple[QuotaScope, Period], str] = {
    ("user", "day"): "user_daily_tokens",
    ("user", "month"): "user_monthly_tokens",
    ("organization", "day"): "org_daily_tokens",
    ("organization", "month"): "org_monthly_tokens",
}
"""Each quota's field of ``QuotaSettings`` (``quotas.<field>``) and of ``BudgetLimits``:
the one place that says which setting holds which (scope, period)."""


def quota_setting(scope: QuotaScope, period: Period) -> str:
    """The setting an operator raises for a quota.

    >>> quota_setting("organization", "month")
    'quotas.org_monthly_tokens'
    """
    return f"quotas.{QUOTA_SETTINGS[(scope, period)]}"


def quota_limit(quotas: QuotaSettings | BudgetLimits, scope: QuotaScope, period: Period) -> int:
    """The tokens ``quotas`` (the settings, or a call's limits) allow ``scope`` per
    ``period`` (0 = no quota).

    >>> quota_limit(QuotaSettings(user_monthly_tokens=9), "user", "month")
    9
    """
    return int(getattr(quotas, QUOTA_SETTINGS[(scope, period)]))


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
    turn's live settings (``guardrails.session_token_budget`` and ``quotas.*``, whose
    field names the quotas share).

    >>> BudgetLimits.from_settings(QuotaSettings(user_daily_tokens=500), session=0).quota(
    ...     "user", "day")
    500
    """

    session: int = 0
    user_daily_tokens: int = 0
    user_monthly_tokens: int = 0
    org_daily_tokens: int = 0
    org_monthly_tokens: int = 0

    @classmethod
    def from_settings(cls, quotas: QuotaSettings, *, session: int) -> BudgetLimits:
        """The limits ``quotas`` and a session budget of ``session`` tokens set."""
        return cls(
            session=session,
            **{field: int(getattr(quotas, field)) for field in QUOTA_SETTINGS.values()},
        )

    def quota(self, scope: QuotaScope, period: Period) -> int:
        """The quota of ``scope`` for ``period``."""
        return quota_limit(self, scope, period)

    @property
    def unlimited(self) -> bool:
        """Every limit is 0: a call holds nothing, so there is nothing to count or reserve."""
        return self.session <= 0 and all(self.quota(*quota) <= 0 for quota in QUOTA_SETTINGS)


class QuotaObserver(Protocol):
    """Told the headroom left in each quota a reservation touched and the tokens that quota
    holds, and each refusal (the metrics: ``telemetry.metrics.QuotaMetrics``)."""

    def observe_headroom(self, scope: QuotaScope, period: Period, ratio: float) -> None: ...

    def observe_consumption(self, scope: QuotaScope, period: Period, tokens: int) -> None: ...

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
    ...                      limits=BudgetLimits(session=200_000, user_daily_tokens=2_000_000))
    >>> reservation = await budget.reserve("s-1", "ana", 900, organization="acme")
    >>> await budget.settle(reservation, used=response.usage.total_tokens)

    ``limits`` are the defaults; a call passes its own (the turn's live settings).
    ``observer`` is told each quota's headroom and held tokens at every reservation, and
    each refusal.
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
        self,
        user_id: str,
        organization: str | None = None,
        period: Period = "day",
        *,
        now: float | None = None,
    ) -> str:
        """The user's ledger key for the UTC day or month of ``now`` (the clock's time by
        default); reservations hold exactly this key (see the module doc)."""
        window = utc_window(period, self._clock.time() if now is None else now)
        return f"{user_budget_prefix(user_id, organization)}{window.label}"

    def org_key(
        self, organization: str, period: Period = "day", *, now: float | None = None
    ) -> str:
        """The organization's ledger key for the UTC day or month of ``now``."""
        window = utc_window(period, self._clock.time() if now is None else now)
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
        quota: ``retry_after`` is the time until its window resets, a few seconds when
        only calls in flight fill it, ``None`` when the call alone is larger than it.
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
                target,
                user_id,
                organization,
                amount=amount,
                committed=committed,
                held=result.held(result.refused),
                now=now,
            )
        return Reservation(amount=amount, keys=tuple(t.hold.key for t in targets))

    async def settle(self, reservation: Reservation, used: int) -> None:
        """Release the reservation and record ``used`` tokens on every key it held.

        Never raises for the ledger: the call it settles already happened and its reply
        must reach the user. A failing ledger (a Redis or database blip) is not tried
        again: a settle whose answer was lost after it was applied would count the call
        twice and release tokens other calls hold. The keys and amounts are logged as an
        error and the reservation stays held (on Redis until the keys expire; in the
        store until a window's row is purged), which errs on the side of the quota.
        """
        if not reservation.keys:
            return
        used = max(0, used)
        try:
            await self._ledger.settle(reservation.keys, reservation.amount, used)
        except Exception as exc:
            _log_unsettled(reservation, used, exc)

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
        scopes: tuple[QuotaScope, ...] = ("user", "organization") if organization else ("user",)
        for scope in scopes:
            for period in PERIODS:
                limit = limits.quota(scope, period)
                if limit <= 0:
                    continue
                if scope == "user":
                    key = self.user_key(user_id, organization, period, now=now)
                else:
                    assert organization is not None
                    key = self.org_key(organization, period, now=now)
                window = utc_window(period, now)
                ttl = window.seconds_left(now) + WINDOW_MARGIN_S
                targets.append(_Target(hold=Hold(key, limit, ttl), scope=scope, window=window))
        return targets

    def _observe(self, targets: list[_Target], result: ReserveResult) -> None:
        if self._observer is None:
            return
        for index, target in enumerate(targets):
            if target.scope is None or target.window is None:
                continue
            if result.refused is not None and index != result.refused:
                continue  # only the refusing quota's headroom is known to matter
            limit, committed = target.hold.limit, result.committed[index]
            ratio = max(0.0, (limit - committed) / limit)
            self._observer.observe_headroom(target.scope, target.window.period, ratio)
            self._observer.observe_consumption(target.scope, target.window.period, committed)


def _quota_refusal(
    target: _Target,
    user_id: str,
    organization: str | None,
    *,
    amount: int,
    committed: int,
    held: int,
    now: float,
) -> QuotaExhausted:
    assert target.scope is not None and target.window is not None
    scope, window, limit = target.scope, target.window, target.hold.limit
    period = window.period
    setting = quota_setting(scope, period)
    used = committed - held
    if scope == "user":
        who = f"User '{user_id}'" + (f" of organization '{organization}'" if organization else "")
        per = f"tokens per UTC {period}"
        others = "this user's other turns"
    else:
        who = f"Organization '{organization}'"
        per = f"tokens per UTC {period} for all its users together"
        others = "other turns of its users"
    quota = f"{window.label}: limit {limit} {per}"
    retry_after: float | None
    if amount > limit:
        # Waiting never helps: no Retry-After.
        retry_after = None
        message = (
            f"{who} cannot make this call: it alone needs up to {amount} tokens, more than "
            f"the whole UTC {period}'s token quota ({quota}), so waiting will not help. "
            f"Raise {setting}, or lower guardrails.max_output_tokens / send a shorter prompt."
        )
    elif used + amount <= limit:
        # Calls in flight hold the room; they settle (and release the rest) in seconds.
        retry_after = IN_FLIGHT_RETRY_S
        message = (
            f"{who} has no room in this UTC {period}'s token quota right now ({quota}, "
            f"{used} used, this call needs up to {amount}): {others} still running hold "
            f"the rest ({held} tokens). Retry in {IN_FLIGHT_RETRY_S:g} s, once they have "
            "settled."
        )
    else:
        retry_after = window.seconds_left(now)
        message = (
            f"{who} has used this UTC {period}'s token quota ({quota}, {used} used, {held} "
            f"held by turns still running, this call needs up to {amount}); it resets in "
            f"{_duration(retry_after)}, at {window.end.strftime('%Y-%m-%dT%H:%M:%SZ')}. "
            f"Raise {setting} if {'this user' if scope == 'user' else 'it'} needs more."
        )
    return QuotaExhausted(message, scope=scope, period=period, limit=limit, retry_after=retry_after)


def _log_unsettled(reservation: Reservation, used: int, exc: Exception) -> None:
    keys = reservation.keys
    logger.error(
        "token budget not settled (%s: %s): keys %s keep %d reserved "
        "tokens and miss %d used ones, until a Redis key expires or a window's store row "
        "is purged; the call's reply is kept. Check the ledger (quotas.ledger).",
        type(exc).__name__,
        exc,
        ", ".join(keys),
        reservation.amount,
        used,
        extra={
            "event": "budget",
            "keys": list(keys),
            "reserved": reservation.amount,
            "used": used,
        },
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

"""TokenBudget: the session budget and the user and organization quotas, per UTC day and
month, reserved all or nothing over a ledger, with a manual clock."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest

from agentkeel.config.quotas import QuotaSettings
from agentkeel.errors import QuotaExhausted, TokenBudgetExhausted, Unavailable
from agentkeel.resilience.budget import (
    IN_FLIGHT_RETRY_S,
    BudgetLimits,
    QuotaScope,
    TokenBudget,
    org_quota_prefix,
    quota_limit,
    quota_setting,
    user_budget_prefix,
)
from agentkeel.resilience.clock import ManualClock
from agentkeel.resilience.ledger import BudgetLedger, InMemoryLedger
from agentkeel.resilience.windows import Period, utc_window

# 2023-11-14T22:13:20Z: 6400 s before UTC midnight, 16 days + 6400 s before December.
WALL_START = 1_700_000_000.0
TO_MIDNIGHT = 6400.0
TO_DECEMBER = 16 * 86_400 + 6400.0


class Observer:
    """Keeps what the budget reports (what QuotaMetrics would count)."""

    def __init__(self) -> None:
        self.headroom: list[tuple[str, str, float]] = []
        self.consumption: list[tuple[str, str, int]] = []
        self.exhausted: list[tuple[str, str]] = []

    def observe_headroom(self, scope: str, period: str, ratio: float) -> None:
        self.headroom.append((scope, period, ratio))

    def observe_consumption(self, scope: str, period: str, tokens: int) -> None:
        self.consumption.append((scope, period, tokens))

    def quota_exhausted(self, scope: str, period: str) -> None:
        self.exhausted.append((scope, period))


def make_budget(
    **limits: int,
) -> tuple[TokenBudget, InMemoryLedger, ManualClock, Observer]:
    clock = ManualClock(wall_start=WALL_START)
    ledger = InMemoryLedger()
    observer = Observer()
    budget = TokenBudget(
        ledger=ledger, clock=clock, limits=BudgetLimits(**limits), observer=observer
    )
    return budget, ledger, clock, observer


def test_in_memory_ledger_is_a_budget_ledger() -> None:
    """InMemoryLedger satisfies the BudgetLedger Protocol that the stores also implement."""
    assert isinstance(InMemoryLedger(), BudgetLedger)


def test_budget_ledger_is_reexported_by_the_session_store_module() -> None:
    """runtime.store keeps exporting BudgetLedger (it lives in resilience)."""
    from agentkeel.runtime import store

    assert store.BudgetLedger is BudgetLedger


def test_utc_windows_and_their_resets() -> None:
    """A day runs midnight to midnight UTC, a month first to first (December into January)."""
    day = utc_window("day", WALL_START)
    month = utc_window("month", WALL_START)
    assert (day.label, day.seconds_left(WALL_START)) == ("2023-11-14", TO_MIDNIGHT)
    assert (month.label, month.seconds_left(WALL_START)) == ("2023-11", TO_DECEMBER)
    assert (month.first_day, month.last_day) == ("2023-11-01", "2023-11-30")
    new_year = datetime(2023, 12, 31, 23, 0, tzinfo=UTC).timestamp()
    december = utc_window("month", new_year)
    assert december.end == datetime(2024, 1, 1, tzinfo=UTC)
    assert december.seconds_left(new_year) == 3600.0


async def test_reserve_then_settle_records_real_usage_on_every_key() -> None:
    """Settling releases the reservation and counts what the call really used on the
    session, the user's day and month, and the organization's day and month."""
    budget, ledger, _, _ = make_budget(
        session=1000,
        user_daily_tokens=5000,
        user_monthly_tokens=50_000,
        org_daily_tokens=9000,
        org_monthly_tokens=90_000,
    )
    reservation = await budget.reserve("s1", "alice", 300, organization="acme")
    assert reservation.keys == (
        "session:s1",
        "org:acme:user:alice:2023-11-14",
        "org:acme:user:alice:2023-11",
        "orgquota:acme:2023-11-14",
        "orgquota:acme:2023-11",
    )
    for key in reservation.keys:
        assert await ledger.reserved(key) == 300
    await budget.settle(reservation, used=120)
    for key in reservation.keys:
        assert (await ledger.reserved(key), await ledger.used(key)) == (0, 120)


async def test_only_limits_above_zero_are_held() -> None:
    """Limit 0 is no limit: with every limit 0 nothing touches the ledger; a user without
    an organization has no organization quota."""
    budget, ledger, _, _ = make_budget()
    reservation = await budget.reserve("s1", "alice", 10**9)
    await budget.settle(reservation, used=10**9)
    assert reservation.keys == ()
    assert await ledger.used("session:s1") == 0
    monthly, _, _, _ = make_budget(user_monthly_tokens=100, org_daily_tokens=100)
    held = await monthly.reserve("s1", "alice", 10)
    assert held.keys == ("user:alice:2023-11",)


async def test_limits_given_per_call_replace_the_defaults() -> None:
    """A call's own limits (the turn's live settings) decide, not the budget's defaults."""
    budget, _, _, _ = make_budget(user_daily_tokens=10)
    reservation = await budget.reserve(
        "s1", "alice", 500, limits=BudgetLimits(user_daily_tokens=1000, session=600)
    )
    assert reservation.keys == ("session:s1", "user:alice:2023-11-14")
    with pytest.raises(QuotaExhausted):
        await budget.reserve("s2", "alice", 500)


async def test_the_same_user_id_in_two_organizations_has_two_quotas() -> None:
    """bob of acme using up his day leaves bob of globex and bob without an organization
    theirs; organizations are percent-encoded, so no name can spell another's key, and
    organization keys never start like a user's."""
    budget, ledger, _, _ = make_budget(user_daily_tokens=300)
    spent = await budget.reserve("s1", "bob", 300, organization="acme")
    await budget.settle(spent, used=300)
    with pytest.raises(QuotaExhausted) as info:
        await budget.reserve("s2", "bob", 10, organization="acme")
    assert "User 'bob' of organization 'acme'" in info.value.message
    other = await budget.reserve("s3", "bob", 300, organization="globex")
    plain = await budget.reserve("s4", "bob", 300)
    assert (other.keys, plain.keys) == (
        ("org:globex:user:bob:2023-11-14",),
        ("user:bob:2023-11-14",),
    )
    assert await ledger.used("user:bob:2023-11-14") == 0
    both = await budget.reserve(
        "s5",
        "bob",
        1,
        organization="a:user:x",
        limits=BudgetLimits(user_daily_tokens=10, org_monthly_tokens=10),
    )
    assert both.keys == ("org:a%3Auser%3Ax:user:bob:2023-11-14", "orgquota:a%3Auser%3Ax:2023-11")
    for user, org in (("x", "acme"), ("orgquota", None), ("acme:2023-11", None)):
        assert not budget.org_key("acme").startswith(user_budget_prefix(user, org))
    assert not user_budget_prefix("bob", "acme").startswith(org_quota_prefix("acme"))


async def test_the_key_helpers_name_the_keys_a_reservation_holds() -> None:
    """session_key, user_key and org_key are the keys reserve holds, for any moment: the
    day and month of ``now``, the clock's time by default."""
    budget, _, clock, _ = make_budget(
        session=100,
        user_daily_tokens=100,
        user_monthly_tokens=100,
        org_daily_tokens=100,
        org_monthly_tokens=100,
    )
    clock.advance(TO_MIDNIGHT)
    held = await budget.reserve("s1", "ana", 1, organization="acme")
    assert held.keys == (
        budget.session_key("s1"),
        budget.user_key("ana", "acme", "day"),
        budget.user_key("ana", "acme", "month"),
        budget.org_key("acme", "day"),
        budget.org_key("acme", "month"),
    )
    assert budget.user_key("ana", "acme") == "org:acme:user:ana:2023-11-15"
    assert budget.user_key("ana", now=WALL_START) == "user:ana:2023-11-14"


async def test_session_budget_exhausted_keeps_its_own_code() -> None:
    """A reservation beyond the session limit is token_budget_exhausted, without a
    Retry-After (waiting does not help), and holds nothing anywhere."""
    budget, ledger, _, _ = make_budget(session=500, user_daily_tokens=5000)
    first = await budget.reserve("s1", "alice", 400)
    await budget.settle(first, used=400)
    with pytest.raises(TokenBudgetExhausted) as info:
        await budget.reserve("s1", "alice", 200)
    assert info.value.code == "token_budget_exhausted"
    assert "guardrails.session_token_budget" in info.value.message
    assert info.value.retry_after is None
    assert await ledger.reserved("user:alice:2023-11-14") == 0


async def test_a_users_daily_quota_refuses_with_retry_after_until_midnight() -> None:
    """A used-up day refuses: 429 quota_exhausted naming whose quota, the window, the
    limit, what is used and the setting; Retry-After is the time to UTC midnight; the
    session's reservation is not kept (all or nothing)."""
    budget, ledger, _, observer = make_budget(session=1000, user_daily_tokens=300)
    await budget.settle(await budget.reserve("s0", "alice", 250), used=250)
    with pytest.raises(QuotaExhausted) as info:
        await budget.reserve("s1", "alice", 100)
    error = info.value
    assert (error.status, error.code, error.scope, error.period, error.limit) == (
        429,
        "quota_exhausted",
        "user",
        "day",
        300,
    )
    assert error.retry_after == pytest.approx(TO_MIDNIGHT)
    assert "User 'alice'" in error.message and "limit 300" in error.message
    assert "250 used" in error.message
    assert "quotas.user_daily_tokens" in error.message
    assert "2023-11-15T00:00:00Z" in error.message
    assert await ledger.reserved("session:s1") == 0
    assert observer.exhausted == [("user", "day")]


async def test_a_quota_only_held_by_calls_in_flight_asks_for_a_short_wait() -> None:
    """When the call would fit what is used but other calls of the user still hold the
    rest, the refusal says so and asks for a retry in a couple of seconds, not at the
    window's reset; once they settle, the same call goes through."""
    budget, _, _, observer = make_budget(user_daily_tokens=1000)
    running = [await budget.reserve(f"s{n}", "alice", 400) for n in range(2)]
    with pytest.raises(QuotaExhausted) as info:
        await budget.reserve("s9", "alice", 300)
    error = info.value
    assert error.retry_after == IN_FLIGHT_RETRY_S
    assert "this user's other turns still running hold the rest (800 tokens)" in error.message
    assert "0 used" in error.message and "resets" not in error.message
    assert observer.exhausted == [("user", "day")]
    for reservation in running:
        await budget.settle(reservation, used=100)
    await budget.reserve("s9", "alice", 300)


async def test_an_organization_filled_by_calls_in_flight_names_its_users_turns() -> None:
    """The organization's quota tells the same case apart, naming its users' turns."""
    budget, _, _, _ = make_budget(org_daily_tokens=500)
    await budget.settle(await budget.reserve("s1", "ana", 100, organization="acme"), used=100)
    await budget.reserve("s2", "bob", 300, organization="acme")
    with pytest.raises(QuotaExhausted) as info:
        await budget.reserve("s3", "cy", 200, organization="acme")
    assert info.value.retry_after == IN_FLIGHT_RETRY_S
    assert "other turns of its users still running hold the rest" in info.value.message


async def test_used_plus_held_is_used_up_when_the_settled_tokens_leave_no_room() -> None:
    """Held tokens do not turn a used-up quota into a short wait: when used + amount is
    already past the limit, Retry-After is the window's reset."""
    budget, _, _, _ = make_budget(user_daily_tokens=1000)
    await budget.settle(await budget.reserve("s1", "alice", 900), used=900)
    await budget.reserve("s2", "alice", 50)
    with pytest.raises(QuotaExhausted) as info:
        await budget.reserve("s3", "alice", 200)
    assert info.value.retry_after == pytest.approx(TO_MIDNIGHT)
    assert "900 used, 50 held" in info.value.message


async def test_a_monthly_quota_refuses_until_the_first_of_next_month() -> None:
    """The user's month refuses with Retry-After until December 1st, UTC."""
    budget, _, _, _ = make_budget(user_daily_tokens=10_000, user_monthly_tokens=500)
    await budget.settle(await budget.reserve("s1", "alice", 500), used=500)
    with pytest.raises(QuotaExhausted) as info:
        await budget.reserve("s1", "alice", 1)
    assert (info.value.scope, info.value.period) == ("user", "month")
    assert info.value.retry_after == pytest.approx(TO_DECEMBER)
    assert "quotas.user_monthly_tokens" in info.value.message
    assert "2023-12-01T00:00:00Z" in info.value.message


async def test_an_organization_quota_is_shared_by_its_users() -> None:
    """Two users of acme draw on one organization quota; the third call is refused with
    the organization named, while a user of another organization is not."""
    budget, _, _, observer = make_budget(user_daily_tokens=10_000, org_daily_tokens=500)
    await budget.settle(await budget.reserve("s1", "ana", 250, organization="acme"), used=250)
    await budget.settle(await budget.reserve("s2", "bob", 250, organization="acme"), used=250)
    with pytest.raises(QuotaExhausted) as info:
        await budget.reserve("s3", "cy", 1, organization="acme")
    assert (info.value.scope, info.value.period) == ("organization", "day")
    assert "Organization 'acme'" in info.value.message
    assert "quotas.org_daily_tokens" in info.value.message
    await budget.reserve("s4", "cy", 400, organization="globex")
    assert observer.exhausted == [("organization", "day")]


async def test_a_call_bigger_than_the_whole_quota_says_so() -> None:
    """A single call that needs more than the limit is told that it alone is too large and
    that waiting will not help, with no Retry-After at all."""
    budget, _, _, observer = make_budget(user_daily_tokens=100)
    with pytest.raises(QuotaExhausted) as info:
        await budget.reserve("s1", "alice", 600)
    assert info.value.retry_after is None
    assert "it alone needs up to 600 tokens, more than the whole" in info.value.message
    assert "waiting will not help" in info.value.message
    assert observer.exhausted == [("user", "day")]


def test_each_quota_is_read_from_its_one_setting() -> None:
    """One table names each (scope, period)'s setting: the call's limits, the settings'
    limits and the setting a refusal names agree for all four quotas."""
    quotas = QuotaSettings(
        user_daily_tokens=1, user_monthly_tokens=2, org_daily_tokens=3, org_monthly_tokens=4
    )
    limits = BudgetLimits.from_settings(quotas, session=7)
    expected: dict[tuple[QuotaScope, Period], tuple[int, str]] = {
        ("user", "day"): (1, "quotas.user_daily_tokens"),
        ("user", "month"): (2, "quotas.user_monthly_tokens"),
        ("organization", "day"): (3, "quotas.org_daily_tokens"),
        ("organization", "month"): (4, "quotas.org_monthly_tokens"),
    }
    for (scope, period), (limit, setting) in expected.items():
        assert limits.quota(scope, period) == quota_limit(quotas, scope, period) == limit
        assert quota_setting(scope, period) == setting
    assert limits.session == 7 and not limits.unlimited
    assert BudgetLimits.from_settings(QuotaSettings(user_daily_tokens=0), session=0).unlimited


class FlakyLedger(InMemoryLedger):
    """An in-memory ledger whose next ``failures`` settles raise, as a ledger in a blip."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures
        self.settle_calls = 0

    async def settle(self, keys: Sequence[str], reserved: int, used: int) -> None:
        self.settle_calls += 1
        if self.failures > 0:
            self.failures -= 1
            raise Unavailable("ledger blip", code="ledger_unavailable")
        await super().settle(keys, reserved, used)


async def test_a_failing_settle_is_logged_once_and_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A settle that fails returns (the call's reply must reach the user), is not tried
    again (a lost answer to an applied settle would count the call twice), and logs one
    error naming the keys and the amounts left held."""
    clock = ManualClock(wall_start=WALL_START)
    ledger = FlakyLedger(failures=1)
    budget = TokenBudget(
        ledger=ledger, clock=clock, limits=BudgetLimits(session=5000, user_daily_tokens=1000)
    )
    reservation = await budget.reserve("s1", "ana", 300)
    with caplog.at_level(logging.ERROR, logger="agentkeel.resilience.budget"):
        await budget.settle(reservation, used=120)
    assert ledger.settle_calls == 1
    assert await ledger.reserved("user:ana:2023-11-14") == 300  # held: errs on the quota's side
    [record] = [r for r in caplog.records if r.levelno == logging.ERROR]
    message = record.getMessage()
    assert "session:s1, user:ana:2023-11-14" in message
    assert "300 reserved" in message and "120 used" in message
    assert "ledger blip" in message
    assert (record.keys, record.reserved, record.used) == (  # type: ignore[attr-defined]
        ["session:s1", "user:ana:2023-11-14"],
        300,
        120,
    )


async def test_a_refusal_anywhere_holds_nothing_anywhere() -> None:
    """With the organization's month full, neither the session, nor the user's day and
    month, nor the organization's day keep any reservation."""
    budget, ledger, _, _ = make_budget(
        session=10_000,
        user_daily_tokens=10_000,
        user_monthly_tokens=10_000,
        org_daily_tokens=10_000,
        org_monthly_tokens=100,
    )
    with pytest.raises(QuotaExhausted):
        await budget.reserve("s1", "ana", 101, organization="acme")
    for key in (
        "session:s1",
        "org:acme:user:ana:2023-11-14",
        "org:acme:user:ana:2023-11",
        "orgquota:acme:2023-11-14",
        "orgquota:acme:2023-11",
    ):
        assert await ledger.reserved(key) == 0


async def test_the_day_rolls_over_at_utc_midnight_and_the_month_does_not() -> None:
    """Tomorrow's day key starts from zero; the month key keeps counting."""
    budget, ledger, clock, _ = make_budget(user_daily_tokens=300, user_monthly_tokens=1000)
    await budget.settle(await budget.reserve("s1", "alice", 300), used=300)
    with pytest.raises(QuotaExhausted):
        await budget.reserve("s2", "alice", 10)
    clock.advance(TO_MIDNIGHT)
    reservation = await budget.reserve("s2", "alice", 10)
    assert reservation.keys == ("user:alice:2023-11-15", "user:alice:2023-11")
    await budget.settle(reservation, used=10)
    assert await ledger.used("user:alice:2023-11") == 310


async def test_the_month_rolls_over_on_the_first() -> None:
    """A full month refuses until December 1st 00:00 UTC, then the new month's key starts
    from zero."""
    budget, _, clock, _ = make_budget(user_monthly_tokens=300)
    await budget.settle(await budget.reserve("s1", "alice", 300), used=300)
    clock.advance(TO_DECEMBER - 1)
    with pytest.raises(QuotaExhausted) as info:
        await budget.reserve("s1", "alice", 1)
    assert info.value.retry_after == pytest.approx(1.0)
    clock.advance(1)
    reservation = await budget.reserve("s1", "alice", 300)
    assert reservation.keys == ("user:alice:2023-12",)


async def test_headroom_is_observed_per_quota_at_each_reservation() -> None:
    """After a reservation, each quota's (limit - used - reserved) / limit is reported by
    scope and period; the session budget is not a quota."""
    budget, _, _, observer = make_budget(
        session=100, user_daily_tokens=1000, org_monthly_tokens=400
    )
    await budget.reserve("s1", "ana", 100, organization="acme")
    assert observer.headroom == [("user", "day", 0.9), ("organization", "month", 0.75)]


async def test_consumption_is_the_tokens_each_quota_holds_after_a_reservation() -> None:
    """Each reservation reports, per quota, the window's used + reserved tokens (what the
    per-user consumption histogram counts); a refusal reports only the refusing quota's,
    as it stood."""
    budget, _, _, observer = make_budget(user_daily_tokens=1000, user_monthly_tokens=5000)
    first = await budget.reserve("s1", "ana", 300)
    await budget.settle(first, used=200)
    await budget.reserve("s2", "ana", 500)
    assert observer.consumption == [
        ("user", "day", 300),
        ("user", "month", 300),
        ("user", "day", 700),
        ("user", "month", 700),
    ]
    observer.consumption.clear()
    with pytest.raises(QuotaExhausted):
        await budget.reserve("s3", "ana", 400)
    assert observer.consumption == [("user", "day", 700)]


async def test_concurrent_reservations_cannot_overspend() -> None:
    """Fifty concurrent reservations of 30 tokens against a 1000-token session budget:
    exactly 33 succeed, and the ledger never holds more than the limit."""
    budget, ledger, _, _ = make_budget(session=1000, user_daily_tokens=100_000)

    async def one() -> bool:
        try:
            await budget.reserve("s1", "alice", 30)
        except TokenBudgetExhausted:
            return False
        return True

    results = await asyncio.gather(*(one() for _ in range(50)))
    assert sum(results) == 33
    assert await ledger.reserved("session:s1") == 990
    assert await ledger.reserved("user:alice:2023-11-14") == 990


async def test_concurrent_sessions_of_one_user_respect_the_daily_quota() -> None:
    """Fifty sessions of one user racing for a 1000-token day never exceed it, and the
    refused ones leave no session reservation behind."""
    budget, ledger, _, _ = make_budget(session=100, user_daily_tokens=1000)

    async def one(n: int) -> bool:
        try:
            await budget.reserve(f"s{n}", "alice", 30)
        except QuotaExhausted:
            return False
        return True

    results = await asyncio.gather(*(one(n) for n in range(50)))
    assert sum(results) == 33
    assert await ledger.reserved("user:alice:2023-11-14") == 990
    held = [await ledger.reserved(f"session:s{n}") for n in range(50)]
    assert sum(held) == 990

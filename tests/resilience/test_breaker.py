from __future__ import annotations

import pytest

from agentkeel.config.settings import BreakerSettings
from agentkeel.resilience.breaker import CircuitBreaker
from agentkeel.resilience.clock import ManualClock


def make_breaker(
    clock: ManualClock, **overrides: float
) -> tuple[CircuitBreaker, list[tuple[str, str]]]:
    changes: list[tuple[str, str]] = []
    options: dict[str, float] = {
        "failure_threshold": 3,
        "failure_window_s": 60.0,
        "latency_threshold_s": 2.0,
        "latency_window": 10,
        "min_latency_samples": 5,
        "open_s": 30.0,
    }
    options.update(overrides)
    breaker = CircuitBreaker(
        name="local",
        clock=clock,
        failure_threshold=int(options["failure_threshold"]),
        failure_window_s=options["failure_window_s"],
        latency_threshold_s=options["latency_threshold_s"],
        latency_window=int(options["latency_window"]),
        min_latency_samples=int(options["min_latency_samples"]),
        open_s=options["open_s"],
        on_state_change=lambda old, new: changes.append((old, new)),
    )
    return breaker, changes


def state(breaker: CircuitBreaker) -> str:
    """The state read through a call, so the type checker does not pin it after an assert."""
    return breaker.state


def open_it(breaker: CircuitBreaker) -> None:
    for _ in range(3):
        breaker.record_failure()
    assert state(breaker) == "open"


def test_opens_after_threshold_failures_within_the_window() -> None:
    """Three failures inside 60 s open the breaker, and an open breaker refuses calls."""
    clock = ManualClock()
    breaker, changes = make_breaker(clock)
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) == "closed"
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) == "open"
    assert not breaker.allow()
    assert changes == [("closed", "open")]
    assert breaker.last_open_reason == "3 failures in 60s"


def test_failures_spread_beyond_the_window_do_not_open_it() -> None:
    """Failures older than the window no longer count towards the threshold."""
    clock = ManualClock()
    breaker, _ = make_breaker(clock)
    breaker.record_failure()
    breaker.record_failure()
    clock.advance(61)
    breaker.record_failure()
    assert state(breaker) == "closed"


def test_opens_when_p95_latency_exceeds_the_threshold() -> None:
    """A provider that slows down without erroring opens the breaker once enough samples exist."""
    clock = ManualClock()
    breaker, changes = make_breaker(clock)
    for _ in range(4):
        breaker.record_success(5.0)
    assert state(breaker) == "closed", "fewer than min_latency_samples must not open it"
    breaker.record_success(5.0)
    assert state(breaker) == "open"
    assert changes == [("closed", "open")]
    assert breaker.last_open_reason is not None and "p95" in breaker.last_open_reason


def test_a_few_slow_calls_under_p95_keep_it_closed() -> None:
    """One slow call in twenty is within the p95 and does not open the breaker."""
    clock = ManualClock()
    breaker, _ = make_breaker(clock, latency_window=20)
    for _ in range(19):
        breaker.record_success(0.5)
    breaker.record_success(9.0)
    assert state(breaker) == "closed"
    assert breaker.latency_p95() == 0.5


def test_only_the_latest_latency_window_counts() -> None:
    """Two slow calls in the last twenty exceed the p95; once the first has rolled out
    of the window, a second slow call alone does not."""
    clock = ManualClock()
    rolled, _ = make_breaker(clock, latency_window=20)
    recent, _ = make_breaker(clock, latency_window=20)
    for breaker, fast_between in ((rolled, 20), (recent, 5)):
        for _ in range(20):
            breaker.record_success(0.1)
        breaker.record_success(5.0)
        for _ in range(fast_between):
            breaker.record_success(0.1)
        breaker.record_success(5.0)
    assert state(rolled) == "closed"
    assert state(recent) == "open"


def test_half_open_admits_exactly_one_probe() -> None:
    """After open_s the next caller becomes the probe and every concurrent caller is refused."""
    clock = ManualClock()
    breaker, changes = make_breaker(clock)
    open_it(breaker)
    clock.advance(29)
    assert not breaker.allow()
    assert breaker.retry_after() == pytest.approx(1.0)
    clock.advance(1)
    assert breaker.allow()
    assert state(breaker) == "half_open"
    assert not breaker.allow()
    assert not breaker.allow()
    assert changes == [("closed", "open"), ("open", "half_open")]


def test_probe_success_closes_and_clears_the_windows() -> None:
    """A fast probe closes the breaker; the failures that opened it are forgotten."""
    clock = ManualClock()
    breaker, changes = make_breaker(clock)
    open_it(breaker)
    clock.advance(30)
    assert breaker.allow()
    breaker.record_success(0.2)
    assert state(breaker) == "closed"
    assert breaker.retry_after() == 0.0
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) == "closed", "old failures must not count after closing"
    assert changes[-1] == ("half_open", "closed")


def test_probe_failure_reopens_for_another_full_period() -> None:
    """A failed probe reopens the breaker and the wait starts again."""
    clock = ManualClock()
    breaker, changes = make_breaker(clock)
    open_it(breaker)
    clock.advance(30)
    assert breaker.allow()
    breaker.record_failure()
    assert state(breaker) == "open"
    assert breaker.retry_after() == pytest.approx(30.0)
    assert not breaker.allow()
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "open")]


def test_slow_probe_reopens() -> None:
    """A probe that succeeds but slower than the latency threshold reopens the breaker."""
    clock = ManualClock()
    breaker, _ = make_breaker(clock)
    open_it(breaker)
    clock.advance(30)
    assert breaker.allow()
    breaker.record_success(3.0)
    assert state(breaker) == "open"
    assert breaker.last_open_reason is not None and "probe took 3.0s" in breaker.last_open_reason


def test_release_frees_the_probe_slot() -> None:
    """A cancelled probe gives its slot back so the next caller can probe."""
    clock = ManualClock()
    breaker, _ = make_breaker(clock)
    open_it(breaker)
    clock.advance(30)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release()
    assert state(breaker) == "half_open"
    assert breaker.allow()


def test_a_vanished_probe_lapses_after_open_s() -> None:
    """A probe that never reports back does not wedge the breaker half-open forever."""
    clock = ManualClock()
    breaker, _ = make_breaker(clock)
    open_it(breaker)
    clock.advance(30)
    assert breaker.allow()
    clock.advance(10)
    assert not breaker.allow()
    assert breaker.retry_after() == pytest.approx(20.0)
    clock.advance(20)
    assert breaker.allow()


def test_late_results_while_open_are_ignored() -> None:
    """Calls that started before the breaker opened do not change its state when they finish."""
    clock = ManualClock()
    breaker, changes = make_breaker(clock)
    open_it(breaker)
    breaker.record_success(0.1)
    breaker.record_failure()
    assert state(breaker) == "open"
    assert changes == [("closed", "open")]


def test_from_settings_uses_the_breaker_section() -> None:
    """from_settings copies every threshold from BreakerSettings."""
    clock = ManualClock()
    settings = BreakerSettings(failure_threshold=2, open_s=5.0)
    breaker = CircuitBreaker.from_settings("backup", settings, clock)
    breaker.record_failure()
    breaker.record_failure()
    assert state(breaker) == "open"
    assert breaker.retry_after() == pytest.approx(5.0)
    assert breaker.name == "backup"


def test_listeners_added_later_see_transitions() -> None:
    """add_listener subscribes another observer next to on_state_change."""
    clock = ManualClock()
    breaker, changes = make_breaker(clock)
    extra: list[tuple[str, str]] = []
    breaker.add_listener(lambda old, new: extra.append((old, new)))
    open_it(breaker)
    assert extra == changes == [("closed", "open")]

"""A circuit breaker that opens on errors and on slowness.

Written here rather than taken from a library: no well-kept Python breaker
combines an error window, a latency (p95) window and an injectable clock.

    closed ──(N failures in window, or p95 latency too high)──▶ open
    open ──(open_s elapsed, next allow())──▶ half_open   (exactly one probe call)
    half_open ──(probe succeeds in time)──▶ closed        (windows cleared)
    half_open ──(probe fails or is slow)──▶ open
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from typing import Literal, Protocol

from agentkeel.resilience.clock import Clock

BreakerState = Literal["closed", "open", "half_open"]
StateListener = Callable[[str, str], None]
"""Called with ``(old_state, new_state)`` after every transition."""


class BreakerConfig(Protocol):
    """What configures a breaker: the ``breaker`` section of the model gateway
    (``BreakerSettings``) or of the tools client (``ToolBreakerSettings``)."""

    @property
    def failure_threshold(self) -> int: ...

    @property
    def failure_window_s(self) -> float: ...

    @property
    def latency_threshold_s(self) -> float: ...

    @property
    def latency_window(self) -> int: ...

    @property
    def min_latency_samples(self) -> int: ...

    @property
    def open_s(self) -> float: ...


class CircuitBreaker:
    """Stops calls to a dependency that is failing or has become slow.

    The caller asks ``allow()`` before each call and reports the outcome with
    ``record_success(latency_s)`` or ``record_failure()``; a call that ends
    without a verdict (cancelled) reports ``release()``.

    The p95 is the nearest-rank percentile of the last ``latency_window``
    successes; with fewer than 20 samples that is the slowest of them, so a
    small ``min_latency_samples`` makes the breaker quick to react to slowness.

    >>> breaker = CircuitBreaker(name="local", clock=SystemClock(), failure_threshold=5,
    ...     failure_window_s=60, latency_threshold_s=20, latency_window=20,
    ...     min_latency_samples=5, open_s=30)
    >>> if breaker.allow():
    ...     ...  # call, then record_success(latency) or record_failure()
    """

    def __init__(
        self,
        *,
        name: str,
        clock: Clock,
        failure_threshold: int,
        failure_window_s: float,
        latency_threshold_s: float,
        latency_window: int,
        min_latency_samples: int,
        open_s: float,
        on_state_change: StateListener | None = None,
    ) -> None:
        if failure_threshold < 1 or latency_window < 1 or min_latency_samples < 1:
            raise ValueError(
                f"Breaker '{name}': failure_threshold, latency_window and min_latency_samples "
                "must be at least 1."
            )
        self.name = name
        self._clock = clock
        self._failure_threshold = failure_threshold
        self._failure_window_s = failure_window_s
        self._latency_threshold_s = latency_threshold_s
        self._min_latency_samples = min_latency_samples
        self._open_s = open_s
        self._listeners: list[StateListener] = []
        if on_state_change is not None:
            self._listeners.append(on_state_change)
        self._state: BreakerState = "closed"
        self._failures: deque[float] = deque()
        self._latencies: deque[float] = deque(maxlen=latency_window)
        self._opened_at = 0.0
        self._probe_started: float | None = None
        self.last_open_reason: str | None = None
        """Why the breaker last opened, e.g. '5 failures in 60s' (for messages and logs)."""

    @classmethod
    def from_settings(
        cls,
        name: str,
        settings: BreakerConfig,
        clock: Clock,
        on_state_change: StateListener | None = None,
    ) -> CircuitBreaker:
        """A breaker configured from a ``breaker`` settings section."""
        return cls(
            name=name,
            clock=clock,
            failure_threshold=settings.failure_threshold,
            failure_window_s=settings.failure_window_s,
            latency_threshold_s=settings.latency_threshold_s,
            latency_window=settings.latency_window,
            min_latency_samples=settings.min_latency_samples,
            open_s=settings.open_s,
            on_state_change=on_state_change,
        )

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open``. An open breaker whose wait is over
        still reads ``open`` until the next ``allow()`` turns it half-open."""
        return self._state

    def add_listener(self, listener: StateListener) -> None:
        """Also call ``listener(old, new)`` on every state change (metrics, logs)."""
        self._listeners.append(listener)

    def allow(self) -> bool:
        """Whether a call may go ahead now. In half-open, only one caller gets True."""
        now = self._clock.monotonic()
        if self._state == "closed":
            return True
        if self._state == "open":
            if now - self._opened_at < self._open_s:
                return False
            self._transition("half_open")
            self._probe_started = now
            return True
        # Half-open: one probe at a time. A probe whose caller vanished without a
        # verdict (and without release()) must not wedge the breaker, so its slot
        # lapses after open_s.
        if self._probe_started is None or now - self._probe_started >= self._open_s:
            self._probe_started = now
            return True
        return False

    def record_success(self, latency_s: float) -> None:
        """Report a call that succeeded after ``latency_s`` seconds."""
        if self._state == "half_open":
            self._probe_started = None
            if latency_s > self._latency_threshold_s:
                self._open(f"probe took {latency_s:.1f}s (> {self._latency_threshold_s:g}s)")
            else:
                self._failures.clear()
                self._latencies.clear()
                self._transition("closed")
            return
        if self._state == "open":
            # A call that started before the breaker opened; the verdict stands.
            return
        self._latencies.append(latency_s)
        if len(self._latencies) >= self._min_latency_samples:
            p95 = self.latency_p95()
            if p95 is not None and p95 > self._latency_threshold_s:
                self._open(
                    f"p95 latency {p95:.1f}s over the last {len(self._latencies)} calls "
                    f"(> {self._latency_threshold_s:g}s)"
                )

    def record_failure(self) -> None:
        """Report a call that failed in a way that says the dependency is unhealthy."""
        now = self._clock.monotonic()
        if self._state == "half_open":
            self._probe_started = None
            self._open("probe failed")
            return
        if self._state == "open":
            return
        self._failures.append(now)
        self._prune_failures(now)
        if len(self._failures) >= self._failure_threshold:
            count = len(self._failures)
            noun = "failure" if count == 1 else "failures"
            self._open(f"{count} {noun} in {self._failure_window_s:g}s")

    def release(self) -> None:
        """Give back a half-open probe slot without a verdict (the call was cancelled)."""
        if self._state == "half_open":
            self._probe_started = None

    def retry_after(self) -> float:
        """Seconds until a call (or probe) may be allowed; 0 when one may go now."""
        now = self._clock.monotonic()
        if self._state == "open":
            return max(0.0, self._opened_at + self._open_s - now)
        if self._state == "half_open" and self._probe_started is not None:
            return max(0.0, self._probe_started + self._open_s - now)
        return 0.0

    def latency_p95(self) -> float | None:
        """p95 (nearest rank) of the recent successful call latencies, if any."""
        if not self._latencies:
            return None
        ordered = sorted(self._latencies)
        rank = math.ceil(0.95 * len(ordered)) - 1
        return ordered[max(rank, 0)]

    def _prune_failures(self, now: float) -> None:
        cutoff = now - self._failure_window_s
        while self._failures and self._failures[0] <= cutoff:
            self._failures.popleft()

    def _open(self, reason: str) -> None:
        self._opened_at = self._clock.monotonic()
        self.last_open_reason = reason
        self._transition("open")

    def _transition(self, new: BreakerState) -> None:
        old = self._state
        if old == new:
            return
        self._state = new
        for listener in self._listeners:
            listener(old, new)

    def __repr__(self) -> str:
        return f"CircuitBreaker(name={self.name!r}, state={self._state!r})"

"""Moving-window hit counts kept in this process: the in-memory side of ``RateLimiter``.

The ``limits`` library's memory storage starts a clean-up task on every hit
that hands its work to a worker thread; on the path of every tool call that
thread hand-off costs more than the check itself. A window here is the times
of the key's hits inside the last ``window_s`` seconds, pruned as it is read,
and only the ``max_keys`` most recently used keys are kept.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from agentkeel.resilience.clock import Clock


@dataclass(frozen=True, slots=True)
class WindowDecision:
    """Whether a hit fitted; ``retry_after`` is the wait until one would (0 if it did)."""

    allowed: bool
    remaining: int
    retry_after: float = 0.0


class MovingWindows:
    """At most ``limit`` hits per key in any ``window_s`` seconds.

    A refused hit is not counted, so a caller that keeps trying is let through
    again as soon as its oldest hit leaves the window. Not thread-safe: one
    event loop owns it (``hit`` never awaits, so tasks cannot interleave).

    >>> windows = MovingWindows(limit=30, window_s=60, clock=SystemClock())
    >>> windows.hit("tool:session-123").allowed
    True
    """

    def __init__(
        self, *, limit: int, window_s: float, clock: Clock, max_keys: int = 100_000
    ) -> None:
        if limit < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("MovingWindows needs limit >= 1, window_s > 0 and max_keys >= 1.")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._max_keys = max_keys
        # Insertion order is recency order: a key is re-inserted on every hit.
        self._hits: dict[str, deque[float]] = {}

    def hit(self, key: str) -> WindowDecision:
        """Count one hit on ``key`` if fewer than ``limit`` hits are in its window."""
        now = self._clock.monotonic()
        hits = self._hits.pop(key, None) or deque()
        cutoff = now - self.window_s
        while hits and hits[0] <= cutoff:
            hits.popleft()
        if len(hits) >= self.limit:
            decision = WindowDecision(
                allowed=False, remaining=0, retry_after=max(0.0, hits[0] - cutoff)
            )
        else:
            hits.append(now)
            decision = WindowDecision(allowed=True, remaining=self.limit - len(hits))
        self._hits[key] = hits
        while len(self._hits) > self._max_keys:
            del self._hits[next(iter(self._hits))]
        return decision

    def clear(self) -> None:
        """Forget every key's hits."""
        self._hits.clear()

    def __len__(self) -> int:
        return len(self._hits)

"""Draining: stop taking new work, let the turns in flight finish, then exit.

A replica drains on SIGTERM/SIGINT or ``POST /admin/drain``. While it drains,
``/ready`` answers 503 (so the router and Kubernetes stop sending traffic),
new sessions and new turns get 503 ``draining`` with ``Retry-After`` (the
session lives in the shared store, so the client's retry lands on another
replica), and turns already running finish and are stored.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from contextlib import contextmanager

from agentkeel.errors import Draining
from agentkeel.resilience.clock import Clock, SystemClock
from agentkeel.telemetry.metrics import AgentMetrics

logger = logging.getLogger("agentkeel.runtime.draining")


class DrainState:
    """Whether this replica accepts new work, and how many turns it still runs.

    >>> drain = DrainState()
    >>> with drain.track():       # a turn; raises Draining once drain.start() was called
    ...     ...
    >>> drain.start(reason="SIGTERM")
    >>> async with asyncio.timeout(30):
    ...     await drain.wait_idle()
    """

    def __init__(
        self,
        *,
        metrics: AgentMetrics | None = None,
        clock: Clock | None = None,
        retry_after_s: float = 1.0,
    ) -> None:
        self._metrics = metrics
        self._clock = clock or SystemClock()
        self.retry_after_s = retry_after_s
        self.draining = False
        self.reason: str | None = None
        self.in_flight = 0
        self.completed_while_draining = 0
        self.started_at: float | None = None
        # Events bind to the running loop on first wait, so building them here
        # (outside any loop) is safe.
        self._requested = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    def start(self, *, reason: str) -> bool:
        """Enter draining; returns False when already draining (the call is a no-op)."""
        if self.draining:
            return False
        self.draining = True
        self.reason = reason
        self.started_at = self._clock.monotonic()
        if self._metrics is not None:
            self._metrics.draining.set(1)
        logger.info(
            "drain started (%s): %d turn(s) in flight; /ready now answers 503 and new "
            "sessions and turns are refused",
            reason,
            self.in_flight,
            extra={"reason": reason, "event": "drain"},
        )
        self._requested.set()
        return True

    def check(self) -> None:
        """Raise ``Draining`` (503) when this replica takes no new work."""
        if self.draining:
            raise Draining(
                "This replica is draining and takes no new work. Retry the request: the "
                "session is kept in the shared store and another replica will serve it.",
                retry_after=self.retry_after_s,
            )

    @contextmanager
    def track(self) -> Iterator[None]:
        """Count one turn in flight; raises ``Draining`` instead when draining."""
        self.check()
        self.in_flight += 1
        self._idle.clear()
        try:
            yield
        finally:
            self.in_flight -= 1
            if self.draining:
                self.completed_while_draining += 1
            if self.in_flight == 0:
                self._idle.set()

    async def wait_requested(self) -> None:
        """Return once a drain has started."""
        await self._requested.wait()

    async def wait_idle(self) -> None:
        """Return once no turn is in flight (bound it with ``asyncio.timeout``)."""
        await self._idle.wait()

    def elapsed(self) -> float:
        """Seconds since the drain started (0 when not draining)."""
        if self.started_at is None:
            return 0.0
        return self._clock.monotonic() - self.started_at

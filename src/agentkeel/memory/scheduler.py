"""Background duties of the memory server, over an injectable clock.

- the integrity check every ``integrity_interval_s`` (a failure makes writes
  read-only, see ``MemoryServer.run_integrity_check``);
- a snapshot every ``snapshot_interval_s`` (``daily``; ``weekly`` when no
  weekly snapshot is younger than a week), followed by a retention pass;
- a verification of the newest snapshot every ``verify_interval_s``.

``run_due()`` does whatever is due now; the background task calls it every
``tick_s``. Tests advance a ``ManualClock`` and call ``run_due()`` directly.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from agentkeel.errors import KeelError
from agentkeel.resilience.clock import Clock

if TYPE_CHECKING:
    from agentkeel.memory.app import MemoryServer

logger = logging.getLogger("agentkeel.memory.scheduler")


class MemoryScheduler:
    """Runs the periodic integrity checks, snapshots, retention and verifications."""

    def __init__(self, *, server: MemoryServer, clock: Clock, tick_s: float = 30.0) -> None:
        self._server = server
        self._clock = clock
        self._tick_s = tick_s
        self._task: asyncio.Task[None] | None = None
        self._next: dict[str, float] = {}

    async def start(self) -> None:
        """Start the background loop; the first duties run one interval from now."""
        now = self._clock.monotonic()
        for name, interval in self._intervals().items():
            if interval > 0:
                self._next[name] = now + interval
        self._task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _intervals(self) -> dict[str, float]:
        settings = self._server.settings
        return {
            "integrity": settings.integrity_interval_s,
            "snapshot": settings.snapshot_interval_s,
            "verify": settings.verify_interval_s,
        }

    async def _loop(self) -> None:
        while True:
            await self._clock.sleep(self._tick_s)
            await self.run_due()

    async def run_due(self) -> list[str]:
        """Run every duty whose time has come; returns their names (for tests and logs)."""
        now = self._clock.monotonic()
        intervals = self._intervals()
        ran: list[str] = []
        for name, interval in intervals.items():
            if interval <= 0:
                continue
            due = self._next.setdefault(name, now + interval)
            if now < due:
                continue
            self._next[name] = now + interval
            try:
                await self._run(name)
            except KeelError as exc:
                logger.error("scheduled %s failed: %s", name, exc.message, extra={"reason": name})
            except Exception:
                logger.exception("scheduled %s failed unexpectedly", name)
            ran.append(name)
        return ran

    async def _run(self, name: str) -> None:
        server = self._server
        if name == "integrity":
            await server.run_integrity_check()
            return
        snapshots = server.require_snapshots()
        store = server.require_store()
        if name == "snapshot":
            existing = await store.list_snapshots()
            now = self._clock.time()
            week = server.settings.retention.keep_weekly_s
            has_weekly = any(s.kind == "weekly" and now - s.created_at < week for s in existing)
            await snapshots.create(label="scheduled", kind="daily" if has_weekly else "weekly")
            await snapshots.prune(server.settings.retention)
            return
        listed = await store.list_snapshots()
        if listed:
            await snapshots.verify(listed[-1].id)

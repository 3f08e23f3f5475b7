"""How many sessions each version has live: the session store's count, not the router's pins.

The router drops a pin only when a session is deleted (or answers 410), so a
session that ended by idle timeout or max duration keeps its pin for the pin
TTL. The session store knows better: any ready replica reports its live
sessions per version (the version that started each) at
``GET /admin/sessions/live``. The router's pins are the fallback when no
replica answers.

>>> sessions = StoreLiveSessions(router, live_of=admin_live(token_file))
>>> await sessions.by_version()
{'v1': 12, 'v2': 3}
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

from agentkeel.deploy.types import RouterControl
from agentkeel.errors import KeelError
from agentkeel.runtime.admin_client import AgentAdminClient

__all__ = ["LiveOf", "LiveSessions", "StoreLiveSessions", "admin_live"]

_log = logging.getLogger("agentkeel.deploy.rollout")

LIVE_TIMEOUT_S = 5.0

LiveOf = Callable[[str], Awaitable[Mapping[str, Any]]]
"""``live_of(replica_url)``: that replica's ``/admin/sessions/live`` report."""


class LiveSessions(Protocol):
    async def by_version(self) -> dict[str, int]:
        """Live sessions per version (the version that started each session)."""
        ...


class StoreLiveSessions:
    """The store's count through the first ready replica that answers; else the pins."""

    def __init__(self, router: RouterControl, *, live_of: LiveOf) -> None:
        self.router = router
        self.live_of = live_of
        self.source = "pins"
        """Where the last count came from: ``store`` or ``pins`` (the view shows it)."""

    async def by_version(self) -> dict[str, int]:
        _, versions = await self.router.versions()
        urls = [
            replica.url
            for version in versions
            for replica in version.replicas
            if replica.ready and not replica.draining
        ]
        for url in urls:
            try:
                report = await self.live_of(url)
            except KeelError as exc:
                _log.info("live sessions from %s: %s", url, exc.message)
                continue
            counts = report.get("by_version")
            if isinstance(counts, Mapping):
                self.source = "store"
                return {str(name): int(count) for name, count in counts.items()}
        self.source = "pins"
        return dict(await self.router.pin_stats())


def admin_live(token_file: Path, *, timeout_s: float = LIVE_TIMEOUT_S) -> LiveOf:
    """``live_of`` over HTTP: one short-lived admin client per call, the stack's token."""

    async def live_of(url: str) -> Mapping[str, Any]:
        async with AgentAdminClient(
            base_url=url, token_file=token_file, timeout_s=timeout_s
        ) as client:
            return await client.live()

    return live_of

"""Session affinity: which version a session belongs to, and the only ways that changes.

``SessionPins`` puts the in-memory cache in front of the pin store. A pin is
written when a session is created, moved or ended; it is read from the store
on a cache miss (so routers sharing Redis see each other's pins) and, when the
store has none either, from the session itself: every session records the
version that started it, and ``GET /v1/sessions/{id}`` on any ready replica
says which. A store that fails never fails a request: the lookup answers
instead, and the failure is logged.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from agentkeel.errors import Unavailable
from agentkeel.router.connection import Request
from agentkeel.router.pins import PinCache, PinStore
from agentkeel.router.upstream import fetch

if TYPE_CHECKING:
    from agentkeel.router.app import RouterApp

__all__ = ["LookupFailed", "SessionPins"]

logger = logging.getLogger("agentkeel.router")


class LookupFailed(Exception):
    """No replica could say whether a session exists (none ready, or none answered
    200 or 404): the request must wait, not go to a version chosen by default.
    ``asked`` is how many replicas were asked (0: none was ready)."""

    def __init__(self, session: str, asked: int) -> None:
        super().__init__(session)
        self.asked = asked


class SessionPins:
    """Pins of one router: cache, store and the lookup through a replica."""

    def __init__(self, *, app: RouterApp, store: PinStore, cache: PinCache) -> None:
        self.app = app
        self.store = store
        self.cache = cache

    async def version_of(self, session: str, request: Request) -> str | None:
        """The session's pinned version; ``None`` when a replica says it does not exist.

        Raises ``LookupFailed`` when no replica answered the lookup: guessing a
        version there could run a canary session's turn on the stable version.
        """
        version = self.cache.get(session)
        if version is not None:
            return version
        try:
            version = await self.store.get(session)
        except Unavailable as exc:
            logger.error("pin lookup failed, asking a replica instead: %s", exc.message)
        if version is None:
            version = await self._look_up(session, request)
            if version is None:
                return None
            await self._write(session, version)
        self.cache.put(session, version)
        return version

    async def pin(self, session: str, version: str) -> None:
        """A new session's pin (written before its creation is answered)."""
        self.cache.put(session, version)
        await self._write(session, version)

    async def move(self, session: str, old: str, new: str, request: Request) -> str:
        """Move a session to ``new`` as its next turn starts: the pin, a log line, a count.

        The store is read first: when another router sharing it moved the session
        already, its pin is taken as it is (and not counted twice). Returns the
        version the turn goes to.
        """
        try:
            stored = await self.store.get(session)
        except Unavailable:
            stored = None
        if stored is not None and stored != old:
            self.cache.put(session, stored)
            return stored
        self.cache.put(session, new)
        await self._write(session, new)
        self.app.metrics.session_moves.labels(old, new).inc()
        known = old in self.app.table.versions
        logger.info(
            "session moved from %s to %s at a turn boundary (%s)",
            old,
            new,
            "its version is retired with policy move-at-turn"
            if known
            else "its version is no longer in the routing table",
            extra={
                "session_id": session,
                "from_version": old,
                "to_version": new,
                "event": "router",
                **request.log_fields(),
            },
        )
        return new

    async def unpin(self, session: str) -> None:
        """The session ended: its pin goes."""
        self.cache.delete(session)
        try:
            await self.store.delete(session)
        except Unavailable as exc:
            logger.error("could not drop the pin of an ended session: %s", exc.message)

    async def drop_version(self, version: str) -> int:
        self.cache.drop_version(version)
        return await self.store.drop_version(version)

    async def _write(self, session: str, version: str) -> None:
        try:
            await self.store.put(session, version)
        except Unavailable as exc:
            # The session records its version, so a later lookup still finds it.
            logger.error(
                "could not store the pin of session %s (version %s): %s",
                session,
                version,
                exc.message,
                extra={"session_id": session, "version": version},
            )

    async def _look_up(self, session: str, request: Request) -> str | None:
        table = self.app.table
        routes = [table.stable] if table.stable is not None else []
        routes += [route for route in table.versions.values() if route is not table.stable]
        asked = 0
        for route in routes:
            replica = route.pick()
            if replica is None:
                continue
            asked += 1
            head = [
                b"GET /v1/sessions/" + session.encode("latin-1") + b" HTTP/1.1\r\n",
                b"host: " + replica.host.encode() + b"\r\n",
                b"x-correlation-id: " + request.correlation_id + b"\r\n",
            ]
            if request.authorization is not None:
                head.append(b"authorization: " + request.authorization + b"\r\n")
            head.append(b"\r\n")
            answer = await fetch(
                replica.pool, b"".join(head), timeout_s=self.app.settings.lookup_timeout_s
            )
            if answer is None:
                continue
            if answer.status == 404:
                return None
            if answer.status != 200:
                # Draining, an auth refusal, a 5xx: not an answer about the session.
                continue
            try:
                data = json.loads(b"".join(answer.body))
                return str(data["version"])
            except (ValueError, KeyError, TypeError):
                continue
        raise LookupFailed(session, asked)

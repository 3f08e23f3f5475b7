"""Forwarding ``/v1/*``: choose the version, then a ready replica of it, then pass the bytes.

- ``POST /v1/sessions``: a version by weight; on 201 the pin (session ->
  version) is written before the client sees the answer.
- ``/v1/sessions/{id}...``: the pinned version (memory first, then the store,
  then the session's own ``version`` read from a replica). A turn
  (``POST .../messages``) on a retired ``move-at-turn`` version, or on a
  version no longer in the table, first moves the pin to the stable version:
  the only point where a session changes version, between two turns.
- Retries stay inside the version and only where nothing can have run:
  connection refused, or a 503 ``draining`` (the replica refused before
  starting). A connection lost after the request went out is a 503
  ``upstream_lost`` with ``Retry-After``: the turn may have been stored, and
  the client's retry is safe because the stored turn number says so.

Every answered ``/v1`` request is counted and gets one access line
(``telemetry/access_log.py``) with the route's name and the path with the
session id as ``{session_id}``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

from agentkeel.router.affinity import LookupFailed
from agentkeel.router.connection import ClientConnection, Request
from agentkeel.router.frontdoor import ADMITTED, UNDECIDED, RouterFrontDoor, stripped_headers
from agentkeel.router.responses import router_error
from agentkeel.router.routing import Replica, VersionRoute
from agentkeel.router.upstream import BAD, BROKEN, DONE, HELD, LOST, TIMEOUT, Exchange
from agentkeel.telemetry.access_log import access_enabled, log_access

if TYPE_CHECKING:
    from agentkeel.router.app import RouterApp

__all__ = ["Proxy"]

logger = logging.getLogger("agentkeel.router")

_SESSIONS = b"/v1/sessions"
_SESSION_PREFIX = b"/v1/sessions/"
_PREFIX_LENGTH = len(_SESSION_PREFIX)
_V1 = b"/v1/"
_POST = b"POST"
_DELETE = b"DELETE"
_HEAD = b"HEAD"
_MESSAGES = b"messages"
_HELD_ON_CREATE = frozenset({201, 503})
_HELD_ON_503 = frozenset({503})
_NO_VERSION = "none"
# HEAD is refused; a DELETE ends its session (its pin is dropped, which means awaiting).
_NOT_NOW = frozenset({_HEAD, _DELETE})


class Proxy:
    """The router's request handler (``connection.Handler``)."""

    def __init__(self, app: RouterApp) -> None:
        self.app = app
        settings = app.settings
        self.max_header_bytes = settings.max_header_bytes
        self.max_body_bytes = settings.max_body_bytes
        self.retry_after_s = settings.retry_after_s
        # With auth on, the router authenticates the client and the replica gets the
        # signed assertion instead of the client's credential.
        self.front_door = app.front_door
        self.forwards_authorization = app.front_door is None
        self.stripped_headers = stripped_headers(
            allow_request_keys=app.allow_request_keys,
            trust_trace_context=app.trust_trace_context,
        )
        self.loop_time = asyncio.get_running_loop().time
        # Durations: uvloop's loop clock ticks in milliseconds, too coarse for a proxy.
        self.clock = time.perf_counter

    def opened(self, client: ClientConnection) -> None:
        self.app.connections.add(client)

    def closed(self, client: ClientConnection) -> None:
        self.app.connections.discard(client)

    async def handle(self, client: ClientConnection, request: Request) -> None:
        path = request.path
        if request.method == _HEAD:
            # A HEAD answer's Content-Length has no body after it; the agentkeel API has no
            # HEAD routes, so the router refuses it rather than parse around that.
            client.write(
                router_error(
                    405,
                    "method_not_allowed",
                    "The router does not forward HEAD; use GET.",
                    headers=request.id_header,
                    keep_alive=request.keep_alive,
                )
            )
            return
        if path.startswith(_V1):
            started = self.clock()
            door = self.front_door
            if door is None:
                version, route, status = await self._v1(client, request, path)
            else:
                version, route, status = await self._v1_admitted(client, request, path)
            self._done(request, version, route, status, self.clock() - started)
            return
        await self.app.serve_local(client, request)

    # -- /v1 ---------------------------------------------------------------------------

    async def _v1_admitted(
        self, client: ClientConnection, request: Request, path: bytes
    ) -> tuple[str, str, int]:
        """``_v1`` behind the front door; a turn's slot is given back however it ends."""
        door = self.front_door
        assert door is not None
        target = _target(request, path)
        if request.principal is None:
            status = await door.admit(client, request, turn=target[1] == "turn")
            if status != ADMITTED:
                return _NO_VERSION, target[1], status
        try:
            return await self._v1(client, request, path, target)
        finally:
            door.release(request)

    async def _v1(
        self,
        client: ClientConnection,
        request: Request,
        path: bytes,
        target: tuple[str | None, str] | None = None,
    ) -> tuple[str, str, int]:
        session, name = target or _target(request, path)
        if name == "create_session":
            return await self._create(client, request)
        if session is not None:
            if "%" in session:
                # Replicas decode the path; an encoded '/' would name another route there.
                return self._refuse(
                    client,
                    request,
                    400,
                    "invalid_session_id",
                    (
                        "A session id has no percent-encoded characters; use the id "
                        "POST /v1/sessions returned."
                    ),
                )
            return await self._pinned(client, request, session, name)
        return await self._send(client, request, self.app.table.stable, name)

    async def _create(self, client: ClientConnection, request: Request) -> tuple[str, str, int]:
        route = self.app.table.choose_new(self.app.rng)
        if route is None:
            return self._no_version(client, request, "create_session")
        ex = await self._forward(client, request, route, _HELD_ON_CREATE)
        if isinstance(ex, int):
            return route.name, "create_session", ex
        if ex.outcome == HELD:
            if ex.status == 201:
                await self._pin_created(ex, route.name, request)
            ex.release_held()
        return route.name, "create_session", ex.status

    async def _pin_created(self, ex: Exchange, version: str, request: Request) -> None:
        try:
            data = json.loads(b"".join(ex.body))
            session = str(data["session_id"])
        except (ValueError, KeyError, TypeError):
            logger.warning(
                "a replica of %s created a session but its answer names no session_id; not pinned",
                version,
                extra={"version": version, **request.log_fields()},
            )
            return
        await self.app.pins.pin(session, version)

    async def _pinned(
        self, client: ClientConnection, request: Request, session: str, name: str
    ) -> tuple[str, str, int]:
        app = self.app
        try:
            version = await app.pins.version_of(session, request)
        except LookupFailed as failed:
            if not failed.asked:
                return self._no_version(client, request, name)
            app.metrics.upstream_error(_NO_VERSION, "lookup_failed")
            return self._refuse(
                client,
                request,
                503,
                "session_lookup_failed",
                (
                    "No replica could say which version this session belongs to (none ready, "
                    "or none answered). Retry shortly; check `keel router status`."
                ),
                retry_after=True,
            )
        table = app.table
        if version is None:
            # Unknown everywhere: the stable version's replicas answer (a 404 passes through).
            return await self._send(client, request, table.stable, name)
        route = table.versions.get(version)
        stable = table.stable
        if route is None or route.moves_at_turn:
            if name == "turn" and stable is not None and stable.name != version:
                moved = await app.pins.move(session, version, stable.name, request)
                route = app.table.versions.get(moved) or stable
            elif route is None:
                # Its version is gone; any version can read it, and the pin moves at its next turn.
                route = stable
        if name != "turn" and route is not None and not route.has_available():
            # Its version has no ready replica left (stopped after a promotion or rollback):
            # the store is shared, so the stable version reads, ends or rates the session;
            # only a turn stays on the pinned version.
            route = stable
        served_by, _, status = await self._send(client, request, route, name)
        ended = request.method == _DELETE and name == "session" and 200 <= status < 300
        if ended or status == 410:
            await app.pins.unpin(session)
        return served_by, name, status

    async def _send(
        self, client: ClientConnection, request: Request, route: VersionRoute | None, name: str
    ) -> tuple[str, str, int]:
        if route is None:
            return self._no_version(client, request, name)
        result = await self._forward(client, request, route, _HELD_ON_503)
        return route.name, name, _answered(result)

    def _refuse(
        self,
        client: ClientConnection,
        request: Request,
        status: int,
        code: str,
        message: str,
        *,
        retry_after: bool = False,
    ) -> tuple[str, str, int]:
        client.write(
            router_error(
                status,
                code,
                message,
                retry_after_s=self.retry_after_s if retry_after else None,
                headers=request.id_header,
                keep_alive=request.keep_alive,
            )
        )
        return _NO_VERSION, "session_other", status

    def _no_version(
        self, client: ClientConnection, request: Request, name: str
    ) -> tuple[str, str, int]:
        self.app.metrics.upstream_error(_NO_VERSION, "no_ready_replica")
        client.write(
            router_error(
                503,
                "no_ready_replica",
                (
                    "No version can take new sessions now: no version with a weight above 0 "
                    "has a ready replica."
                    if name == "create_session"
                    else "No ready replica can serve this request now (none of its "
                    "version, or of the stable version, is ready)."
                )
                + " Retry shortly; check `keel router status`.",
                retry_after_s=self.retry_after_s,
                headers=request.id_header,
                keep_alive=request.keep_alive,
            )
        )
        return _NO_VERSION, name, 503

    async def _forward(
        self,
        client: ClientConnection,
        request: Request,
        route: VersionRoute,
        held: frozenset[int],
        tried: set[Replica] | None = None,
    ) -> Exchange | int:
        """Send ``request`` to a replica of ``route`` (not one of ``tried``) and pass its
        answer on (a held one is the caller's to release); the status when the router
        answered itself."""
        app = self.app
        loop = asyncio.get_running_loop()
        while True:
            replica = route.pick(tried)
            if replica is None:
                app.metrics.upstream_error(route.name, "no_ready_replica")
                return self._answer(
                    client,
                    request,
                    503,
                    "no_ready_replica",
                    f"No ready replica of version {route.name!r} can take this request now"
                    + (" (the others refused it)" if tried else "")
                    + "; retry shortly.",
                )
            upstream = replica.pool.acquire_idle(loop.time())
            if upstream is None:
                try:
                    upstream = await replica.pool.connect()
                except (OSError, TimeoutError) as exc:
                    kind = "connect_timeout" if isinstance(exc, TimeoutError) else "connect_refused"
                    app.metrics.upstream_error(route.name, kind)
                    app.mark_unready(replica, kind.replace("_", " "))
                    tried = (tried or set()) | {replica}
                    continue
            if client.closed:
                replica.pool.release(upstream)
                return 499
            future: asyncio.Future[int] = loop.create_future()
            ex = Exchange(
                future,
                sink=client,
                buffer_statuses=held,
                correlation_id=request.correlation_id,
                keep_client=request.keep_alive,
            )
            reused = upstream.reused
            replica.in_flight += 1
            client.upstream = upstream
            if client.writing_paused:
                upstream.pause_reading()
            upstream.send(request.wire, ex)
            try:
                await future
            finally:
                replica.in_flight -= 1
                client.upstream = None
            result = self._settle(client, request, route, replica, ex, reused)
            if result is not None:
                return result
            tried = (tried or set()) | {replica}

    # -- the fast path: no task, no coroutine ----------------------------------------------

    def forward_now(self, client: ClientConnection, request: Request) -> bool:
        """Forward ``request`` straight from the parser's callback when nothing needs
        awaiting: a ``/v1`` request that creates nothing and ends nothing, whose session's
        pin is cached (or that names no session), with an idle pooled connection to a
        ready replica. Its answer is finished from the replica connection's callback
        (``_forwarded``); ``False`` leaves the request to ``handle``."""
        method = request.method
        path = request.path
        if method in _NOT_NOW or client.closed or not path.startswith(_V1):
            return False
        session, name = _target(request, path)
        if name == "create_session":
            return False
        app = self.app
        if session is None:
            route = app.table.stable
        else:
            version = app.pins.cache.get(session)
            if version is None:
                return False
            route = app.table.versions.get(version)
            if route is not None and route.moves_at_turn:
                return False  # a move may be due: handle() decides it
        if route is None:
            return False
        replica = route.pick()
        if replica is None:
            return False
        upstream = replica.pool.acquire_idle(self.loop_time())
        if upstream is None:
            route.unpick()  # handle() picks again and connects
            return False
        door = self.front_door
        if door is not None:
            # Last, so that nothing after it can leave the request (and a turn's slot)
            # to a task that might never run.
            status = door.admit_now(client, request, turn=name == "turn")
            if status != ADMITTED:
                route.unpick()
                replica.pool.release(upstream)
                if status == UNDECIDED:
                    return False
                self._done(request, _NO_VERSION, name, status, 0.0)
                client.forwarded(request)
                return True
        forwarding = _Forwarding(
            request, route, replica, name, session, self.clock(), upstream.reused
        )
        ex = Exchange(
            None,
            sink=client,
            buffer_statuses=_HELD_ON_503,
            correlation_id=request.correlation_id,
            keep_client=request.keep_alive,
            on_end=lambda ex: self._forwarded(client, forwarding, ex),
        )
        replica.in_flight += 1
        client.upstream = upstream
        if client.writing_paused:
            upstream.pause_reading()
        upstream.send(request.wire, ex)
        return True

    def _forwarded(self, client: ClientConnection, f: _Forwarding, ex: Exchange) -> None:
        """The replica's answer to a request ``forward_now`` sent has ended."""
        try:
            f.replica.in_flight -= 1
            client.upstream = None
            result = self._settle(client, f.request, f.route, f.replica, ex, f.reused)
            if result is None:
                # It answered 503 draining: another replica, which means awaiting.
                client.finish_in_task(f.request, self._retry(client, f))
                return
            status = _answered(result)
            if status == 410 and f.session is not None:
                client.finish_in_task(f.request, self._ended(f, status))
                return
            if f.request.turn_slot is not None:
                RouterFrontDoor.release(f.request)
            self._done(f.request, f.route.name, f.name, status, self.clock() - f.started)
            client.forwarded(f.request)
        except Exception:
            RouterFrontDoor.release(f.request)
            logger.exception("router: finishing a forwarded request failed; closing its connection")
            client.close()

    async def _retry(self, client: ClientConnection, f: _Forwarding) -> None:
        try:
            result = await self._forward(client, f.request, f.route, _HELD_ON_503, {f.replica})
        except BaseException:
            RouterFrontDoor.release(f.request)
            raise
        await self._ended(f, _answered(result))

    async def _ended(self, f: _Forwarding, status: int) -> None:
        try:
            if status == 410 and f.session is not None:
                await self.app.pins.unpin(f.session)
        finally:
            RouterFrontDoor.release(f.request)
        self._done(f.request, f.route.name, f.name, status, self.clock() - f.started)

    def _done(self, request: Request, version: str, name: str, status: int, seconds: float) -> None:
        """A ``/v1`` request answered: count it, and write its access line."""
        self.app.metrics.record(version, name, status, seconds)
        if access_enabled():
            session = _target(request, request.path)[0]
            path = request.path.decode("latin-1")
            if session is not None:
                _, slash, tail = path[_PREFIX_LENGTH:].partition("/")
                path = f"{_SESSION_PREFIX.decode()}{{session_id}}{slash}{tail}"
            log_access(
                request.method.decode("latin-1"),
                name,
                path,
                status,
                seconds,
                session_id=session,
                correlation_id=request.correlation_id.decode("latin-1"),
                version=None if version == _NO_VERSION else version,
            )

    # -- after an exchange --------------------------------------------------------------

    def _settle(
        self,
        client: ClientConnection,
        request: Request,
        route: VersionRoute,
        replica: Replica,
        ex: Exchange,
        reused: bool,
    ) -> Exchange | int | None:
        """What an ended exchange means: the exchange (a held one is the caller's to
        release), the status the router answered with, or ``None``: nothing ran, try
        another replica."""
        app = self.app
        outcome = ex.outcome
        if outcome == DONE:
            if ex.client_must_close:
                client.must_close = True
            return ex
        if outcome == HELD:
            if ex.status == 503 and _says_draining(ex):
                app.metrics.upstream_error(route.name, "draining")
                app.mark_unready(replica, "it answered 503 draining")
                return None
            if ex.client_must_close:
                client.must_close = True
            return ex
        if outcome == LOST:
            app.metrics.upstream_error(route.name, "lost")
            if not reused:
                app.mark_unready(replica, "it dropped a new connection")
            logger.warning(
                "replica %s dropped the connection after the request was sent; answered "
                "503 upstream_lost (not retried: it may have acted on it)",
                replica.url,
                extra={
                    "version": route.name,
                    "replica": replica.url,
                    **request.log_fields(),
                },
            )
            return self._answer(
                client,
                request,
                503,
                "upstream_lost",
                f"The connection to a replica of version {route.name!r} was lost after the "
                "request was sent; it may have been processed. Retry: a turn that was "
                "stored shows in the session's turn count.",
            )
        if outcome == TIMEOUT:
            app.metrics.upstream_error(route.name, "timeout")
            return self._answer(
                client,
                request,
                504,
                "upstream_timeout",
                f"A replica of version {route.name!r} sent nothing for "
                f"{app.settings.upstream_timeout_s:g} s (router.upstream_timeout_s).",
            )
        if outcome == BAD:
            app.metrics.upstream_error(route.name, "bad_response")
            return self._answer(
                client,
                request,
                502,
                "bad_upstream_response",
                f"A replica of version {route.name!r} answered with something that is not HTTP.",
            )
        # BROKEN: part of the answer already went out; only closing can say so.
        app.metrics.upstream_error(route.name, "lost" if outcome == BROKEN else "timeout")
        client.must_close = True
        client.close()
        return ex

    def _answer(
        self, client: ClientConnection, request: Request, status: int, code: str, message: str
    ) -> int:
        client.write(
            router_error(
                status,
                code,
                message,
                retry_after_s=self.retry_after_s if status == 503 else None,
                headers=request.id_header,
                keep_alive=request.keep_alive,
            )
        )
        return status


class _Forwarding:
    """What finishing a request ``forward_now`` sent needs to know."""

    __slots__ = ("name", "replica", "request", "reused", "route", "session", "started")

    def __init__(
        self,
        request: Request,
        route: VersionRoute,
        replica: Replica,
        name: str,
        session: str | None,
        started: float,
        reused: bool,
    ) -> None:
        self.request = request
        self.route = route
        self.replica = replica
        self.name = name
        self.session = session
        self.started = started
        self.reused = reused


def _answered(result: Exchange | int) -> int:
    """The status the client got; a held answer is written now."""
    if isinstance(result, int):
        return result
    if result.outcome == HELD:
        result.release_held()
    return result.status


def _target(request: Request, path: bytes) -> tuple[str | None, str]:
    """The session a ``/v1`` path names (or ``None``) and the route's name for metrics."""
    if path == _SESSIONS:
        return None, "create_session" if request.method == _POST else "other"
    if path.startswith(_SESSION_PREFIX):
        session, _, tail = path[_PREFIX_LENGTH:].partition(b"/")
        if session:
            if not tail:
                name = "session"
            elif tail == _MESSAGES and request.method == _POST:
                name = "turn"
            else:
                name = "session_other"
            return session.decode("latin-1"), name
    return None, "other"


def _says_draining(ex: Exchange) -> bool:
    """A replica's 503 that says it refused before doing anything (``draining``)."""
    try:
        data = json.loads(b"".join(ex.body))
    except ValueError:
        return False
    error = data.get("error") if isinstance(data, dict) else None
    return isinstance(error, dict) and error.get("code") == "draining"

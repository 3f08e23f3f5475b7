"""Plain ASGI middleware shared by every agentkeel service: the correlation id, and the
request metrics with one access line per request (``access_log.py``)."""

from __future__ import annotations

import logging
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from agentkeel.telemetry.access_log import access_enabled, log_access
from agentkeel.telemetry.correlation import HEADER, accept_correlation_id, set_correlation_id
from agentkeel.telemetry.metrics import HttpMetrics

_HEADER_BYTES = HEADER.lower().encode()
_log = logging.getLogger("agentkeel.http")


class CorrelationMiddleware:
    """Takes ``X-Correlation-ID`` from the request or mints one, keeps it in the
    contextvar for the request's lifetime, and echoes it on the response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = None
        for key, value in scope["headers"]:
            if key == _HEADER_BYTES:
                incoming = value.decode("latin-1")
                break
        cid = accept_correlation_id(incoming)
        set_correlation_id(cid)
        scope.setdefault("state", {})["correlation_id"] = cid
        raw = cid.encode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0] != _HEADER_BYTES]
                headers.append((_HEADER_BYTES, raw))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            set_correlation_id(None)


class HttpMetricsMiddleware:
    """Counts requests and measures duration per route template; one access line per
    request (INFO, category ``access``), except for the ``skip_paths`` (not measured
    either) and the ``quiet_paths`` probes. An unexpected 5xx (not 503) is a WARNING line
    instead, so it lands in the ``error`` category, which is kept longer."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        metrics: HttpMetrics,
        skip_paths: tuple[str, ...] = ("/metrics",),
        quiet_paths: tuple[str, ...] = ("/health", "/ready"),
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.skip_paths = skip_paths
        # Probes poll these every few seconds; a 503 there is expected while draining.
        self.quiet_paths = quiet_paths

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.skip_paths:
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        status = 500
        self.metrics.in_flight.inc()

        async def send_and_record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.metrics.in_flight.dec()
            elapsed = time.perf_counter() - start
            route = _route_template(scope)
            method = scope["method"]
            self.metrics.requests_for(route, method, str(status)).inc()
            self.metrics.duration_for(route, method).observe(elapsed)
            if scope["path"] not in self.quiet_paths:
                self._log_request(scope, method, route, status, elapsed)

    @staticmethod
    def _log_request(scope: Scope, method: str, route: str, status: int, elapsed: float) -> None:
        if status >= 500 and status != 503:
            _log.warning(
                "%s %s %s",
                method,
                scope["path"],
                status,
                extra={
                    "method": method,
                    "path": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 3),
                },
            )
        elif access_enabled():
            params = scope.get("path_params") or {}
            session = params.get("session_id")
            log_access(
                method,
                _route_name(scope),
                route,
                status,
                elapsed,
                session_id=session if isinstance(session, str) else None,
            )


def _route_template(scope: Scope) -> str:
    route: Any = scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else "unmatched"


def _route_name(scope: Scope) -> str:
    name = getattr(scope.get("route"), "name", None)
    return name if isinstance(name, str) else "unmatched"

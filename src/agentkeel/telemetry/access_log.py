"""Access lines: one INFO line per request at a service's edge, category ``access``.

Every service writes them the same way: the Starlette services from
``HttpMetricsMiddleware``, the router from its proxy. Each line has
``method``, ``route`` (the route's name), ``path`` (the path template, never a
raw id), ``status`` and ``duration_ms``, plus the ``session_id`` when the path
names one, so ``keel logs tail --session`` finds a session's requests.
``logging.access_lines: false`` turns them off (``configure_logging`` disables
the logger); probes and scrapes (``/health``, ``/ready``, ``/metrics``) never
get one.

>>> log_access("POST", "turn", "/v1/sessions/{session_id}/messages", 200, 0.0123,
...            session_id="s-1")
"""

from __future__ import annotations

import logging

__all__ = ["ACCESS_LOGGER", "access_enabled", "log_access"]

ACCESS_LOGGER = "agentkeel.access"

_log = logging.getLogger(ACCESS_LOGGER)


def access_enabled() -> bool:
    """Whether an access line would be written now (checked before building one)."""
    return _log.isEnabledFor(logging.INFO)


def log_access(
    method: str,
    route: str,
    path: str,
    status: int,
    duration_s: float,
    *,
    session_id: str | None = None,
    correlation_id: str | None = None,
    version: str | None = None,
) -> None:
    """Write one access line (a no-op when access lines are off)."""
    if not _log.isEnabledFor(logging.INFO):
        return
    duration_ms = round(duration_s * 1000, 3)
    extra: dict[str, object] = {
        "category": "access",
        "method": method,
        "route": route,
        "path": path,
        "status": status,
        "duration_ms": duration_ms,
    }
    if session_id is not None:
        extra["session_id"] = session_id
    if correlation_id is not None:
        extra["correlation_id"] = correlation_id
    if version is not None:
        extra["version"] = version
    _log.info("%s %s %d %.1f ms", method, path, status, duration_ms, extra=extra)

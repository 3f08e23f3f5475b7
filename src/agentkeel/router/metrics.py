"""The router's own figures: Prometheus families and the per-version stats of ``/admin/stats``.

Labels stay bounded: versions (one per deployed version), route names (a
fixed set, never a raw path), status codes and error kinds. Recording a
request is a few dictionary lookups (``Children``) and one append, so it costs
the hot path next to nothing.
"""

from __future__ import annotations

from collections import deque

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from agentkeel.telemetry.metrics import LATENCY_BUCKETS, Children

__all__ = ["RouterMetrics", "VersionStats"]

# Requests below a millisecond are the router's own answers and fast replicas.
ROUTER_BUCKETS = (0.0005, *LATENCY_BUCKETS)
_LATENCY_SAMPLES = 4096


class VersionStats:
    """What the router saw of one version: requests, status codes, recent latencies."""

    __slots__ = ("by_status", "latencies", "requests")

    def __init__(self) -> None:
        self.requests = 0
        self.by_status: dict[int, int] = {}
        self.latencies: deque[float] = deque(maxlen=_LATENCY_SAMPLES)

    def record(self, status: int, seconds: float) -> None:
        self.requests += 1
        by_status = self.by_status
        by_status[status] = by_status.get(status, 0) + 1
        self.latencies.append(seconds)

    def to_dict(self) -> dict[str, object]:
        ordered = sorted(self.latencies)
        return {
            "requests": self.requests,
            "by_status": {str(status): count for status, count in sorted(self.by_status.items())},
            "p50_ms": _quantile_ms(ordered, 0.50),
            "p99_ms": _quantile_ms(ordered, 0.99),
        }


def _quantile_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, int(q * len(ordered)))
    return round(ordered[index] * 1000, 3)


class RouterMetrics:
    """``agent_router_*`` families on ``registry``, plus the per-version stats."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.requests = Counter(
            "agent_router_requests_total",
            "Requests the router answered, by version, route and status.",
            ["version", "route", "status"],
            registry=registry,
        )
        self.duration = Histogram(
            "agent_router_request_duration_seconds",
            "Time from a request's last byte to its response's last byte, by version and route.",
            ["version", "route"],
            buckets=ROUTER_BUCKETS,
            registry=registry,
        )
        self.upstream_errors = Counter(
            "agent_router_upstream_errors_total",
            "Replica failures the router saw, by version and kind (connect_refused, "
            "connect_timeout, draining, lost, timeout, bad_response, no_ready_replica).",
            ["version", "kind"],
            registry=registry,
        )
        self.session_moves = Counter(
            "agent_router_session_moves_total",
            "Sessions moved at a turn boundary from a retired (or removed) version.",
            ["from_version", "to_version"],
            registry=registry,
        )
        self.pinned_sessions = Gauge(
            "agent_router_pinned_sessions",
            "Live pins in the pin table, by version (the same figure on every router "
            "sharing a store: aggregate with max).",
            ["version"],
            registry=registry,
        )
        self.ready_replicas = Gauge(
            "agent_router_ready_replicas",
            "Replicas this router sends new work to (ready and not draining), by version.",
            ["version"],
            registry=registry,
        )
        self.requests_for = Children(self.requests)
        self.duration_for = Children(self.duration)
        self.upstream_errors_for = Children(self.upstream_errors)
        self.stats: dict[str, VersionStats] = {}

    def record(self, version: str, route: str, status: int, seconds: float) -> None:
        """One answered request."""
        self.requests_for(version, route, _status_text(status)).inc()
        self.duration_for(version, route).observe(seconds)
        stats = self.stats.get(version)
        if stats is None:
            stats = self.stats[version] = VersionStats()
        stats.record(status, seconds)

    def upstream_error(self, version: str, kind: str) -> None:
        self.upstream_errors_for(version, kind).inc()


_STATUS_TEXT: dict[int, str] = {}


def _status_text(status: int) -> str:
    text = _STATUS_TEXT.get(status)
    if text is None:
        text = _STATUS_TEXT[status] = str(status)
    return text

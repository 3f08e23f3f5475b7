"""The router's own figures: Prometheus families and the per-version stats of ``/admin/stats``.

Labels stay bounded: versions (one per deployed version), route names (a
fixed set, never a raw path), status codes and error kinds. A request is
recorded in plain ints (a count per status, a fixed bucket array per version
and route) that a collector turns into ``agent_router_requests_total`` and
``agent_router_request_duration_seconds`` when ``/metrics`` is read: no lock,
no Prometheus object touched on the hot path.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily, Metric

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


class _Series:
    """One version and route: requests by status and their durations' histogram."""

    __slots__ = ("buckets", "by_status", "total_s")

    def __init__(self) -> None:
        self.by_status: dict[int, int] = {}
        self.buckets = [0] * (len(ROUTER_BUCKETS) + 1)  # the last one is +Inf
        self.total_s = 0.0


class _RequestCollector:
    """The request families, built from the ``_Series`` at scrape time."""

    def __init__(self, series: dict[tuple[str, str], _Series]) -> None:
        self.series = series

    def describe(self) -> Iterator[Metric]:
        yield from self._families()

    def collect(self) -> Iterator[Metric]:
        yield from self._families(self.series)

    def _families(self, series: dict[tuple[str, str], _Series] | None = None) -> Iterator[Metric]:
        requests = CounterMetricFamily(
            "agent_router_requests",
            "Requests the router answered, by version, route and status.",
            labels=["version", "route", "status"],
        )
        duration = HistogramMetricFamily(
            "agent_router_request_duration_seconds",
            "Time from a request's last byte to its response's last byte, by version and route.",
            labels=["version", "route"],
        )
        for (version, route), one in (series or {}).items():
            for status, count in sorted(one.by_status.items()):
                requests.add_metric([version, route, str(status)], count)
            cumulative, running = [], 0
            for bound, count in zip((*ROUTER_BUCKETS, float("inf")), one.buckets, strict=True):
                running += count
                cumulative.append((_bound_text(bound), running))
            duration.add_metric([version, route], cumulative, one.total_s)
        yield requests
        yield duration


class _AuthCollector:
    """``agent_router_auth_total{outcome}`` from the front door's plain counts."""

    def __init__(self, outcomes: dict[str, int]) -> None:
        self.outcomes = outcomes

    def describe(self) -> Iterator[Metric]:
        yield self._family({})

    def collect(self) -> Iterator[Metric]:
        yield self._family(self.outcomes)

    @staticmethod
    def _family(outcomes: dict[str, int]) -> Metric:
        family = CounterMetricFamily(
            "agent_router_auth",
            "/v1 requests by what the router's front door decided (ok, unauthenticated, "
            "forbidden, rate_limited, concurrency_limited, unavailable, error).",
            labels=["outcome"],
        )
        for outcome, count in outcomes.items():
            family.add_metric([outcome], count)
        return family


def _bound_text(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


def _quantile_ms(ordered: list[float], q: float) -> float | None:
    if not ordered:
        return None
    index = min(len(ordered) - 1, int(q * len(ordered)))
    return round(ordered[index] * 1000, 3)


class RouterMetrics:
    """``agent_router_*`` families on ``registry``, plus the per-version stats."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.series: dict[tuple[str, str], _Series] = {}
        registry.register(_RequestCollector(self.series))
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
        self.upstream_errors_for = Children(self.upstream_errors)
        self.stats: dict[str, VersionStats] = {}

    def count_auth(self, outcomes: dict[str, int]) -> None:
        """Export the front door's outcome counts (a dict it increments; auth on only)."""
        self.registry.register(_AuthCollector(outcomes))

    def record(self, version: str, route: str, status: int, seconds: float) -> None:
        """One answered request."""
        series = self.series.get((version, route))
        if series is None:
            series = self.series[version, route] = _Series()
        by_status = series.by_status
        by_status[status] = by_status.get(status, 0) + 1
        series.buckets[bisect_left(ROUTER_BUCKETS, seconds)] += 1
        series.total_s += seconds
        stats = self.stats.get(version)
        if stats is None:
            stats = self.stats[version] = VersionStats()
        stats.record(status, seconds)

    def upstream_error(self, version: str, kind: str) -> None:
        self.upstream_errors_for(version, kind).inc()

"""Metric families and the cached label children."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from agentkeel.telemetry.metrics import AgentMetrics, Children, HttpMetrics


def test_children_returns_one_child_per_label_set() -> None:
    """The same label values give the same child; its updates land in the registry."""
    registry = CollectorRegistry()
    metrics = HttpMetrics(registry)
    requests = Children(metrics.requests)

    assert requests("/v1/sessions", "POST", "201") is requests("/v1/sessions", "POST", "201")
    requests("/v1/sessions", "POST", "201").inc()
    requests("/v1/sessions", "POST", "201").inc()
    requests("/v1/sessions", "POST", "422").inc()

    labels = {"route": "/v1/sessions", "method": "POST"}
    assert registry.get_sample_value("agent_http_requests_total", {**labels, "status": "201"}) == 2
    assert registry.get_sample_value("agent_http_requests_total", {**labels, "status": "422"}) == 1


def test_agent_metrics_cached_children_are_the_families_children() -> None:
    """``turns_for`` records into ``agent_turns_total`` like ``turns.labels`` does."""
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry)

    metrics.turns_for("support", "ok").inc()
    metrics.turns.labels("support", "ok").inc()

    assert registry.get_sample_value("agent_turns_total", {"agent": "support", "status": "ok"}) == 2

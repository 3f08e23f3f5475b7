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
    metrics.turns.labels("support", "ok", "v1").inc()

    labels = {"agent": "support", "status": "ok", "version": "v1"}
    assert registry.get_sample_value("agent_turns_total", labels) == 2


def test_agent_metrics_bind_the_replicas_version() -> None:
    """The version given to ``AgentMetrics`` labels every behavioural family it records."""
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, version="v2")

    metrics.turns_for("support", "ok").inc()
    metrics.tool_calls_for("search", "failure").inc()
    metrics.guardrails_for("tool_storm", "support").inc()
    metrics.turn_tokens_for("support").observe(300)
    metrics.feedback_for("support").observe(4)

    def value(name: str, **labels: str) -> float | None:
        return registry.get_sample_value(name, {**labels, "version": "v2"})

    assert value("agent_turns_total", agent="support", status="ok") == 1
    assert value("agent_tool_calls_total", tool="search", status="failure") == 1
    assert value("agent_guardrail_events_total", guardrail="tool_storm", agent="support") == 1
    assert value("agent_turn_tokens_bucket", agent="support", le="512.0") == 1
    assert value("agent_turn_tokens_bucket", agent="support", le="256.0") == 0
    assert value("agent_feedback_score_count", agent="support") == 1
    assert (
        registry.get_sample_value("agent_turns_total", {"agent": "support", "status": "ok"}) is None
    )


def test_children_append_bound_values_after_the_callers() -> None:
    """``bound`` values fill the last labels; the caller passes only the others."""
    registry = CollectorRegistry()
    metrics = AgentMetrics(registry, version="canary")
    turns = Children(metrics.turns, bound=("canary",))

    turns("a", "ok").inc()
    assert turns("a", "ok") is turns("a", "ok")
    labels = {"agent": "a", "status": "ok", "version": "canary"}
    assert registry.get_sample_value("agent_turns_total", labels) == 1

"""A real Prometheus scrapes a real ``keel up`` with the config ``keel render prometheus``
writes: every service is a target, the six agent metrics and every service's request
rate, errors and duration arrive with their labels, as many as the traffic made.

The stack and its traffic are ``tests/integration/prometheus_stack.py``'s.
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import pytest

from agentkeel.assets.prometheus_config import replica_targets_path
from agentkeel.deploy.drivers import LocalDriver
from agentkeel.deploy.types import ReplicaSpec
from tests.integration.prometheus_stack import (  # noqa: F401 (the fixtures)
    BACKUP_MODEL,
    PRIMARY_MODEL,
    SCRAPE_TIMEOUT_S,
    PrometheusStack,
    prometheus_stack,
    stack_overrides,
    stack_rules,
)

pytestmark = pytest.mark.slow

JOBS = {"agent", "router", "memory", "tools"}
TARGET_LABELS = {"job", "instance"}


@pytest.fixture(scope="module")
def stack(prometheus_stack: PrometheusStack) -> PrometheusStack:  # noqa: F811
    return prometheus_stack


def values(series: Iterable[dict[str, str]], label: str) -> set[str]:
    return {one[label] for one in series if label in one}


def total(stack: PrometheusStack, expr: str) -> float:
    """The single value of ``expr`` (a ``sum(...)``), failing when there is none."""
    result = stack.prometheus.query(expr)
    assert len(result) == 1, f"{expr}: {result}\n{stack.diagnostics()}"
    return float(result[0]["value"][1])


def test_every_service_is_a_target_at_its_configured_port(
    stack: PrometheusStack,
) -> None:
    """The router, memory and tool servers at the settings' ports, both replicas from the
    targets file keel up wrote, labelled with their name and version; all of them up."""
    targets = stack.prometheus.active_targets()
    by_job: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for target in targets:
        by_job[target["labels"]["job"]].append(target)
    assert set(by_job) == JOBS, stack.diagnostics()
    assert all(t["health"] == "up" for t in targets), [t["lastError"] for t in targets]
    ports = stack.ports
    expected = {
        "router": {f"127.0.0.1:{ports.router}"},
        "memory": {f"127.0.0.1:{ports.memory}"},
        "tools": {f"127.0.0.1:{ports.tools}"},
        "agent": {f"127.0.0.1:{port}" for port in ports.replicas},
    }
    for job, addresses in expected.items():
        assert {t["labels"]["instance"] for t in by_job[job]} == addresses, by_job[job]
    replicas = {(t["labels"]["replica"], t["labels"]["app_version"]) for t in by_job["agent"]}
    assert replicas == {("replica-1", "v1"), ("replica-2", "v1")}
    up = stack.prometheus.query("up")
    assert {(s["metric"]["job"], s["value"][1]) for s in up} == {(job, "1") for job in JOBS}


def test_the_six_agent_metrics_arrive_with_their_labels(stack: PrometheusStack) -> None:
    """Tokens per model and type, tool calls per tool and status (on the replicas with the
    version, on the tool server without), context utilization, memory operations per
    operation and status, and the session histograms with one sample per ended session."""
    prometheus = stack.prometheus
    traffic = stack.traffic

    tokens = prometheus.series('agent_tokens_consumed_total{job="agent"}')
    assert tokens, stack.diagnostics()
    assert all(
        {"model", "type", "agent", "version", "replica", *TARGET_LABELS} <= set(s) for s in tokens
    )
    assert values(tokens, "model") == {PRIMARY_MODEL, BACKUP_MODEL}
    assert values(tokens, "type") == {"input", "output"}
    assert values(tokens, "version") == {"v1"}
    assert values(tokens, "agent") == {"default"}

    calls = prometheus.series('agent_tool_calls_total{job="agent"}')
    assert {"memory_store", "memory_search", "calculator"} <= values(calls, "tool"), calls
    assert values(calls, "version") == {"v1"}
    calculator = {s["status"] for s in calls if s["tool"] == "calculator"}
    assert calculator and "success" not in calculator, calls
    assert "success" in {s["status"] for s in calls if s["tool"] == "memory_store"}, calls
    served = prometheus.series('agent_tool_calls_total{job="tools"}')
    assert values(served, "tool") == {"memory_store", "memory_search"}, served
    assert not values(served, "version"), "the tool server serves every version: no label"

    utilization = prometheus.query('agent_context_utilization_ratio{job="agent"}')
    assert utilization, stack.diagnostics()
    for sample in utilization:
        assert {"agent", "version"} <= set(sample["metric"]), sample
        assert 0 < float(sample["value"][1]) <= 1, sample

    operations = prometheus.series('agent_memory_operations_total{job="memory"}')
    by_operation = defaultdict(set)
    for one in operations:
        by_operation[one["operation"]].add(one["status"])
    assert {"create_memory", *traffic.memory_operations} <= set(by_operation), by_operation
    assert by_operation["get_memory"] - {"ok"}, f"the failed read has its status: {by_operation}"
    created = total(stack, 'sum(agent_memory_operations_total{operation="create_memory"})')
    assert created == traffic.stored_memories

    for histogram in ("agent_session_duration_seconds", "agent_turns_per_session"):
        series = prometheus.series(f'{histogram}_bucket{{job="agent"}}')
        assert series and all({"agent", "le"} <= set(s) for s in series), series
        count = total(stack, f"sum({histogram}_count)")
        assert count == traffic.ended_sessions, f"{histogram}: {count}\n{stack.diagnostics()}"
    turns = total(stack, "sum(agent_turns_per_session_sum)")
    assert turns == traffic.turns_of_ended_sessions


def test_every_service_reports_request_rate_errors_and_duration(
    stack: PrometheusStack,
) -> None:
    """The replicas, memory and tool servers count requests per route template, method and
    status and time them; the router per version, route and status; the router counted
    every request the traffic sent it, with the status it answered."""
    prometheus = stack.prometheus
    for job in ("agent", "memory", "tools"):
        requests = prometheus.series(f'agent_http_requests_total{{job="{job}"}}')
        assert requests, f"{job}\n{stack.diagnostics()}"
        assert all({"route", "method", "status", *TARGET_LABELS} <= set(s) for s in requests)
        buckets = prometheus.series(f'agent_http_request_duration_seconds_bucket{{job="{job}"}}')
        assert buckets and all({"route", "method", "le"} <= set(s) for s in buckets), job
    agent = prometheus.series('agent_http_requests_total{job="agent"}')
    assert "/v1/sessions/{session_id}/messages" in values(agent, "route")
    # Route templates only: never a session id in a label.
    assert not any(
        session in route
        for session in stack.traffic.live_sessions
        for route in values(agent, "route")
    )
    sent = {str(status) for status in stack.traffic.statuses}
    assert {"200", "201", "404", "413", "422", "429", "503"} <= sent
    assert sent <= values(agent, "status"), values(agent, "status")

    routed = prometheus.series('agent_router_requests_total{job="router"}')
    assert all({"version", "route", "status"} <= set(s) for s in routed), routed
    assert values(routed, "status") == sent
    answered = total(stack, 'sum(agent_router_requests_total{job="router"})')
    assert answered == sum(stack.traffic.statuses.values())
    timed = total(stack, 'sum(agent_router_request_duration_seconds_count{job="router"})')
    assert timed == answered
    durations = prometheus.series('agent_router_request_duration_seconds_bucket{job="router"}')
    assert durations and all({"version", "route", "le"} <= set(s) for s in durations)
    errors = total(stack, 'sum(agent_router_requests_total{job="router", status=~"5.."})')
    assert errors == sum(n for status, n in stack.traffic.statuses.items() if status >= 500)


def test_no_target_label_renames_a_metric_label(stack: PrometheusStack) -> None:
    """The replicas' target labels (replica, app_version) leave the metrics' own
    ``version`` as it is: nothing was scraped as exported_*."""
    for label in ("version", "job", "instance", "replica", "app_version"):
        assert stack.prometheus.series(f'{{exported_{label}=~".+"}}') == []
    versioned = stack.prometheus.series('{job="agent", version="v1", app_version="v1"}')
    assert versioned, stack.diagnostics()


async def test_a_replica_started_while_keel_up_runs_is_scraped_until_it_stops(
    stack: PrometheusStack,
) -> None:
    """A replica of v2 started through keel up's control channel joins the targets file
    and Prometheus scrapes it without a reload; once stopped, it leaves both."""
    targets_file = replica_targets_path(stack.keel.data_dir)
    async with LocalDriver(stack.keel.data_dir / "control.sock") as driver:
        [replica] = await driver.start_replicas(ReplicaSpec(version="v2"), 1)
        try:
            listed = json.loads(targets_file.read_text())
            assert {"replica": replica.name, "app_version": "v2"} in [g["labels"] for g in listed]
            address = replica.url.removeprefix("http://")
            wait_for_target(stack, address, present=True)
            scraped = stack.prometheus.query(f'up{{instance="{address}"}}')
            assert [(s["metric"]["app_version"], s["value"][1]) for s in scraped] == [("v2", "1")]
        finally:
            await driver.stop_replica(replica.name, drain=True)
    assert replica.name not in targets_file.read_text()
    wait_for_target(stack, address, present=False)


def wait_for_target(stack: PrometheusStack, address: str, *, present: bool) -> None:
    """Until Prometheus has (or no longer has) ``address`` as an agent target that is up."""
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    while time.monotonic() < deadline:
        targets = stack.prometheus.active_targets()
        found = any(
            t["labels"]["instance"] == address
            and t["labels"]["job"] == "agent"
            and t["health"] == "up"
            for t in targets
        )
        if found == present:
            return
        time.sleep(0.2)
    pytest.fail(
        f"target {address} {'never appeared' if present else 'stayed'}\n{stack.diagnostics()}"
    )

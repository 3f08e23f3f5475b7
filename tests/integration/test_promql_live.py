"""Every PromQL expression of the dashboard and of the alerts, run against the live
Prometheus of the end-to-end stack (``prometheus_stack.py``) after its traffic.

Each expression parses; every dashboard target and every alert's signal returns data;
an alert's firing expression, which returns data only while the alert fires, selects
no series its signal lacks. The stack's Prometheus loads ``agent_alerts.yml`` as
``keel render alerts`` writes it and evaluates every rule without an error.
"""

from __future__ import annotations

import time
from collections.abc import Iterable

import pytest

from agentkeel.assets.alert_rules import alert_queries, alert_rules, render_alerts
from agentkeel.assets.dashboard import dashboard_queries
from agentkeel.assets.promql import Query
from agentkeel.config.settings import KeelSettings
from tests.integration.prometheus_stack import (  # noqa: F401 (the fixtures)
    SCRAPE_TIMEOUT_S,
    PrometheusStack,
    RulesFor,
    prometheus_stack,
    stack_overrides,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def stack_rules() -> RulesFor:
    """The stack's Prometheus loads the alerts as ``keel render alerts`` writes them."""

    def rules(settings: KeelSettings) -> str:
        return render_alerts(settings.alerts)

    return rules


@pytest.fixture(scope="module")
def stack(prometheus_stack: PrometheusStack) -> PrometheusStack:  # noqa: F811
    return prometheus_stack


def evaluate(stack: PrometheusStack, query: Query) -> tuple[str, str | None, int]:
    """``query`` for Prometheus, the error Prometheus gave (None: it parsed and ran) and
    how many series (or scalars) it returned."""
    expr = query.for_prometheus()
    if "$" in expr:
        return expr, "a Grafana variable is left that GRAFANA_DEFAULTS does not fill", 0
    body = stack.prometheus.raw_query(expr)
    if body.get("status") != "success":
        return expr, f"{body.get('errorType')}: {body.get('error')}", 0
    data = body["data"]
    found = len(data["result"]) if data["resultType"] in ("vector", "matrix") else 1
    return expr, None, found


def check_all(
    stack: PrometheusStack, queries: Iterable[Query], *, need_data: bool = True
) -> list[str]:
    """One line per query that fails to parse (or, with ``need_data``, returns nothing)."""
    problems = []
    for query in queries:
        expr, error, found = evaluate(stack, query)
        if error is not None:
            problems.append(f"{query.source}: {error}\n    {expr}")
        elif need_data and found == 0:
            problems.append(f"{query.source}: no data after the traffic\n    {expr}")
    return problems


def test_every_dashboard_target_parses_and_returns_data(stack: PrometheusStack) -> None:
    """Each panel of the four rows has something to draw once traffic has run."""
    queries = dashboard_queries(stack.settings)
    assert queries, "the dashboard has no panel targets"
    problems = check_all(stack, queries)
    assert not problems, "\n".join(problems) + f"\n{stack.diagnostics()}"


def test_every_alert_expression_parses_and_every_signal_returns_data(
    stack: PrometheusStack,
) -> None:
    """Each alert query parses; all but the firing conditions return data (a firing
    condition is empty unless its alert fires), and every rule's signal does."""
    rules = alert_rules(stack.settings.alerts)
    assert len(rules) == 5, [rule.name for rule in rules]
    firing = {rule.expr for rule in rules} - {rule.signal for rule in rules}
    queries = alert_queries(stack.settings.alerts)
    problems = check_all(stack, [q for q in queries if q.expr in firing], need_data=False)
    problems += check_all(stack, [q for q in queries if q.expr not in firing])
    problems += check_all(
        stack, [Query(f"alert {rule.name} signal", rule.signal) for rule in rules]
    )
    assert not problems, "\n".join(problems) + f"\n{stack.diagnostics()}"


def test_a_firing_condition_selects_only_series_of_its_signal(stack: PrometheusStack) -> None:
    """The firing expression is built on the signal: whatever it returns, the signal has."""
    for rule in alert_rules(stack.settings.alerts):
        signal = {
            _series(s) for s in stack.prometheus.query(Query("", rule.signal).for_prometheus())
        }
        fired = {_series(s) for s in stack.prometheus.query(Query("", rule.expr).for_prometheus())}
        assert fired <= signal, f"{rule.name}: {fired - signal}\n{rule.expr}"


def test_prometheus_evaluates_every_rule_without_an_error(stack: PrometheusStack) -> None:
    """The rule file loads with all five alerts, and each has been evaluated cleanly."""
    names = {rule.name for rule in alert_rules(stack.settings.alerts)}
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    while True:
        loaded = [
            rule
            for group in stack.prometheus.api("rules", type="alert")["groups"]
            for rule in group["rules"]
        ]
        evaluated = all(not rule["lastEvaluation"].startswith("0001-") for rule in loaded)
        if {rule["name"] for rule in loaded} == names and evaluated:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"rules loaded: {loaded}\n{stack.diagnostics()}")
        time.sleep(0.2)
    broken = [(rule["name"], rule["lastError"]) for rule in loaded if rule["health"] != "ok"]
    assert not broken, f"{broken}\n{stack.diagnostics()}"


def _series(sample: dict[str, object]) -> frozenset[tuple[str, str]]:
    metric = sample["metric"]
    assert isinstance(metric, dict)
    return frozenset((k, str(v)) for k, v in metric.items() if k != "__name__")

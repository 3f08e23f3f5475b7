"""The Grafana dashboard that `keel render grafana` writes: four rows in order with the
panels of the operations guide, a datasource and a version variable, every target on
the datasource variable, every family that has a version label filtered by it, every
expression listed by dashboard_queries() and accepted by promtool."""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry
from typer.testing import CliRunner

from agentkeel.assets.alert_rules import alert_rules
from agentkeel.assets.dashboard import dashboard_queries, render_dashboard
from agentkeel.assets.promql import GRAFANA_DEFAULTS, Query
from agentkeel.cli.main import app as keel
from agentkeel.config.alerts import AlertSettings
from agentkeel.config.durations import duration_seconds
from agentkeel.config.settings import KeelSettings
from agentkeel.memory.metrics import MemoryClientMetrics, MemoryMetrics
from agentkeel.router.metrics import RouterMetrics
from agentkeel.telemetry.metrics import (
    AgentMetrics,
    ModelMetrics,
    QuotaMetrics,
    ToolMetrics,
    ToolServerMetrics,
)

Panel = dict[str, Any]

ROWS = {
    "System Health": ["Uptime", "Request rate", "Error rate", "Latency percentiles"],
    "Agent Behavior": ["Token rate", "Tool-call patterns", "Context-utilization distribution"],
    "Memory Performance": ["Memory latency", "Read/write ratio", "Storage"],
    "Cost and Quotas": ["Hourly spend by model", "Per-user consumption", "Quota headroom"],
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
VERSION_MATCHER = 'version=~"$version"'
SELECTOR = re.compile(r"\b((?:agent|gen_ai)_[a-z_]+)(\{[^}]*\})?")


def dashboard(settings: KeelSettings | None = None) -> dict[str, Any]:
    board: dict[str, Any] = json.loads(render_dashboard(settings or KeelSettings()))
    return board


def rows_of(board: dict[str, Any]) -> list[tuple[Panel, list[Panel]]]:
    """Each row and its panels as Grafana reads them: a collapsed row holds its panels,
    an open row's panels follow it at the top level."""
    rows: list[tuple[Panel, list[Panel]]] = []
    for panel in board["panels"]:
        if panel["type"] == "row":
            rows.append((panel, list(panel.get("panels", []))))
        else:
            assert rows, f"panel {panel['title']!r} comes before the first row"
            rows[-1][1].append(panel)
    return rows


def all_panels(board: dict[str, Any]) -> Iterator[tuple[str, Panel]]:
    for row, panels in rows_of(board):
        for panel in panels:
            yield row["title"], panel


def exported_names() -> dict[str, tuple[str, ...]]:
    """Every sample name the services export -> its label names, read from the metric
    classes themselves (each on its own registry: some share names)."""
    names: dict[str, tuple[str, ...]] = {}
    builders: list[Callable[[CollectorRegistry], object]] = [
        AgentMetrics,
        ModelMetrics,
        QuotaMetrics,
        ToolMetrics,
        ToolServerMetrics,
        MemoryMetrics,
        lambda registry: MemoryClientMetrics(registry, version="v1"),
    ]
    for build in builders:
        registry = CollectorRegistry()
        build(registry)
        for name, collector in registry._names_to_collectors.items():
            labels = tuple(getattr(collector, "_labelnames", ()))
            names[name] = tuple(sorted({*names.get(name, ()), *labels}))
    # The router builds its request families at scrape time: record one request.
    registry = CollectorRegistry()
    RouterMetrics(registry).record("v1", "messages", 200, 0.01)
    for family in registry.collect():
        for sample in family.samples:
            names[sample.name] = tuple(sorted(sample.labels))
    return names


def test_the_json_loads_with_a_stable_uid_and_title() -> None:
    """The dashboard is one JSON document whose uid and title stay 'agentkeel', so an
    import or a provisioning run replaces the previous one instead of adding another."""
    board = dashboard()
    assert (board["uid"], board["title"]) == ("agentkeel", "agentkeel")
    assert render_dashboard(KeelSettings()) == render_dashboard(KeelSettings())


def test_four_rows_in_order_with_the_guides_panels() -> None:
    """System Health, Agent Behavior, Memory Performance, Cost and Quotas, in that order,
    each with exactly its listed panels; System Health is open, the others collapsed."""
    rows = rows_of(dashboard())
    assert [(row["title"], [p["title"] for p in panels]) for row, panels in rows] == list(
        ROWS.items()
    )
    assert [row["collapsed"] for row, _ in rows] == [False, True, True, True]
    for row, _ in rows:
        # Grafana strips panels held by an open row: only collapsed rows may hold any.
        assert bool(row["panels"]) == row["collapsed"]


def test_the_datasource_and_version_variables() -> None:
    """A Prometheus datasource variable, and a multi-select version variable with All
    from label_values(agent_turns_total, version), queried through that datasource."""
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    version = variables["version"]
    assert version["type"] == "query"
    assert version["query"] == "label_values(agent_turns_total, version)"
    assert version["datasource"] == DATASOURCE
    assert version["multi"] is True and version["includeAll"] is True


def test_every_panel_and_target_reads_the_datasource_variable() -> None:
    """No panel or target names a fixed datasource: each uses ${datasource}."""
    for _, panel in all_panels(dashboard()):
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, (panel["title"], target["expr"])


def test_every_target_is_listed_by_dashboard_queries() -> None:
    """dashboard_queries() returns each target's expression with its source, 'panel <row>
    / <title>', and nothing else: the live PromQL test runs exactly what Grafana runs."""
    targets = sorted(
        (f"panel {row} / {panel['title']}", target["expr"])
        for row, panel in all_panels(dashboard())
        for target in panel["targets"]
    )
    assert targets == sorted((q.source, q.expr) for q in dashboard_queries(KeelSettings()))


def test_every_metric_a_panel_reads_is_exported() -> None:
    """Each agent_* name in a panel's PromQL is a sample some service exports (a typo in
    a metric name would draw an empty panel, not an error)."""
    exported = exported_names()
    for query in dashboard_queries(KeelSettings()):
        for name, _ in SELECTOR.findall(query.expr):
            assert name in exported, (query.source, name)


def test_families_with_a_version_label_are_filtered_and_legended_by_version() -> None:
    """Every selector of a family that carries `version` has version=~"$version", and a
    target that selects by version shows it in its legend (or its panel is repeated per
    version), so canary and stable sit side by side."""
    exported = exported_names()
    versioned_targets = 0
    for _, panel in all_panels(dashboard()):
        for target in panel["targets"]:
            selectors = SELECTOR.findall(target["expr"])
            for name, matchers in selectors:
                if "version" in exported[name]:
                    assert VERSION_MATCHER in matchers, (panel["title"], target["expr"])
            if VERSION_MATCHER in target["expr"]:
                versioned_targets += 1
                by_version = "{{version}}" in target["legendFormat"]
                assert by_version or panel.get("repeat") == "version", panel["title"]
    assert versioned_targets >= 8


def test_the_context_heatmap_is_repeated_per_version() -> None:
    """The context-utilization distribution is a heatmap of histogram buckets, one copy
    per selected version, side by side."""
    panels = {panel["title"]: panel for _, panel in all_panels(dashboard())}
    context = panels["Context-utilization distribution"]
    assert context["type"] == "heatmap"
    assert (context["repeat"], context["repeatDirection"]) == ("version", "h")
    assert [t["format"] for t in context["targets"]] == ["heatmap"]
    assert "_bucket" in context["targets"][0]["expr"]


def test_units_and_thresholds() -> None:
    """Every panel has a unit; the error-rate and headroom panels have threshold steps
    that rise from green to red as errors grow and fall to red as headroom shrinks."""
    panels = {panel["title"]: panel for _, panel in all_panels(dashboard())}
    for title, panel in panels.items():
        assert panel["fieldConfig"]["defaults"].get("unit"), title
    units = {title: panels[title]["fieldConfig"]["defaults"]["unit"] for title in panels}
    assert units["Request rate"] == "reqps"
    assert units["Error rate"] == "percentunit"
    assert units["Latency percentiles"] == "s"
    assert units["Storage"] == "bytes"
    assert units["Hourly spend by model"] == "currencyUSD"

    def steps(title: str) -> list[tuple[float | None, str]]:
        config = panels[title]["fieldConfig"]["defaults"]["thresholds"]
        return [(step["value"], step["color"]) for step in config["steps"]]

    errors = steps("Error rate")
    assert errors[0] == (None, "green") and errors[-1][1] == "red"
    rising = [float(value or 0) for value, _ in errors[1:]]
    assert rising == sorted(rising) and all(rising)
    headroom = steps("Quota headroom")
    assert headroom[0] == (None, "red") and headroom[-1][1] == "green"
    assert panels["Quota headroom"]["type"] == "bargauge"


def test_the_daily_quota_line_follows_the_settings() -> None:
    """The per-user consumption panel draws quotas.user_daily_tokens as its threshold
    line, and none when there is no daily quota."""

    def consumption(settings: KeelSettings) -> Panel:
        panels = {panel["title"]: panel for _, panel in all_panels(dashboard(settings))}
        return panels["Per-user consumption"]

    limited = consumption(KeelSettings(quotas={"user_daily_tokens": 123_456}))
    steps = limited["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert steps[-1] == {"value": 123_456, "color": "red"}
    unlimited = consumption(KeelSettings(quotas={"user_daily_tokens": 0}))
    assert "thresholds" not in unlimited["fieldConfig"]["defaults"]
    assert "agent_quota_consumed_tokens_bucket" in limited["targets"][0]["expr"]
    assert "keel usage top" in limited["description"]


def test_panel_ids_are_unique() -> None:
    """Grafana keys panels by id: every row and panel has its own."""
    board = dashboard()
    ids = [row["id"] for row, _ in rows_of(board)]
    ids += [panel["id"] for _, panel in all_panels(board)]
    assert len(ids) == len(set(ids)) and 0 not in ids


def test_promtool_accepts_every_expression(promtool: str, tmp_path: Path) -> None:
    """Each expression, with Grafana's variables replaced as the live test does, parses:
    promtool checks them as the expressions of recording rules."""
    queries = dashboard_queries(KeelSettings())
    rules = [
        {"record": f"agentkeel:dashboard_check:{index}", "expr": query.for_prometheus()}
        for index, query in enumerate(queries)
    ]
    for rule in rules:
        assert "$" not in rule["expr"], rule["expr"]
    path = tmp_path / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(rules)} rules found" in result.stdout


TURN_RATES = {"ok": 9.0, "agent_error": 1.0, "draining": 5.0, "rate_limited": 5.0}
"""Turns per second by status: server-side failures, and statuses that are the caller's
doing (rate_limited) or the router's retry (draining)."""


@pytest.mark.parametrize(
    "ignored",
    [AlertSettings().error_rate.ignored_statuses, ["draining"]],
    ids=["default ignored statuses", "only draining ignored"],
)
def test_the_failed_turn_share_is_what_the_error_rate_alert_measures(
    promtool: str, tmp_path: Path, ignored: list[str]
) -> None:
    """On the same series, the Error rate panel's failed-turn share and
    AgentErrorRateSpike's signal read the same value: failed turns out of turns, both
    without alerts.error_rate.ignored_statuses (promtool evaluates the two)."""
    settings = KeelSettings(alerts={"error_rate": {"ignored_statuses": ignored}})
    panels = {panel["title"]: panel for _, panel in all_panels(dashboard(settings))}
    [panel_expr] = [
        target["expr"]
        for target in panels["Error rate"]["targets"]
        if target["legendFormat"].startswith("failed turns")
    ]
    [alert] = [rule for rule in alert_rules(settings.alerts) if rule.name == "AgentErrorRateSpike"]
    window = settings.alerts.window_of(settings.alerts.error_rate)
    panel_query = Query("panel", panel_expr).for_prometheus(
        {**GRAFANA_DEFAULTS, "$__rate_interval": window}
    )
    served = {status: rate for status, rate in TURN_RATES.items() if status not in ignored}
    expected = sum(rate for status, rate in served.items() if status != "ok") / sum(served.values())
    labels = {"agent": "default", "version": "v1"}
    interval_s = 15
    series = [
        {
            "series": _series_text("agent_turns_total", {**labels, "status": status}),
            "values": f"0+{rate * interval_s:g}x40",
        }
        for status, rate in TURN_RATES.items()
    ]
    eval_time = f"{2 * duration_seconds(window):g}s"
    tests = {
        "rule_files": [],
        "evaluation_interval": f"{interval_s}s",
        "tests": [
            {
                "interval": f"{interval_s}s",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": alert.signal,
                        "eval_time": eval_time,
                        "exp_samples": [{"labels": _series_text("", labels), "value": expected}],
                    },
                    {
                        "expr": panel_query,
                        "eval_time": eval_time,
                        "exp_samples": [
                            {"labels": _series_text("", {"version": "v1"}), "value": expected}
                        ],
                    },
                ],
            }
        ],
    }
    path = tmp_path / "failed_turns_test.yml"
    path.write_text(yaml.safe_dump(tests, sort_keys=False))
    result = subprocess.run(
        [promtool, "test", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _series_text(metric: str, labels: dict[str, str]) -> str:
    return metric + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def test_promtool_refuses_a_broken_expression(promtool: str, tmp_path: Path) -> None:
    """The check above can fail: promtool rejects an expression that does not parse."""
    path = tmp_path / "broken.yml"
    rule = {"record": "agentkeel:broken", "expr": "sum by (version (rate(x[1m]))"}
    path.write_text(yaml.safe_dump({"groups": [{"name": "broken", "rules": [rule]}]}))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert result.returncode != 0


@pytest.mark.parametrize("out", ["file", "-"])
def test_keel_render_grafana_writes_the_dashboard(tmp_path: Path, out: str) -> None:
    """`keel render grafana` writes (or prints with --out -) the same JSON."""
    config = tmp_path / "keel.yaml"
    config.write_text("quotas:\n  user_daily_tokens: 777\n")
    target = tmp_path / "agent_dashboard.json"
    result = CliRunner().invoke(
        keel,
        [
            "--config",
            str(config),
            "render",
            "grafana",
            "--out",
            str(target) if out == "file" else "-",
        ],
    )
    assert result.exit_code == 0, result.output
    text = target.read_text() if out == "file" else result.output
    expected = render_dashboard(KeelSettings(quotas={"user_daily_tokens": 777}))
    assert json.loads(text) == json.loads(expected)

"""The Grafana dashboard: four rows (System Health, Agent Behavior, Memory
Performance, Cost and Quotas) and a ``version`` variable, built with
grafana-foundation-sdk.

The panels are declared once, as plain ``PanelSpec`` data (``dashboard_rows``);
``render_dashboard`` turns them into the SDK's builders and ``dashboard_queries``
lists their PromQL, so the JSON and the live PromQL test read the same
expressions.

Every family that carries ``version`` is selected with ``version=~"$version"`` and
legended by version, so a canary and the stable version are drawn side by side
(the context heatmap is repeated per version instead). Panels whose error series
may not exist yet (``status=~"5.."`` before the first failure) use
``(errors or total * 0) / total``, so they show 0 rather than no data.

>>> json_text = render_dashboard(settings)        # uid "agentkeel"
>>> [q.source for q in dashboard_queries(settings)][0]
'panel System Health / Uptime'
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, TypeAlias

from grafana_foundation_sdk.builders import bargauge, heatmap, prometheus, stat, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as dashboard_builders
from grafana_foundation_sdk.cog.builder import Builder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.variants import Dataquery
from grafana_foundation_sdk.models import common as common_models
from grafana_foundation_sdk.models import dashboard as dashboard_models
from grafana_foundation_sdk.models import heatmap as heatmap_models
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from agentkeel.assets.promql import (
    Query,
    failed_turns,
    quantile,
    selector,
    served_turns,
    share,
    sum_rate,
)
from agentkeel.config.settings import KeelSettings

__all__ = [
    "DASHBOARD_TITLE",
    "DASHBOARD_UID",
    "DATASOURCE_VARIABLE",
    "VERSION_VARIABLE",
    "PanelSpec",
    "RowSpec",
    "Target",
    "dashboard_queries",
    "dashboard_rows",
    "render_dashboard",
]

DASHBOARD_UID = "agentkeel"
DASHBOARD_TITLE = "agentkeel"
DATASOURCE_VARIABLE = "datasource"
VERSION_VARIABLE = "version"

ERROR_RATE_WARN = 0.01
ERROR_RATE_CRITICAL = 0.05
HEADROOM_LOW = 0.25
HEADROOM_CRITICAL = 0.10

PanelKind = Literal["timeseries", "stat", "heatmap", "bargauge"]
Step = tuple[float | None, str]
"""One threshold step: from this value (``None``: from minus infinity) on, this colour."""

_VERSION = f'version=~"${VERSION_VARIABLE}"'
_RATE = "$__rate_interval"
_RANGE = "$__range"
_READS = "get_memory|search_memory"
_WRITES = "create_memory|update_memory|delete_memory|batch_memory"
_DATASOURCE = dashboard_models.DataSourceRef(
    type_val="prometheus", uid=f"${{{DATASOURCE_VARIABLE}}}"
)
_WIDTH = 24  # Grafana's grid


@dataclass(frozen=True, slots=True)
class Target:
    """One PromQL target of a panel and its legend (Grafana's ``{{label}}`` template)."""

    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class PanelSpec:
    """One panel: what it draws and how. ``instant`` targets are evaluated once over the
    dashboard's range (stat and bar gauge); ``repeat_by_version`` draws one copy per
    selected version, side by side."""

    title: str
    kind: PanelKind
    unit: str
    description: str
    targets: tuple[Target, ...]
    width: int = 12
    thresholds: tuple[Step, ...] = ()
    instant: bool = False
    repeat_by_version: bool = False
    stacked: bool = False
    axis_label: str = ""


@dataclass(frozen=True, slots=True)
class RowSpec:
    """One row of the dashboard; a collapsed row holds its panels until it is opened
    (and Grafana runs their queries only then)."""

    title: str
    collapsed: bool
    panels: tuple[PanelSpec, ...]


# -- PromQL -------------------------------------------------------------------------------


def _rate(metric: str, by: Sequence[str], *matchers: str, window: str = _RATE) -> str:
    """The summed rate of ``metric{matchers}`` per ``by`` over Grafana's rate interval."""
    return sum_rate(selector(metric, *matchers), by, window)


def _quantile(
    q: float, histogram: str, by: Sequence[str], *matchers: str, window: str = _RATE
) -> str:
    return quantile(q, selector(f"{histogram}_bucket", *matchers), by, window)


def _percentiles(
    histogram: str, by: Sequence[str], *matchers: str, legend: str
) -> tuple[Target, ...]:
    return tuple(
        Target(_quantile(q, histogram, by, *matchers), f"p{round(q * 100)} {legend}")
        for q in (0.5, 0.95, 0.99)
    )


# -- rows ---------------------------------------------------------------------------------


def _system_health(settings: KeelSettings) -> RowSpec:
    requests = "agent_router_requests_total"
    by = ("version",)
    total = _rate(requests, by, _VERSION)
    failed = _rate(requests, by, _VERSION, 'status=~"5.."')
    # The turns AgentErrorRateSpike judges, with the same selectors: the caller's
    # statuses and draining count neither as failed nor as served.
    ignored = settings.alerts.error_rate.ignored_statuses
    turns = sum_rate(served_turns(ignored, _VERSION), by, _RATE)
    failed_turns_rate = sum_rate(failed_turns(ignored, _VERSION), by, _RATE)
    return RowSpec(
        title="System Health",
        collapsed=False,
        panels=(
            PanelSpec(
                title="Uptime",
                kind="stat",
                unit="percentunit",
                description="Share of Prometheus' scrapes of each job that succeeded over the "
                "selected range (up == 1): the services' availability as Prometheus saw it.",
                targets=(Target(f"avg by (job) (avg_over_time(up[{_RANGE}]))", "{{job}}"),),
                thresholds=((None, "red"), (0.95, "orange"), (0.99, "green")),
                instant=True,
            ),
            PanelSpec(
                title="Request rate",
                kind="timeseries",
                unit="reqps",
                description="/v1 requests the router answered per second, by the version "
                "that served them.",
                targets=(Target(total, "{{version}}"),),
            ),
            PanelSpec(
                title="Error rate",
                kind="timeseries",
                unit="percentunit",
                description="Share of the router's /v1 answers that were 5xx, and share of "
                "turns that failed through the service's own fault, as AgentErrorRateSpike "
                "counts them (statuses in alerts.error_rate.ignored_statuses, the caller's "
                "and draining, are left out), by version.",
                targets=(
                    Target(share(failed, total), "HTTP 5xx {{version}}"),
                    Target(share(failed_turns_rate, turns), "failed turns {{version}}"),
                ),
                thresholds=(
                    (None, "green"),
                    (ERROR_RATE_WARN, "orange"),
                    (ERROR_RATE_CRITICAL, "red"),
                ),
            ),
            PanelSpec(
                title="Latency percentiles",
                kind="timeseries",
                unit="s",
                description="p50, p95 and p99 of the router's /v1 request duration (last "
                "request byte to last response byte), by version.",
                targets=_percentiles(
                    "agent_router_request_duration_seconds",
                    ("version",),
                    _VERSION,
                    legend="{{version}}",
                ),
            ),
        ),
    )


def _agent_behavior() -> RowSpec:
    return RowSpec(
        title="Agent Behavior",
        collapsed=True,
        panels=(
            PanelSpec(
                title="Token rate",
                kind="timeseries",
                unit="short",
                axis_label="tokens/s",
                description="Tokens consumed per second by type (input, output) and version.",
                targets=(
                    Target(
                        _rate("agent_tokens_consumed_total", ("version", "type"), _VERSION),
                        "{{type}} {{version}}",
                    ),
                ),
            ),
            PanelSpec(
                title="Tool-call patterns",
                kind="timeseries",
                unit="ops",
                stacked=True,
                description="Tool calls per second by tool, status (success, failure, "
                "timeout, rejected) and the version that made them (the tool server's own "
                "count, which has no version, is left out).",
                targets=(
                    Target(
                        _rate(
                            "agent_tool_calls_total",
                            ("version", "tool", "status"),
                            _VERSION,
                            'version!=""',
                        ),
                        "{{tool}} {{status}} {{version}}",
                    ),
                ),
            ),
            PanelSpec(
                title="Context-utilization distribution",
                kind="heatmap",
                unit="percentunit",
                width=_WIDTH // 2,
                repeat_by_version=True,
                description="Tokens in context divided by the model's context window at "
                "each model call: one heatmap per selected version.",
                targets=(
                    Target(
                        "sum by (le) (increase(agent_model_context_utilization_ratio_bucket"
                        f"{{{_VERSION}}}[{_RATE}]))",
                        "{{le}}",
                    ),
                ),
            ),
        ),
    )


def _memory_performance() -> RowSpec:
    operations = "agent_memory_operations_total"
    counted = f'operation=~"{_READS}|{_WRITES}"'
    total = _rate(operations, (), counted)
    reads = _rate(operations, (), f'operation=~"{_READS}"')
    writes = _rate(operations, (), f'operation=~"{_WRITES}"')
    duration = "agent_memory_operation_duration_seconds"
    return RowSpec(
        title="Memory Performance",
        collapsed=True,
        panels=(
            PanelSpec(
                title="Memory latency",
                kind="timeseries",
                unit="s",
                width=_WIDTH // 3,
                description="p95 of the memory server's operation duration by operation, "
                "and p99 over every operation.",
                targets=(
                    Target(_quantile(0.95, duration, ("operation",)), "p95 {{operation}}"),
                    Target(_quantile(0.99, duration, ()), "p99 all"),
                ),
            ),
            PanelSpec(
                title="Read/write ratio",
                kind="timeseries",
                unit="percentunit",
                width=_WIDTH // 3,
                stacked=True,
                description=f"Shares of reads ({_READS}) and writes ({_WRITES}) among the "
                "memory server's operations; 0.8 reads is four reads per write.",
                targets=(
                    Target(share(reads, total), "reads"),
                    Target(share(writes, total), "writes"),
                ),
            ),
            PanelSpec(
                title="Storage",
                kind="timeseries",
                unit="bytes",
                width=_WIDTH // 3,
                description="On-disk size of the memory store.",
                targets=(
                    Target("max by (instance) (agent_memory_store_size_bytes)", "{{instance}}"),
                ),
            ),
        ),
    )


def _cost_and_quotas(settings: KeelSettings) -> RowSpec:
    daily = settings.quotas.user_daily_tokens
    consumption = "agent_quota_consumed_tokens"
    user_day = ('scope="user"', 'period="day"')
    headroom = "agent_quota_headroom_ratio"
    return RowSpec(
        title="Cost and Quotas",
        collapsed=True,
        panels=(
            PanelSpec(
                title="Hourly spend by model",
                kind="timeseries",
                unit="currencyUSD",
                width=_WIDTH // 3,
                stacked=True,
                description="Platform spend in dollars per hour at the current rate, by model "
                "and version (calls on a user's or organization's own key cost nothing).",
                targets=(
                    Target(
                        f"{_rate('agent_spend_dollars_total', ('model', 'version'), _VERSION)}"
                        " * 3600",
                        "{{model}} {{version}}",
                    ),
                ),
            ),
            PanelSpec(
                title="Per-user consumption",
                kind="timeseries",
                unit="short",
                axis_label="tokens today",
                width=_WIDTH // 3,
                description="The distribution of users' consumption: tokens each calling "
                "user has used or holds in today's quota (UTC), at each reservation, as "
                "p50, p90 and p99 (metrics carry no user ids; `keel usage top` names the "
                "users). The threshold line is quotas.user_daily_tokens.",
                targets=tuple(
                    Target(_quantile(q, consumption, (), *user_day), f"p{round(q * 100)}")
                    for q in (0.5, 0.9, 0.99)
                ),
                thresholds=((None, "green"), (float(daily), "red")) if daily > 0 else (),
            ),
            PanelSpec(
                title="Quota headroom",
                kind="bargauge",
                unit="percentunit",
                width=_WIDTH // 3,
                instant=True,
                description="The tenth percentile of the quota left after a reservation over "
                "the selected range, by scope (user, organization) and period (day, month): "
                "one reservation in ten had less room than this.",
                targets=(
                    Target(
                        _quantile(0.1, headroom, ("scope", "period"), window=_RANGE),
                        "{{scope}} {{period}}",
                    ),
                ),
                thresholds=(
                    (None, "red"),
                    (HEADROOM_CRITICAL, "orange"),
                    (HEADROOM_LOW, "green"),
                ),
            ),
        ),
    )


def dashboard_rows(settings: KeelSettings) -> tuple[RowSpec, ...]:
    """The four rows in order, with their panels (``settings`` gives the daily quota line)."""
    return (
        _system_health(settings),
        _agent_behavior(),
        _memory_performance(),
        _cost_and_quotas(settings),
    )


# -- Grafana ------------------------------------------------------------------------------

_PanelBuilder: TypeAlias = timeseries.Panel | stat.Panel | heatmap.Panel | bargauge.Panel


def _targets(spec: PanelSpec) -> list[Builder[Dataquery]]:
    built: list[Builder[Dataquery]] = []
    for index, target in enumerate(spec.targets):
        query = (
            prometheus.Dataquery()
            .expr(target.expr)
            .legend_format(target.legend)
            .ref_id(chr(ord("A") + index))
            .datasource(_DATASOURCE)
        )
        if spec.kind == "heatmap":
            query = query.format(PromQueryFormat.HEATMAP)
        built.append(query.instant() if spec.instant else query.range())
    return built


def _thresholds(steps: Sequence[Step]) -> dashboard_builders.ThresholdsConfig:
    return (
        dashboard_builders.ThresholdsConfig()
        .mode(dashboard_models.ThresholdsMode.ABSOLUTE)
        .steps([dashboard_models.Threshold(value=value, color=color) for value, color in steps])
    )


def _reduce_last() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False)


def _panel_of_kind(spec: PanelSpec) -> _PanelBuilder:
    if spec.kind == "stat":
        return (
            stat.Panel()
            .reduce_options(_reduce_last())
            .color_mode(common_models.BigValueColorMode.BACKGROUND)
            .graph_mode(common_models.BigValueGraphMode.NONE)
        )
    if spec.kind == "bargauge":
        return (
            bargauge.Panel()
            .reduce_options(_reduce_last())
            .display_mode(common_models.BarGaugeDisplayMode.GRADIENT)
            .orientation(common_models.VizOrientation.HORIZONTAL)
            .min(0)
            .max(1)
        )
    if spec.kind == "heatmap":
        return (
            heatmap.Panel()
            .calculate(False)
            .y_axis(heatmap.YAxisConfig().unit(spec.unit))
            .color(
                heatmap.HeatmapColorOptions()
                .mode(heatmap_models.HeatmapColorMode.SCHEME)
                .scheme("Oranges")
                .scale(heatmap_models.HeatmapColorScale.EXPONENTIAL)
                .exponent(0.5)
                .steps(64)
            )
            .rows_frame(heatmap.RowsHeatmapOptions().layout(common_models.HeatmapCellLayout.LE))
            .cell_values(heatmap.CellValues().unit("short"))
            .show_tooltip()
            .show_y_histogram()
        )
    panel = (
        timeseries.Panel()
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common_models.LegendDisplayMode.TABLE)
            .placement(common_models.LegendPlacement.BOTTOM)
            .show_legend(True)
            .calcs(["mean", "max", "lastNotNull"])
        )
        .tooltip(
            common_builders.VizTooltipOptions()
            .mode(common_models.TooltipDisplayMode.MULTI)
            .sort(common_models.SortOrder.DESCENDING)
        )
        .fill_opacity(10)
        .axis_soft_min(0)
    )
    if spec.axis_label:
        panel = panel.axis_label(spec.axis_label)
    if spec.stacked:
        panel = panel.stacking(
            common_builders.StackingConfig().mode(common_models.StackingMode.NORMAL)
        )
    if spec.thresholds:
        panel = panel.thresholds_style(
            common_builders.GraphThresholdsStyleConfig().mode(
                common_models.GraphTresholdsStyleMode.LINE
            )
        )
    return panel


def _panel(spec: PanelSpec, panel_id: int) -> _PanelBuilder:
    panel = (
        _panel_of_kind(spec)
        .id(panel_id)
        .title(spec.title)
        .description(spec.description)
        .datasource(_DATASOURCE)
        .unit(spec.unit)
        .span(spec.width)
        .height(8)
        .targets(_targets(spec))
    )
    if spec.thresholds:
        panel = panel.thresholds(_thresholds(spec.thresholds))
    if spec.repeat_by_version:
        panel = panel.repeat(VERSION_VARIABLE).repeat_direction("h")
    return panel


def _variables() -> list[Builder[dashboard_models.VariableModel]]:
    every = dashboard_models.VariableOption(selected=True, text="All", value="$__all")
    return [
        dashboard_builders.DatasourceVariable(DATASOURCE_VARIABLE)
        .label("Data source")
        .type("prometheus"),
        dashboard_builders.QueryVariable(VERSION_VARIABLE)
        .label("Version")
        .description("Agent versions to compare (canary and stable side by side).")
        .datasource(_DATASOURCE)
        .query("label_values(agent_turns_total, version)")
        .refresh(dashboard_models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(dashboard_models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .current(every),
    ]


def _dashboard(settings: KeelSettings) -> dashboard_builders.Dashboard:
    board = (
        dashboard_builders.Dashboard(DASHBOARD_TITLE)
        .uid(DASHBOARD_UID)
        .description(
            "agentkeel in production: system health, agent behaviour, memory and cost, "
            "per version (keel render grafana)."
        )
        .tags(["agentkeel"])
        .time("now-6h", "now")
        .timezone("browser")
        .refresh("30s")
        .tooltip(dashboard_models.DashboardCursorSync.CROSSHAIR)
        .variables(_variables())
    )
    panel_id = 0
    for row in dashboard_rows(settings):
        panel_id += 1
        row_builder = dashboard_builders.Row(row.title).id(panel_id).collapsed(row.collapsed)
        panels = []
        for spec in row.panels:
            panel_id += 1
            panels.append(_panel(spec, panel_id))
        if row.collapsed:
            # A collapsed row carries its panels; Grafana lays them out when it is opened.
            for panel in panels:
                row_builder = row_builder.with_panel(panel)
            board = board.with_row(row_builder)
        else:
            board = board.with_row(row_builder)
            for panel in panels:
                board = board.with_panel(panel)
    return board


def render_dashboard(settings: KeelSettings) -> str:
    """The dashboard JSON, ready to import or provision."""
    model = _dashboard(settings).build()
    return JSONEncoder(sort_keys=True, indent=2).encode(model) + "\n"


def dashboard_queries(settings: KeelSettings) -> list[Query]:
    """Every panel target's expression, for the live PromQL test."""
    return [
        Query(f"panel {row.title} / {panel.title}", target.expr)
        for row in dashboard_rows(settings)
        for panel in row.panels
        for target in panel.targets
    ]

"""The Grafana dashboard: four rows (System Health, Agent Behavior, Memory
Performance, Cost and Quotas) and a ``version`` variable, built with
grafana-foundation-sdk."""

from __future__ import annotations

from agentkeel.assets.promql import Query
from agentkeel.config.settings import KeelSettings


def render_dashboard(settings: KeelSettings) -> str:
    """The dashboard JSON, ready to import or provision."""
    raise NotImplementedError


def dashboard_queries(settings: KeelSettings) -> list[Query]:
    """Every panel target's expression, for the live PromQL test."""
    raise NotImplementedError

"""The five alerts (``agent_alerts.yml``), their thresholds from ``alerts:`` settings."""

from __future__ import annotations

from dataclasses import dataclass

from agentkeel.assets.promql import Query
from agentkeel.config.alerts import AlertSettings


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One alert: ``signal`` is the measured value (PromQL), ``expr`` the firing condition
    built on it."""

    name: str
    signal: str
    expr: str
    for_: str
    severity: str
    summary: str
    description: str
    runbook_url: str


def alert_rules(settings: AlertSettings) -> list[AlertRule]:
    """The five alerts with ``settings``' thresholds."""
    raise NotImplementedError


def render_alerts(settings: AlertSettings) -> str:
    """``agent_alerts.yml``: one Prometheus rule group with the five alerts."""
    raise NotImplementedError


def alert_queries(settings: AlertSettings) -> list[Query]:
    """Each alert's signal and its firing expression, for the live PromQL test."""
    raise NotImplementedError

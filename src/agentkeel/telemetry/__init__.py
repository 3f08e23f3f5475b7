"""Metrics, JSON logs, correlation ids and the HTTP middleware every service shares."""

from agentkeel.telemetry.correlation import (
    HEADER as CORRELATION_HEADER,
)
from agentkeel.telemetry.correlation import (
    get_correlation_id,
    new_correlation_id,
    set_correlation_id,
)
from agentkeel.telemetry.http import make_async_client
from agentkeel.telemetry.logging import JsonFormatter, configure_logging
from agentkeel.telemetry.metrics import AgentMetrics, HttpMetrics, ModelMetrics
from agentkeel.telemetry.middleware import CorrelationMiddleware, HttpMetricsMiddleware

__all__ = [
    "CORRELATION_HEADER",
    "AgentMetrics",
    "CorrelationMiddleware",
    "HttpMetrics",
    "HttpMetricsMiddleware",
    "JsonFormatter",
    "ModelMetrics",
    "configure_logging",
    "get_correlation_id",
    "make_async_client",
    "new_correlation_id",
    "set_correlation_id",
]

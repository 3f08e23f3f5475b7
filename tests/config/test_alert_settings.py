"""``alerts:`` settings: per-alert sections laid over their own defaults, and bad values
refused with the key named."""

from __future__ import annotations

import pytest

from agentkeel.config.alerts import AlertSettings
from agentkeel.config.durations import duration_seconds
from agentkeel.config.layers import load_settings
from agentkeel.errors import ConfigError


def test_a_partial_section_keeps_the_alerts_other_defaults() -> None:
    """Setting one threshold leaves that alert's for, minimum and severity as they were."""
    settings = load_settings(
        overrides={"alerts": {"error_rate": {"threshold": 0.1}}}, environ={}
    ).settings.alerts
    assert settings.error_rate.threshold == 0.1
    assert settings.error_rate.for_duration == AlertSettings().error_rate.for_duration
    assert settings.error_rate.severity == "critical"
    assert settings.session_duration.window == "1h"


def test_environment_variables_reach_an_alert() -> None:
    """KEEL_ALERTS__<ALERT>__<KEY> sets one value, as for every other section."""
    loaded = load_settings(environ={"KEEL_ALERTS__MEMORY_LATENCY__THRESHOLD_S": "0.25"})
    assert loaded.settings.alerts.memory_latency.threshold_s == 0.25
    assert loaded.source_of("alerts.memory_latency.threshold_s") == "env"


def test_an_alert_without_a_window_of_its_own_uses_alerts_window() -> None:
    settings = AlertSettings.model_validate({"window": "10m"})
    assert settings.window_of(settings.error_rate) == "10m"
    assert settings.window_of(settings.session_duration) == "1h"


@pytest.mark.parametrize(
    ("values", "key", "hint"),
    [
        ({"error_rate": {"threshold": 0}}, "alerts.error_rate.threshold", "above 0"),
        ({"model_timeouts": {"threshold": 1.5}}, "alerts.model_timeouts.threshold", "at most 1"),
        (
            {"context_exhaustion": {"for_duration": "5 min"}},
            "alerts.context_exhaustion.for_duration",
            "like 30s, 5m",
        ),
        ({"window": "0s"}, "alerts.window", "longer than 0"),
        (
            {"session_duration": {"window": "1 hour"}},
            "alerts.session_duration.window",
            "Prometheus duration",
        ),
        (
            {"memory_latency": {"threshold_s": -1}},
            "alerts.memory_latency.threshold_s",
            "greater than 0",
        ),
        ({"memory_latency": {"severity": "page"}}, "alerts.memory_latency.severity", "critical"),
        (
            {"error_rate": {"min_rps": -0.1}},
            "alerts.error_rate.min_rps",
            "greater than or equal to 0",
        ),
        (
            {"error_rate": {"ignored_statuses": ["ok|.*"]}},
            "alerts.error_rate.ignored_statuses",
            "error codes",
        ),
        ({"labels": {"severity": "low"}}, "alerts.labels", "other than"),
        ({"quantile": 1}, "alerts.quantile", "less than 1"),
        ({"error_rate": {"threshhold": 0.1}}, "alerts.error_rate.threshhold", "Extra inputs"),
    ],
)
def test_bad_values_are_refused_naming_the_key(
    values: dict[str, object], key: str, hint: str
) -> None:
    """A bad threshold, duration, severity or label is a ConfigError that names the key
    and says what a good value looks like."""
    with pytest.raises(ConfigError) as caught:
        load_settings(overrides={"alerts": values}, environ={})
    assert key in caught.value.message
    assert hint in caught.value.message


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("0", 0),
        ("0s", 0),
        ("90s", 90),
        ("5m", 300),
        ("1h30m", 5400),
        ("250ms", 0.25),
        ("1d", 86400),
    ],
)
def test_prometheus_durations_in_seconds(text: str, seconds: float) -> None:
    assert duration_seconds(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "5 m", "m", "1.5h", "5m1h", "-1m"])
def test_text_that_is_no_prometheus_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a Prometheus duration"):
        duration_seconds(text)

"""The ``sessions`` settings section: defaults, layers and bad values."""

from __future__ import annotations

import pytest

from agentkeel.config.layers import load_settings
from agentkeel.errors import ConfigError


def test_session_defaults_are_thirty_minutes_idle_and_thirty_days_retention() -> None:
    """Idle timeout 1800 s, retention 30 days (in seconds too), sweeps every minute."""
    sessions = load_settings(layers=[]).settings.sessions
    assert sessions.idle_timeout_s == 1800
    assert sessions.retention_days == 30
    assert sessions.retention_s == 30 * 86_400
    assert sessions.sweep_interval_s == 60


def test_session_settings_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """KEEL_SESSIONS__IDLE_TIMEOUT_S sets sessions.idle_timeout_s."""
    monkeypatch.setenv("KEEL_SESSIONS__IDLE_TIMEOUT_S", "600")
    assert load_settings().settings.sessions.idle_timeout_s == 600


def test_a_bad_session_setting_names_the_key() -> None:
    """A negative timeout or a zero retention is refused naming the key."""
    with pytest.raises(ConfigError, match="idle_timeout_s"):
        load_settings(layers=[], overrides={"sessions": {"idle_timeout_s": -1}})
    with pytest.raises(ConfigError, match="retention_days"):
        load_settings(layers=[], overrides={"sessions": {"retention_days": 0}})

"""The ``logging:`` settings: retention per category, service names, where files go."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from agentkeel.config.layers import load_settings
from agentkeel.config.logs import DEFAULT_RETENTION_DAYS, Category, LoggingSettings
from agentkeel.errors import ConfigError
from agentkeel.telemetry import log_categories


def test_the_categories_are_declared_once_each_with_its_default_retention() -> None:
    """The enum the log lines use is the one the settings validate against, and every
    category, and nothing else, has a default."""
    assert log_categories.Category is Category
    assert list(DEFAULT_RETENTION_DAYS) == list(log_categories.CATEGORIES)
    assert set(LoggingSettings().retention_days) == set(Category)


def test_setting_one_category_keeps_the_others_defaults() -> None:
    """retention_days merges with the defaults: changing reasoning_trace leaves audit at 365."""
    settings = LoggingSettings(retention_days={"reasoning_trace": 3})
    assert settings.retention_days == {**DEFAULT_RETENTION_DAYS, "reasoning_trace": 3}


def test_an_unknown_category_is_a_settings_error_that_names_it(tmp_path: Path) -> None:
    """A retention key that is not one of the five categories stops the settings load,
    naming the key and the categories."""
    config = tmp_path / "keel.yaml"
    config.write_text("logging:\n  retention_days:\n    debug_noise: 3\n")
    with pytest.raises(ConfigError) as raised:
        load_settings(config_path=config, environ={})
    assert "debug_noise" in raised.value.message
    assert "reasoning_trace" in raised.value.message


def test_retention_below_a_day_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"retention_days\.error is 0"):
        LoggingSettings(retention_days={"error": 0})


@pytest.mark.parametrize("name", ["", "../etc", "a/b", "memory.2026-12-01.3", "-x"])
def test_service_names_that_are_no_plain_file_name_are_refused(name: str) -> None:
    """A service name is part of a file name, and never looks like a rotated file."""
    with pytest.raises(ValidationError, match="service_name"):
        LoggingSettings(service_name=name)


def test_the_directory_defaults_to_the_data_dir_and_stdout_narrows_with_files() -> None:
    """No dir: <data_dir>/logs for readers, stdout at log_level; with a dir, stdout carries
    warnings and above unless stdout_level says otherwise."""
    plain = LoggingSettings()
    assert plain.directory(Path("/srv/keel")) == Path("/srv/keel/logs")
    assert plain.stdout_threshold("info") == "info"
    files = LoggingSettings(dir=Path("/var/log/keel"))
    assert files.directory(Path("/srv/keel")) == Path("/var/log/keel")
    assert files.stdout_threshold("info") == "warning"
    assert LoggingSettings(dir=Path("x"), stdout_level="info").stdout_threshold("debug") == "info"
    assert LoggingSettings(max_file_mb=0.5).max_file_bytes == 512 * 1024

"""Environment overlays: `keel.NAME.yaml` read over `keel.yaml`, below the KEEL_* variables."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.config.layers import load_settings, overlay_path
from agentkeel.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def base(tmp_path: Path) -> Path:
    path = tmp_path / "keel.yaml"
    path.write_text(
        "agent:\n  id: support\n  version: v3\n"
        "server:\n  port: 9001\n  drain_timeout_s: 5\n"
        "guardrails:\n  max_steps_per_turn: 4\n"
    )
    (tmp_path / "keel.production.yaml").write_text(
        "server:\n  port: 9100\n  drain_timeout_s: 60\nguardrails:\n  max_steps_per_turn: 8\n"
    )
    return path


def test_the_layers_in_order(base: Path) -> None:
    """defaults < keel.yaml < overlay < KEEL_* < command options, each value from the
    highest layer that sets it, and provenance names that layer."""
    loaded = load_settings(
        config_path=base,
        environment="production",
        environ={"KEEL_SERVER__DRAIN_TIMEOUT_S": "90", "KEEL_GUARDRAILS__MAX_STEPS_PER_TURN": "9"},
        overrides={"guardrails": {"max_steps_per_turn": 2}},
    )
    s = loaded.settings
    assert s.server.host == "127.0.0.1" and loaded.source_of("server.host") == "default"
    assert s.agent.version == "v3" and loaded.source_of("agent.version") == "file"
    assert s.server.port == 9100 and loaded.source_of("server.port") == "overlay"
    assert s.server.drain_timeout_s == 90 and loaded.source_of("server.drain_timeout_s") == "env"
    assert s.guardrails.max_steps_per_turn == 2
    assert loaded.source_of("guardrails.max_steps_per_turn") == "cli"
    assert loaded.detail_of("server.port") == "keel.production.yaml"
    assert loaded.detail_of("agent.version") is None
    assert loaded.environment == "production"


def test_keel_env_picks_the_overlay(base: Path) -> None:
    """KEEL_ENV names the environment when none is passed; an explicit one wins over it."""
    (base.parent / "keel.staging.yaml").write_text("server:\n  port: 9200\n")
    by_env = load_settings(config_path=base, environ={"KEEL_ENV": "production"})
    assert by_env.settings.server.port == 9100
    assert by_env.environment == "production"
    explicit = load_settings(
        config_path=base, environ={"KEEL_ENV": "production"}, environment="staging"
    )
    assert explicit.settings.server.port == 9200
    assert load_settings(config_path=base, environ={}).environment is None


def test_without_a_base_file_the_overlay_is_in_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No keel.yaml: keel.NAME.yaml is looked for in the working directory."""
    (tmp_path / "keel.dev.yaml").write_text("log_level: debug\n")
    monkeypatch.chdir(tmp_path)
    loaded = load_settings(environ={"KEEL_ENV": "dev"})
    assert loaded.settings.log_level == "debug"
    assert loaded.source_of("log_level") == "overlay"


def test_a_missing_overlay_is_an_error_naming_the_path(base: Path) -> None:
    """A named environment without its file stops the load, naming the path it looked at."""
    with pytest.raises(ConfigError) as info:
        load_settings(config_path=base, environment="qa", environ={})
    assert str(base.parent / "keel.qa.yaml") in info.value.message
    assert "--env" in info.value.message and "KEEL_ENV" in info.value.message


def test_an_environment_name_is_not_a_path(base: Path) -> None:
    """Names with slashes or dots are refused before any file is looked up; an empty
    KEEL_ENV means no environment."""
    for name in ("../prod", "prod.yaml", "a b"):
        with pytest.raises(ConfigError, match="not valid"):
            load_settings(config_path=base, environment=name, environ={})
    assert load_settings(config_path=base, environ={"KEEL_ENV": ""}).environment is None


def test_an_overlay_error_names_the_overlay_layer(base: Path) -> None:
    """A bad value in the overlay is reported as coming from the overlay."""
    (base.parent / "keel.broken.yaml").write_text("server:\n  port: many\n")
    with pytest.raises(ConfigError, match=r"server.port \(from overlay\)"):
        load_settings(config_path=base, environment="broken", environ={})


def test_overlay_path_sits_beside_the_base() -> None:
    """The overlay of an environment is keel.NAME.yaml in the base file's directory."""
    assert overlay_path("production", base=Path("deploy/keel.yaml")) == Path(
        "deploy/keel.production.yaml"
    )
    assert overlay_path("production", base=None) == Path("keel.production.yaml")


def test_the_production_example_is_an_overlay_of_the_example() -> None:
    """examples/keel.production.yaml over examples/keel.yaml: auth on, the example's agent
    kept, production's state and models in force."""
    loaded = load_settings(
        config_path=ROOT / "examples" / "keel.yaml", environment="production", environ={}
    )
    s = loaded.settings
    assert s.auth.enabled and loaded.source_of("auth.enabled") == "overlay"
    assert s.agent.id == "support" and loaded.source_of("agent.id") == "file"
    assert [m.name for m in s.models] == ["openai", "anthropic"]
    assert loaded.source_of("models") == "overlay"
    assert str(s.store.url).startswith("postgresql://")

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.config import flatten, load_settings
from agentkeel.errors import ConfigError


def test_defaults_apply_without_any_layer() -> None:
    """With no file and an empty environment every value is the built-in default."""
    loaded = load_settings(environ={})
    assert loaded.settings.guardrails.max_turns_per_session == 50
    assert loaded.settings.guardrails.max_steps_per_turn == 10
    assert loaded.source_of("guardrails.max_turns_per_session") == "default"


def test_file_overrides_defaults_and_env_overrides_file(tmp_path: Path) -> None:
    """Layer order is defaults < keel.yaml < environment, and provenance says which won."""
    cfg = tmp_path / "keel.yaml"
    cfg.write_text("server:\n  port: 9001\n  drain_timeout_s: 5\nagent:\n  version: v7\n")
    loaded = load_settings(config_path=cfg, environ={"KEEL_SERVER__PORT": "9002"})
    assert loaded.settings.server.port == 9002
    assert loaded.settings.server.drain_timeout_s == 5
    assert loaded.settings.agent.version == "v7"
    assert loaded.source_of("server.port") == "env"
    assert loaded.source_of("server.drain_timeout_s") == "file"
    assert loaded.source_of("server.host") == "default"


def test_config_path_from_keel_config_env(tmp_path: Path) -> None:
    """KEEL_CONFIG names the file when --config is not given."""
    cfg = tmp_path / "k.yaml"
    cfg.write_text("agent:\n  id: support\n")
    loaded = load_settings(environ={"KEEL_CONFIG": str(cfg)})
    assert loaded.settings.agent.id == "support"


def test_command_options_override_everything(tmp_path: Path) -> None:
    """Overrides passed in code (a command's options) sit above the environment, as `cli`."""
    loaded = load_settings(environ={"KEEL_SERVER__PORT": "9002"}, overrides={"server": {"port": 1}})
    assert loaded.settings.server.port == 1
    assert loaded.source_of("server.port") == "cli"


def test_models_chain_from_env_json() -> None:
    """A whole provider chain can come from one environment variable as JSON."""
    loaded = load_settings(
        environ={"KEEL_MODELS": '[{"name": "s", "kind": "scripted", "latency_s": 0.5}]'}
    )
    assert [m.name for m in loaded.settings.models] == ["s"]
    assert loaded.settings.models[0].latency_s == 0.5


def test_invalid_value_names_key_value_and_layer() -> None:
    """A bad value is reported with its key, its value and the layer it came from."""
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"KEEL_SERVER__PORT": "not-a-port"})
    message = str(info.value)
    assert "server.port" in message and "not-a-port" in message and "env" in message


def test_unknown_key_in_file_is_rejected(tmp_path: Path) -> None:
    """A typo in keel.yaml is an error, not silently ignored."""
    cfg = tmp_path / "keel.yaml"
    cfg.write_text("guardrails:\n  max_turn_per_session: 3\n")
    with pytest.raises(ConfigError, match="max_turn_per_session"):
        load_settings(config_path=cfg, environ={})


def test_missing_and_malformed_files_are_clear_errors(tmp_path: Path) -> None:
    """A missing file or broken YAML names the file."""
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(config_path=tmp_path / "nope.yaml", environ={})
    bad = tmp_path / "bad.yaml"
    bad.write_text("server: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(config_path=bad, environ={})
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just a string\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(config_path=scalar, environ={})


def test_plain_environment_secret_is_refused() -> None:
    """An API key in a plain environment variable is refused with the *_FILE alternative."""
    with pytest.raises(ConfigError, match="KEEL_OPENAI_API_KEY_FILE"):
        load_settings(environ={"KEEL_OPENAI_API_KEY": "sk-live-123"})


def test_duplicate_provider_names_rejected() -> None:
    """Provider names label metrics, so they must be unique."""
    with pytest.raises(ConfigError, match="unique"):
        load_settings(
            overrides={"models": [{"name": "a", "kind": "scripted"}, {"name": "a"}]}, environ={}
        )


def test_flatten_lists_every_leaf() -> None:
    """flatten() gives dotted keys for config show."""
    flat = flatten(load_settings(environ={}).settings)
    assert flat["server.port"] == 8081
    assert "guardrails.tool_storm_threshold" in flat
    assert isinstance(flat["models"], list)


def test_secret_paths_and_dirs_in_env_are_allowed(tmp_path: Path) -> None:
    """Variables that name where a secret is (a file, the secrets dir) are not secrets."""
    loaded = load_settings(
        environ={
            "KEEL_SECRETS_DIR": str(tmp_path),
            "KEEL_SERVER__ADMIN_TOKEN_FILE": str(tmp_path / "admin_token"),
        }
    )
    assert loaded.settings.secrets_dir == tmp_path
    with pytest.raises(ConfigError, match="looks like a secret"):
        load_settings(environ={"KEEL_SERVER__ADMIN_TOKEN": "t"})


def test_only_the_environ_given_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    """An explicit environ (or explicit layers) is the whole environment: the process's
    KEEL_ variables stay out, so provenance always names the layer that set a value."""
    monkeypatch.setenv("KEEL_SERVER__DRAIN_TIMEOUT_S", "5")
    assert load_settings(environ={}).settings.server.drain_timeout_s == 30
    assert load_settings(layers=[]).settings.server.drain_timeout_s == 30
    loaded = load_settings()
    assert loaded.settings.server.drain_timeout_s == 5
    assert loaded.source_of("server.drain_timeout_s") == "env"


def test_a_section_error_names_the_layer_of_its_values(tmp_path: Path) -> None:
    """An error about a whole section (a moved key) names the layer that wrote into it."""
    cfg = tmp_path / "keel.yaml"
    cfg.write_text("guardrails:\n  user_daily_token_budget: 0\n")
    with pytest.raises(ConfigError, match=r"guardrails \(from file\).*quotas.user_daily_tokens"):
        load_settings(config_path=cfg, environ={})


def test_a_table_filled_entry_by_entry_names_its_highest_layer(tmp_path: Path) -> None:
    """pricing is stored per entry: the table's source is the highest layer that set one of
    its entries (here env over file), and default when none did."""
    base = tmp_path / "keel.yaml"
    base.write_text(
        "models:\n  - {name: a, kind: scripted}\n"
        "pricing:\n  a: {input_per_million: 1.0, output_per_million: 2.0}\n"
    )
    loaded = load_settings(config_path=base, environ={})
    assert loaded.source_of("pricing") == "file"
    assert loaded.source_of("pricing.a.input_per_million") == "file"
    environ = {"KEEL_PRICING": '{"b": {"input_per_million": 3.0, "output_per_million": 4.0}}'}
    both = load_settings(config_path=base, environ=environ)
    assert set(both.settings.pricing) == {"a", "b"}
    assert both.source_of("pricing") == "env"
    assert load_settings(layers=[]).source_of("pricing") == "default"
    assert load_settings(layers=[]).source_of("server.port") == "default"

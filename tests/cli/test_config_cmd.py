"""`keel config show`: every value with the layer it came from, and never a secret."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli.main import app
from agentkeel.secrets import redact_url

SECRET = "sk-live-do-not-print-8f3a9c"


@pytest.fixture
def config(tmp_path: Path) -> Path:
    key_file = tmp_path / "openai_key"
    key_file.write_text(SECRET)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "admin_token").write_text(SECRET)
    path = tmp_path / "keel.yaml"
    path.write_text(
        f"secrets_dir: {secrets_dir}\n"
        "agent:\n  id: support\n"
        "store:\n  url: postgresql://keel:hunter2@db.internal:5432/keel\n"
        "models:\n"
        "  - name: openai\n"
        "    kind: openai\n"
        "    model: gpt-4o-mini\n"
        f"    api_key_file: {key_file}\n"
    )
    return path


def show(config: Path, *args: str, env: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    result = CliRunner().invoke(
        app, ["--config", str(config), "config", "show", "--json", *args], env=env
    )
    assert result.exit_code == 0, result.output
    rows: dict[str, dict[str, str]] = json.loads(result.stdout)
    return rows


def test_sources_name_the_layer_of_each_value(config: Path) -> None:
    """Values are attributed to default, file or env, whichever layer set them last."""
    rows = show(config, env={"KEEL_SERVER__PORT": "8099"})
    assert rows["agent.id"] == {"value": "support", "source": "file"}
    assert rows["server.port"] == {"value": "8099", "source": "env"}
    assert rows["server.host"] == {"value": "127.0.0.1", "source": "default"}
    assert rows["models[0].model"] == {"value": "gpt-4o-mini", "source": "file"}


def test_global_data_dir_flag_is_the_flags_layer(config: Path, tmp_path: Path) -> None:
    """`keel --data-dir X` wins over the file and is reported as coming from flags."""
    result = CliRunner().invoke(
        app,
        ["--config", str(config), "--data-dir", str(tmp_path / "d"), "config", "show", "--json"],
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["data_dir"] == {
        "value": str(tmp_path / "d"),
        "source": "flags",
    }


def test_secret_values_never_appear_only_their_files(config: Path, tmp_path: Path) -> None:
    """Key files and secret dirs show as paths; their content and URL passwords never show."""
    for args in ([], ["--json"]):
        result = CliRunner().invoke(
            app, ["--config", str(config), "config", "show", *args], env={"COLUMNS": "300"}
        )
        assert result.exit_code == 0, result.output
        assert SECRET not in result.output
        assert "hunter2" not in result.output
        assert str(tmp_path / "openai_key") in result.output
    rows = show(config)
    assert rows["store.url"]["value"] == "postgresql://keel:***@db.internal:5432/keel"


def test_table_lists_key_value_and_source(config: Path) -> None:
    """Without --json the output is a table with the key, value and source columns."""
    result = CliRunner().invoke(
        app, ["--config", str(config), "config", "show"], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 0, result.output
    header = next(line for line in result.stdout.splitlines() if "key" in line)
    assert "value" in header and "source" in header
    line = next(line for line in result.stdout.splitlines() if "agent.id" in line)
    assert "support" in line and "file" in line


def test_secret_looking_environment_variable_is_refused(config: Path) -> None:
    """A secret put in a plain KEEL_ variable is a config error (exit 2) that says to use a file."""
    result = CliRunner().invoke(
        app,
        ["--config", str(config), "config", "show"],
        env={"KEEL_MODELS__0__API_KEY": SECRET},
    )
    assert result.exit_code == 2
    assert "_FILE" in result.stderr
    assert SECRET not in result.output


def test_redact_url_masks_only_the_password() -> None:
    """User, host and path stay readable; the password becomes ***."""
    assert redact_url("redis://:pw@127.0.0.1:6379/0") == "redis://:***@127.0.0.1:6379/0"
    assert redact_url("sqlite:///.keel/sessions.db") == "sqlite:///.keel/sessions.db"

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli.main import app
from agentkeel.secrets import FileSecretSource


def keel(runner: CliRunner, secrets_dir: Path, *args: str, stdin: str | None = None):  # type: ignore[no-untyped-def]
    config = secrets_dir.parent / "keel.yaml"
    config.write_text(f"secrets_dir: {secrets_dir}\n")
    return runner.invoke(app, ["--config", str(config), "secrets", *args], input=stdin)


def test_put_from_stdin_and_file_then_list_without_values(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """put stores a value (stdin or --value-file) as the next generation, audited; list shows
    paths, generations and age, never the value."""
    runner = CliRunner()
    secrets_dir = tmp_path / "secrets"
    caplog.set_level(logging.INFO, logger="agentkeel.audit")
    result = keel(runner, secrets_dir, "put", "orgs/acme/openai", stdin="sk-acme-0123456789\n")
    assert result.exit_code == 0, result.output
    assert "sk-acme" not in result.output
    value_file = tmp_path / "v"
    value_file.write_text("sk-acme-second-0123456789")
    result = keel(runner, secrets_dir, "put", "orgs/acme/openai", "--value-file", str(value_file))
    assert result.exit_code == 0, result.output
    secret = FileSecretSource(root=secrets_dir).read("orgs/acme/openai")
    assert secret is not None and secret.current.generation == 2
    assert secret.current.value.get_secret_value() == "sk-acme-second-0123456789"
    records = [r for r in caplog.records if getattr(r, "action", None) == "secrets.put"]
    assert len(records) == 2 and all("sk-acme" not in r.getMessage() for r in records)
    result = keel(runner, secrets_dir, "list", "--json")
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [(r["path"], r["current"]) for r in rows] == [("orgs/acme/openai", 2)]
    assert "sk-acme" not in result.output
    table = keel(runner, secrets_dir, "list", "orgs")
    assert "orgs/acme/openai" in table.output and "sk-acme" not in table.output


def test_put_refuses_unsafe_paths_and_empty_values(tmp_path: Path) -> None:
    """A path outside the root or an empty value is an error line, nothing is written."""
    runner = CliRunner()
    secrets_dir = tmp_path / "secrets"
    result = keel(runner, secrets_dir, "put", "../escape", stdin="sk-x-0123456789")
    assert result.exit_code != 0 and not (tmp_path / "escape").exists()
    result = keel(runner, secrets_dir, "put", "k", stdin="\n")
    assert result.exit_code != 0 and "No value" in result.output

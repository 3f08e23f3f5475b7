"""The keel command line: help with examples, version, exit codes for expected errors."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli.main import app

COMMANDS = [
    [],
    ["up"],
    ["chat"],
    ["eval"],
    ["serve"],
    ["serve", "agent"],
    ["config"],
    ["config", "show"],
    ["version"],
]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "keel")
def test_every_command_help_shows_an_example(runner: CliRunner, command: list[str]) -> None:
    """`--help` of every command and group succeeds and includes an `Example:` line."""
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Example: keel" in result.output


def test_version_prints_the_package_version(runner: CliRunner) -> None:
    """`keel version` prints the installed agentkeel version."""
    result = runner.invoke(app, ["version"])
    assert result.exit_code == 0
    assert result.stdout.startswith("agentkeel ")


def test_missing_config_file_exits_2_with_one_line(runner: CliRunner, tmp_path: Path) -> None:
    """A config file that does not exist is a config error: exit 2, a message, no traceback."""
    missing = tmp_path / "nope.yaml"
    result = runner.invoke(app, ["--config", str(missing), "config", "show"])
    assert result.exit_code == 2
    assert f"Config file '{missing}' does not exist" in result.stderr
    assert "Traceback" not in result.output
    assert result.stdout == ""


def test_invalid_setting_exits_2_naming_the_key(runner: CliRunner, tmp_path: Path) -> None:
    """A config value that fails validation names the key and the file layer, exit 2."""
    config = tmp_path / "keel.yaml"
    config.write_text("server:\n  port: 99999\n")
    result = runner.invoke(app, ["--config", str(config), "config", "show"])
    assert result.exit_code == 2
    assert "server.port (from file)" in result.stderr
    assert "Traceback" not in result.output


def test_no_arguments_prints_help(runner: CliRunner) -> None:
    """Bare `keel` shows the command list instead of doing anything."""
    result = runner.invoke(app, [])
    assert "up" in result.output and "chat" in result.output

"""The keel command line: help with examples, version, exit codes for expected errors."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.core import TyperGroup, TyperOption
from typer.testing import CliRunner

from agentkeel.cli.main import app


def command_paths(command: Any = None, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every command and group under ``keel``, so a new command is checked without a list."""
    node = command or typer.main.get_command(app)
    paths = [path]
    if isinstance(node, TyperGroup):
        for name, child in node.commands.items():
            paths += command_paths(child, (*path, name))
    return paths


COMMANDS = command_paths()


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def test_the_command_tree_is_walked() -> None:
    """The walk finds the nested commands (not only the top level)."""
    assert ("serve", "memory") in COMMANDS
    assert ("memory", "quarantine", "replay") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "keel")
def test_every_command_help_shows_an_example_of_itself(
    runner: CliRunner, command: tuple[str, ...]
) -> None:
    """`--help` of every command and group succeeds and ends with an `Example: keel ...`
    line that runs that very command (its words appear in order)."""
    result = runner.invoke(app, [*command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    examples = [line.strip() for line in result.output.splitlines() if "Example: keel" in line]
    assert examples, result.output
    words = iter(examples[0].removeprefix("Example: keel").split())
    assert all(word in words for word in command), (command, examples[0])


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "keel")
def test_no_option_help_refers_to_itself(runner: CliRunner, command: tuple[str, ...]) -> None:
    """An option's help never explains the option by its own name ("--config overrides
    --config"); a command's --config says what it wins over."""
    node: Any = typer.main.get_command(app)
    for name in command:
        assert isinstance(node, TyperGroup)
        node = node.commands[name]
    for param in node.params:
        if not isinstance(param, TyperOption) or not param.help:
            continue
        for flag in param.opts:
            assert re.search(rf"(?<!keel ){re.escape(flag)}(?![\w-])", param.help) is None, (
                f"{' '.join(command)} {flag}: {param.help}"
            )


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

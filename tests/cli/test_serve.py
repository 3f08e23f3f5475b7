"""`keel serve agent`: flags become settings, and the server's exit code is the command's."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli.main import app
from agentkeel.config import KeelSettings
from agentkeel.runtime import serve as runtime_serve


class FakeServer:
    def __init__(self, code: int = 0) -> None:
        self.code = code
        self.calls: list[tuple[KeelSettings, str | None]] = []
        self.source_of: Callable[[str], str] | None = None

    def __call__(
        self,
        settings: KeelSettings,
        *,
        agent_entrypoint: str | None = None,
        source_of: Callable[[str], str] | None = None,
    ) -> int:
        self.calls.append((settings, agent_entrypoint))
        self.source_of = source_of
        return self.code


def test_flags_override_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """--host, --port and --agent win over keel.yaml; the rest of the file still applies."""
    config = tmp_path / "keel.yaml"
    config.write_text("server:\n  port: 9000\n  drain_timeout_s: 3\n")
    fake = FakeServer()
    monkeypatch.setattr(runtime_serve, "run_agent_server", fake)
    result = CliRunner().invoke(
        app,
        [
            "serve",
            "agent",
            "--config",
            str(config),
            "--port",
            "8085",
            "--host",
            "0.0.0.0",
            "--agent",
            "examples.echo_agent:agent",
        ],
    )
    assert result.exit_code == 0, result.output
    settings, entrypoint = fake.calls[0]
    assert (settings.server.host, settings.server.port) == ("0.0.0.0", 8085)
    assert settings.server.drain_timeout_s == 3
    assert entrypoint == "examples.echo_agent:agent"
    assert fake.source_of is not None
    assert (fake.source_of("server.port"), fake.source_of("server.drain_timeout_s")) == (
        "cli",
        "file",
    )


def test_server_exit_code_becomes_the_command_exit_code(monkeypatch: pytest.MonkeyPatch) -> None:
    """A replica that could not start exits non-zero, and so does `keel serve agent`."""
    monkeypatch.setattr(runtime_serve, "run_agent_server", FakeServer(code=1))
    result = CliRunner().invoke(app, ["serve", "agent", "--port", "8085"])
    assert result.exit_code == 1


def test_bad_port_in_the_environment_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    """An invalid KEEL_ value stops the command with a config error before serving."""
    fake = FakeServer()
    monkeypatch.setattr(runtime_serve, "run_agent_server", fake)
    result = CliRunner().invoke(app, ["serve", "agent"], env={"KEEL_SERVER__PORT": "eighty"})
    assert result.exit_code == 2
    assert "server.port (from env)" in result.stderr
    assert fake.calls == []


def test_app_dir_puts_the_directory_on_sys_path(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keel serve --app-dir DIR` makes modules in DIR importable, as uvicorn's --app-dir."""
    monkeypatch.setattr(sys, "path", list(sys.path))
    result = CliRunner().invoke(app, ["serve", "--app-dir", str(tmp_path), "agent", "--help"])
    assert result.exit_code == 0
    assert str(tmp_path.resolve()) in sys.path

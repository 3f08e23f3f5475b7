"""`keel up`'s plan: which children, on which ports, with which settings; its pre-checks."""

from __future__ import annotations

import socket
import stat
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from agentkeel.cli import up as up_module
from agentkeel.cli.main import app
from agentkeel.cli.up import (
    LOCAL_MODEL_SERVICE,
    check_ports_free,
    ensure_admin_token,
    plan_services,
)
from agentkeel.config import KeelSettings
from agentkeel.errors import ConfigError
from agentkeel.ops.local_model import BUNDLED_MODEL_FILE


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / BUNDLED_MODEL_FILE
    path.write_bytes(b"GGUF")
    return path


def settings_for(tmp_path: Path, model_file: Path, **up: int) -> KeelSettings:
    return KeelSettings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "local_model": {"port": 18090, "model_path": str(model_file)},
            "up": {"base_port": 18081, **up},
            "server": {"drain_timeout_s": 12},
        }
    )


def test_plan_starts_the_model_first_and_replicas_on_consecutive_ports(
    tmp_path: Path, model_file: Path
) -> None:
    """The model server comes first; each replica depends on it and gets the next port."""
    settings = settings_for(tmp_path, model_file, replicas=3)
    token = tmp_path / "data" / "admin_token"
    specs = plan_services(
        settings, config_path=None, start_local_model=True, admin_token_file=token
    )
    assert [s.name for s in specs] == [LOCAL_MODEL_SERVICE, "replica-1", "replica-2", "replica-3"]
    model, *replicas = specs
    assert model.port == 18090
    assert model.ready_url == "http://127.0.0.1:18090/v1/models"
    assert str(model_file) in model.command
    assert [r.port for r in replicas] == [18081, 18082, 18083]
    for replica in replicas:
        assert replica.depends_on == (LOCAL_MODEL_SERVICE,)
        assert replica.command[:6] == [
            sys.executable,
            "-m",
            "agentkeel.cli.main",
            "serve",
            "agent",
            "--host",
        ]
        assert replica.command[-2:] == ["--port", str(replica.port)]
        assert replica.ready_url == f"http://127.0.0.1:{replica.port}/ready"
        assert replica.health_url == f"http://127.0.0.1:{replica.port}/health"
        # Drain first, then a margin for shutdown, before SIGKILL.
        assert replica.stop_timeout_s > 12


def test_replicas_share_the_data_dir_token_and_config(tmp_path: Path, model_file: Path) -> None:
    """Replicas get absolute paths for the data dir, admin token and config, and their own id."""
    settings = settings_for(tmp_path, model_file, replicas=2)
    token = tmp_path / "data" / "admin_token"
    config = tmp_path / "keel.yaml"
    specs = plan_services(
        settings, config_path=config, start_local_model=False, admin_token_file=token
    )
    assert [s.name for s in specs] == ["replica-1", "replica-2"]
    for index, spec in enumerate(specs, start=1):
        assert spec.depends_on == ()
        assert spec.env["KEEL_DATA_DIR"] == str(tmp_path / "data")
        assert spec.env["KEEL_SERVER__ADMIN_TOKEN_FILE"] == str(token)
        assert spec.env["KEEL_CONFIG"] == str(config)
        assert spec.env["KEEL_SERVER__REPLICA_ID"] == f"replica-{index}"


def test_admin_token_is_created_once_and_private(tmp_path: Path) -> None:
    """The admin token file is made on first run with mode 0600 and kept on later runs."""
    path = ensure_admin_token(tmp_path / "data")
    first = path.read_text()
    assert len(first.strip()) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_admin_token(tmp_path / "data") == path
    assert path.read_text() == first


def test_port_in_use_is_a_config_error_naming_the_service(tmp_path: Path, model_file: Path) -> None:
    """A port that something already listens on stops keel up before any child starts."""
    settings = settings_for(tmp_path, model_file, replicas=1)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings.up.base_port = port
        specs = plan_services(
            settings,
            config_path=None,
            start_local_model=False,
            admin_token_file=tmp_path / "t",
        )
        with pytest.raises(ConfigError, match=rf"Port {port} .*replica-1.*up\.base_port"):
            check_ports_free(specs, host={})


def test_up_without_llama_cpp_exits_2_with_the_install_hint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing llama-cpp-python is reported before anything starts: exit 2 and how to fix it."""

    def missing() -> None:
        raise ConfigError("The local model server (llama-cpp-python) is not installed: run make")

    monkeypatch.setattr(up_module, "check_server_installed", missing)
    result = CliRunner().invoke(app, ["up", "--data-dir", str(tmp_path / "d")])
    assert result.exit_code == 2
    assert "llama-cpp-python" in result.stderr
    assert not (tmp_path / "d" / "logs").exists()

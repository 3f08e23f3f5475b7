"""`keel up`'s plan: which children, on which ports, with which settings; its pre-checks."""

from __future__ import annotations

import io
import json
import logging
import os
import socket
import stat
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from rich.console import Console
from typer.testing import CliRunner

from agentkeel.cli import up as up_module
from agentkeel.cli.main import app
from agentkeel.cli.up import (
    LOCAL_MODEL_SERVICE,
    MEMORY_SERVICE,
    ROUTER_SERVICE,
    TOOLS_SERVICE,
    MemoryCredentials,
    ToolCredentials,
    UpView,
    check_ports_free,
    ensure_admin_token,
    ensure_memory_credentials,
    ensure_tool_credentials,
    plan_services,
    service_hosts,
    skipped_service_notes,
)
from agentkeel.config import KeelSettings
from agentkeel.config.identity import IdentitySettings
from agentkeel.config.memory import MemorySettings
from agentkeel.config.tools import ToolServerSettings
from agentkeel.errors import ConfigError
from agentkeel.identity import build_caller_signer, build_caller_verifier
from agentkeel.memory.access import AccessControl
from agentkeel.ops.local_model import BUNDLED_MODEL_FILE
from agentkeel.ops.log_reader import read_lines
from agentkeel.ops.supervisor import ServiceSpec, ServiceState, ServiceStatus, dependency_levels
from agentkeel.secrets.resolver import SecretResolver
from agentkeel.telemetry.audit import audit
from agentkeel.tools.access import ToolAccess

REPLICA_COMMAND_HEAD = [sys.executable, "-m", "agentkeel.cli.main", "serve", "agent", "--host"]


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / BUNDLED_MODEL_FILE
    path.write_bytes(b"GGUF")
    return path


@pytest.fixture
def credentials(tmp_path: Path) -> MemoryCredentials:
    return MemoryCredentials(
        agent_token_file=tmp_path / "data" / "memory_agent_token",
        tokens_file=tmp_path / "data" / "memory_tokens.yaml",
    )


def tool_files(tmp_path: Path) -> ToolCredentials:
    data = tmp_path / "data"
    return ToolCredentials(
        agent_token_file=data / "tools_agent_token",
        tokens_file=data / "tools_tokens.yaml",
        signing_key_file=data / "caller_signing_key",
        public_key_file=data / "caller_signing_key.pub",
    )


def settings_for(
    tmp_path: Path, model_file: Path, *, extra: dict[str, Any] | None = None, **up: Any
) -> KeelSettings:
    """Settings on ports away from the defaults; the router is off unless ``router=True``
    (the tests of the router's place in the plan ask for it)."""
    return KeelSettings.model_validate(
        {
            "data_dir": str(tmp_path / "data"),
            "local_model": {"port": 18090, "model_path": str(model_file)},
            "up": {"base_port": 18081, "router": False, **up},
            "router": {"port": 18080},
            "server": {"drain_timeout_s": 12},
            "memory": {"port": 18788},
            "tools": {"server": {"port": 19090}},
            **(extra or {}),
        }
    )


def by_name(specs: list[ServiceSpec]) -> dict[str, ServiceSpec]:
    return {spec.name: spec for spec in specs}


def test_plan_starts_model_memory_tools_then_replicas(
    tmp_path: Path, model_file: Path, credentials: MemoryCredentials
) -> None:
    """Model and memory come first, the tool server after memory, replicas after all of them,
    the router after the replicas."""
    settings = settings_for(tmp_path, model_file, replicas=3, router=True)
    token = tmp_path / "data" / "admin_token"
    specs = plan_services(
        settings,
        config_path=None,
        start_local_model=True,
        admin_token_file=token,
        tool_credentials=tool_files(tmp_path),
        memory_credentials=credentials,
    )
    assert [s.name for s in specs] == [
        LOCAL_MODEL_SERVICE,
        MEMORY_SERVICE,
        TOOLS_SERVICE,
        "replica-1",
        "replica-2",
        "replica-3",
        ROUTER_SERVICE,
    ]
    assert dependency_levels(specs) == [
        [LOCAL_MODEL_SERVICE, MEMORY_SERVICE],
        [TOOLS_SERVICE],
        ["replica-1", "replica-2", "replica-3"],
        [ROUTER_SERVICE],
    ]
    model, memory, tools, *replicas, router = specs
    assert model.port == 18090
    assert model.ready_url == "http://127.0.0.1:18090/v1/models"
    assert str(model_file) in model.command
    assert memory.command[3:] == ["serve", "memory", "--host", "127.0.0.1", "--port", "18788"]
    assert memory.ready_url == "http://127.0.0.1:18788/ready"
    assert memory.depends_on == ()
    assert tools.command[3:] == ["serve", "tools", "--host", "127.0.0.1", "--port", "19090"]
    assert tools.ready_url == "http://127.0.0.1:19090/ready"
    assert tools.depends_on == (MEMORY_SERVICE,)
    assert [r.port for r in replicas] == [18081, 18082, 18083]
    for replica in replicas:
        assert replica.depends_on == (LOCAL_MODEL_SERVICE, MEMORY_SERVICE, TOOLS_SERVICE)
        assert replica.command[:6] == REPLICA_COMMAND_HEAD
        assert replica.command[-2:] == ["--port", str(replica.port)]
        assert replica.ready_url == f"http://127.0.0.1:{replica.port}/ready"
        assert replica.health_url == f"http://127.0.0.1:{replica.port}/health"
        # Drain first, then a margin for shutdown, before SIGKILL.
        assert replica.stop_timeout_s > 12
        # Replicas stop first, while the router in front still relays their last turns.
        assert replica.stop_first
    assert router.depends_on == ("replica-1", "replica-2", "replica-3")
    assert not router.stop_first
    assert router.port == 18080
    assert router.ready_url == "http://127.0.0.1:18080/ready"


def test_the_router_fronts_the_replicas_as_the_stable_version(
    tmp_path: Path, model_file: Path
) -> None:
    """keel serve router gets every replica as a backend of agent.version, its pins in
    <data_dir>/router.db and the stack's admin token file, per the router's command line."""
    settings = settings_for(
        tmp_path,
        model_file,
        replicas=2,
        memory=False,
        tools=False,
        router=True,
        extra={"agent": {"version": "v7"}},
    )
    token = tmp_path / "data" / "admin_token"
    config = tmp_path / "keel.yaml"
    router = by_name(
        plan_services(settings, config_path=config, start_local_model=False, admin_token_file=token)
    )[ROUTER_SERVICE]
    assert router.command[3:9] == ["serve", "router", "--host", "127.0.0.1", "--port", "18080"]
    args = router.command[9:]
    assert args == [
        "--backend",
        "v7=http://127.0.0.1:18081",
        "--backend",
        "v7=http://127.0.0.1:18082",
        "--pins",
        f"sqlite:///{tmp_path / 'data' / 'router.db'}",
        "--admin-token-file",
        str(token),
    ]
    assert router.env["KEEL_DATA_DIR"] == str(tmp_path / "data")
    assert router.env["KEEL_CONFIG"] == str(config)


def test_services_are_wired_through_file_variables(
    tmp_path: Path, model_file: Path, credentials: MemoryCredentials
) -> None:
    """Memory server, tool server and replicas get token *files*, URLs and the tools wiring."""
    settings = settings_for(tmp_path, model_file, replicas=1)
    token = tmp_path / "data" / "admin_token"
    config = tmp_path / "keel.yaml"
    specs = by_name(
        plan_services(
            settings,
            config_path=config,
            start_local_model=False,
            admin_token_file=token,
            tool_credentials=tool_files(tmp_path),
            memory_credentials=credentials,
        )
    )
    memory, tools, replica = specs[MEMORY_SERVICE], specs[TOOLS_SERVICE], specs["replica-1"]
    for spec in (memory, tools, replica):
        assert spec.env["KEEL_DATA_DIR"] == str(tmp_path / "data")
        assert spec.env["KEEL_CONFIG"] == str(config)
    assert memory.env["KEEL_MEMORY__TOKENS_FILE"] == str(credentials.tokens_file)
    assert memory.env["KEEL_MEMORY__ADMIN_TOKEN_FILE"] == str(token)
    assert tools.env["KEEL_TOOLS__SERVER__BUILTINS"] == "[]"
    assert tools.env["KEEL_TOOLS__SERVER__MEMORY_URL"] == "http://127.0.0.1:18788"
    for client in (tools, replica):
        assert client.env["KEEL_MEMORY_CLIENT__URL"] == "http://127.0.0.1:18788"
        assert client.env["KEEL_MEMORY_CLIENT__TOKEN_FILE"] == str(credentials.agent_token_file)
    files = tool_files(tmp_path)
    assert tools.env["KEEL_TOOLS__SERVER__TOKENS_FILE"] == str(files.tokens_file)
    assert tools.env["KEEL_IDENTITY__PUBLIC_KEY_FILE"] == str(files.public_key_file)
    assert "KEEL_IDENTITY__SIGNING_KEY_FILE" not in tools.env
    assert json.loads(replica.env["KEEL_TOOLS__SERVERS"]) == [
        {
            "name": "tools",
            "url": "http://127.0.0.1:19090/mcp",
            "token_file": str(files.agent_token_file),
            "audience": "agentkeel-tools",
        }
    ]
    assert replica.env["KEEL_IDENTITY__SIGNING_KEY_FILE"] == str(files.signing_key_file)
    assert "KEEL_IDENTITY__PUBLIC_KEY_FILE" not in replica.env
    assert replica.env["KEEL_SERVER__ADMIN_TOKEN_FILE"] == str(token)
    assert replica.env["KEEL_SERVER__REPLICA_ID"] == "replica-1"
    # The agent's allowlist is the user's: keel up never sets agent.tools.
    assert not any(key.startswith("KEEL_AGENT__") for key in replica.env)
    secret_values = {"KEEL_MEMORY_CLIENT__TOKEN", "KEEL_MEMORY__ADMIN_TOKEN", "KEEL_TOOLS_TOKEN"}
    assert not secret_values & {key for spec in specs.values() for key in spec.env}


def test_every_keel_child_writes_log_files_of_its_own(
    tmp_path: Path, model_file: Path, credentials: MemoryCredentials
) -> None:
    """Memory, tools, replicas and the router log into <data_dir>/logs (or logging.dir),
    each under its own supervisor name, so no two processes write one file; the model
    server (not a keel service) gets neither."""
    settings = settings_for(tmp_path, model_file, replicas=2, router=True)
    specs = plan_services(
        settings,
        config_path=None,
        start_local_model=True,
        admin_token_file=tmp_path / "t",
        tool_credentials=tool_files(tmp_path),
        memory_credentials=credentials,
    )
    keel = [spec for spec in specs if spec.name != LOCAL_MODEL_SERVICE]
    assert {spec.env["KEEL_LOGGING__DIR"] for spec in keel} == {str(tmp_path / "data" / "logs")}
    assert [spec.env["KEEL_LOGGING__SERVICE_NAME"] for spec in keel] == [
        MEMORY_SERVICE,
        TOOLS_SERVICE,
        "replica-1",
        "replica-2",
        ROUTER_SERVICE,
    ]
    model = by_name(specs)[LOCAL_MODEL_SERVICE]
    assert not any(key.startswith("KEEL_LOGGING__") for key in model.env)

    elsewhere = settings_for(
        tmp_path, model_file, replicas=1, memory=False, tools=False,
        extra={"logging": {"dir": str(tmp_path / "var-log")}},
    )  # fmt: skip
    [replica] = plan_services(
        elsewhere, config_path=None, start_local_model=False, admin_token_file=tmp_path / "t"
    )
    assert replica.env["KEEL_LOGGING__DIR"] == str(tmp_path / "var-log")


def test_keel_ups_own_lines_go_to_the_category_files_as_keel_up(tmp_path: Path) -> None:
    """keel up's own lines (a control-channel audit line, a retention line) are written
    like its children's, as the service keel-up, so keel logs trace and tail see them;
    leaving restores the root logger."""
    logs = tmp_path / "logs"
    root = logging.getLogger()
    handlers = list(root.handlers)
    with up_module._log_files(logs, max_bytes=1 << 20):
        audit("stack.replicas.start", actor="control", replica="agent-v2-1")
        logging.getLogger("agentkeel.ops.log_retention").info(
            "log retention: deleted 1 file(s)", extra={"event": "log_retention"}
        )
    assert root.handlers == handlers
    lines = [(line.service, line.category, line.message) for line in read_lines(logs).lines]
    assert lines == [
        ("keel-up", "audit", "audit: stack.replicas.start by control: ok (replica=agent-v2-1)"),
        ("keel-up", "access", "log retention: deleted 1 file(s)"),
    ]
    assert (logs / "audit" / "keel-up.jsonl").is_file()


def test_replicas_share_the_data_dir_token_and_config(tmp_path: Path, model_file: Path) -> None:
    """Replicas get absolute paths for the data dir, admin token and config, and their own id."""
    settings = settings_for(tmp_path, model_file, replicas=2, memory=False, tools=False)
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


def test_no_memory_leaves_out_the_memory_server_and_its_wiring(
    tmp_path: Path, model_file: Path
) -> None:
    """With up.memory off the tool server starts alone and nobody is pointed at a memory URL."""
    settings = settings_for(tmp_path, model_file, replicas=1, memory=False)
    specs = by_name(
        plan_services(
            settings,
            config_path=None,
            start_local_model=True,
            admin_token_file=tmp_path / "t",
            tool_credentials=tool_files(tmp_path),
        )
    )
    assert list(specs) == [LOCAL_MODEL_SERVICE, TOOLS_SERVICE, "replica-1"]
    assert specs[TOOLS_SERVICE].depends_on == ()
    assert specs["replica-1"].depends_on == (LOCAL_MODEL_SERVICE, TOOLS_SERVICE)
    for spec in (specs[TOOLS_SERVICE], specs["replica-1"]):
        assert not any(key.startswith("KEEL_MEMORY") for key in spec.env)
    assert "KEEL_TOOLS__SERVER__MEMORY_URL" not in specs[TOOLS_SERVICE].env
    assert "KEEL_TOOLS__SERVERS" in specs["replica-1"].env


def test_no_tools_leaves_out_the_tool_server_and_the_mcp_wiring(
    tmp_path: Path, model_file: Path, credentials: MemoryCredentials
) -> None:
    """With up.tools off the replicas get no MCP server but still their memory handle."""
    settings = settings_for(tmp_path, model_file, replicas=1, tools=False)
    specs = by_name(
        plan_services(
            settings,
            config_path=None,
            start_local_model=False,
            admin_token_file=tmp_path / "t",
            tool_credentials=tool_files(tmp_path),
            memory_credentials=credentials,
        )
    )
    assert list(specs) == [MEMORY_SERVICE, "replica-1"]
    replica = specs["replica-1"]
    assert replica.depends_on == (MEMORY_SERVICE,)
    assert "KEEL_TOOLS__SERVERS" not in replica.env
    assert replica.env["KEEL_MEMORY_CLIENT__URL"] == "http://127.0.0.1:18788"


def test_memory_server_without_credentials_is_a_config_error(
    tmp_path: Path, model_file: Path
) -> None:
    """Planning the memory server without its token files fails and says how to make them."""
    settings = settings_for(tmp_path, model_file, replicas=1)
    with pytest.raises(ConfigError, match="ensure_memory_credentials"):
        plan_services(
            settings, config_path=None, start_local_model=False, admin_token_file=tmp_path / "t"
        )


def test_a_configured_memory_client_url_is_kept_and_no_memory_server_starts(
    tmp_path: Path, model_file: Path, credentials: MemoryCredentials
) -> None:
    """memory_client.url set: keel up starts no memory server and its tools use that URL."""
    settings = settings_for(
        tmp_path,
        model_file,
        replicas=1,
        extra={"memory_client": {"url": "https://memory.example.com"}},
    )
    specs = by_name(
        plan_services(
            settings,
            config_path=None,
            start_local_model=False,
            admin_token_file=tmp_path / "t",
            tool_credentials=tool_files(tmp_path),
            memory_credentials=credentials,
        )
    )
    assert list(specs) == [TOOLS_SERVICE, "replica-1"]
    tools, replica = specs[TOOLS_SERVICE], specs["replica-1"]
    assert tools.env["KEEL_TOOLS__SERVER__MEMORY_URL"] == "https://memory.example.com"
    # The user's memory_client (URL and token) reaches both unchanged.
    for spec in (tools, replica):
        assert not any(key.startswith("KEEL_MEMORY_CLIENT__") for key in spec.env)
    assert skipped_service_notes(settings) == [
        "memory: not started; memory_client.url sends agents to https://memory.example.com"
    ]


def test_configured_tools_servers_are_kept_and_no_tool_server_starts(
    tmp_path: Path, model_file: Path, credentials: MemoryCredentials
) -> None:
    """tools.servers set: keel up starts no tool server and does not touch the replicas' list."""
    servers = [{"name": "weather", "url": "https://weather.example.com/mcp"}]
    settings = settings_for(tmp_path, model_file, replicas=1, extra={"tools": {"servers": servers}})
    specs = by_name(
        plan_services(
            settings,
            config_path=None,
            start_local_model=False,
            admin_token_file=tmp_path / "t",
            tool_credentials=tool_files(tmp_path),
            memory_credentials=credentials,
        )
    )
    assert list(specs) == [MEMORY_SERVICE, "replica-1"]
    assert "KEEL_TOOLS__SERVERS" not in specs["replica-1"].env
    assert skipped_service_notes(settings) == [
        "tools: not started; tools.servers lists the agents' MCP servers (weather)"
    ]


def test_tool_server_keeps_builtins_and_memory_url_the_user_set(
    tmp_path: Path, model_file: Path, credentials: MemoryCredentials
) -> None:
    """An explicit tools.server.builtins or memory_url is the user's choice, not overridden."""
    server = {"port": 19090, "builtins": ["http_get"], "memory_url": "http://10.0.0.5:8788"}
    settings = settings_for(tmp_path, model_file, replicas=1, extra={"tools": {"server": server}})
    specs = by_name(
        plan_services(
            settings,
            config_path=None,
            start_local_model=False,
            admin_token_file=tmp_path / "t",
            tool_credentials=tool_files(tmp_path),
            memory_credentials=credentials,
        )
    )
    tools = specs[TOOLS_SERVICE]
    assert "KEEL_TOOLS__SERVER__BUILTINS" not in tools.env
    assert "KEEL_TOOLS__SERVER__MEMORY_URL" not in tools.env
    assert "KEEL_MEMORY_CLIENT__TOKEN_FILE" not in tools.env
    # The replicas still use keel up's memory server: their memory_client was unset.
    assert specs["replica-1"].env["KEEL_MEMORY_CLIENT__URL"] == "http://127.0.0.1:18788"


def test_admin_token_is_created_once_and_private(tmp_path: Path) -> None:
    """The admin token file is made on first run with mode 0600 and kept on later runs."""
    path = ensure_admin_token(tmp_path / "data")
    first = path.read_text()
    assert len(first.strip()) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_admin_token(tmp_path / "data") == path
    assert path.read_text() == first


def test_memory_credentials_are_created_once_private_and_accepted_by_the_server(
    tmp_path: Path,
) -> None:
    """Agent token and tokens file are 0600, reused on later runs, and grant read/write on '*'."""
    data = tmp_path / "data"
    creds = ensure_memory_credentials(data)
    assert creds == MemoryCredentials(
        agent_token_file=data / "memory_agent_token", tokens_file=data / "memory_tokens.yaml"
    )
    token = creds.agent_token_file.read_text()
    tokens_text = creds.tokens_file.read_text()
    for path in (creds.agent_token_file, creds.tokens_file):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_memory_credentials(data) == creds
    assert creds.agent_token_file.read_text() == token
    assert creds.tokens_file.read_text() == tokens_text

    access = AccessControl(
        MemorySettings(tokens_file=creds.tokens_file, admin_token_file=None, secrets_dir=None)
    )
    principal = access.authenticate(f"Bearer {token.strip()}")
    assert principal.can_write("agent:default/user:alice")
    assert principal.can_read("agent:other/user:bob")
    assert not principal.admin


def test_memory_credentials_keep_operator_entries_and_regrant_a_new_token(
    tmp_path: Path,
) -> None:
    """A tokens file an operator extended keeps its entries; a replaced agent token is added."""
    data = tmp_path / "data"
    creds = ensure_memory_credentials(data)
    grants = yaml.safe_load(creds.tokens_file.read_text())["tokens"]
    grants["operator-token-0123456789"] = {"name": "ops", "read": ["agent:*"], "write": []}
    creds.tokens_file.write_text(yaml.safe_dump({"tokens": grants}))
    os.remove(creds.agent_token_file)

    ensure_memory_credentials(data)
    new_token = creds.agent_token_file.read_text().strip()
    kept = yaml.safe_load(creds.tokens_file.read_text())["tokens"]
    assert "operator-token-0123456789" in kept
    assert kept[new_token] == {"name": "keel-up-agents", "read": ["*"], "write": ["*"]}
    assert stat.S_IMODE(creds.tokens_file.stat().st_mode) == 0o600


def test_unreadable_tokens_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A tokens file that is not a mapping stops keel up with the file name and the fix."""
    data = tmp_path / "data"
    data.mkdir()
    (data / "memory_tokens.yaml").write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match=r"memory_tokens\.yaml.*delete it"):
        ensure_memory_credentials(data)


def test_tool_server_without_credentials_is_a_config_error(
    tmp_path: Path, model_file: Path
) -> None:
    """Planning the tool server without its token and key files fails and says how to make them."""
    settings = settings_for(tmp_path, model_file, replicas=1, memory=False)
    with pytest.raises(ConfigError, match="ensure_tool_credentials"):
        plan_services(
            settings, config_path=None, start_local_model=False, admin_token_file=tmp_path / "t"
        )


def test_tool_credentials_are_made_once_private_and_accepted_by_the_tool_server(
    tmp_path: Path,
) -> None:
    """The replicas' token, the tokens file and the key pair are 0600 and reused; the tool
    server accepts the token for every tool and verifies what the private key signs;
    operator entries in the tokens file are kept and a lost public key is made again."""
    data = tmp_path / "data"
    creds = ensure_tool_credentials(data)
    assert creds == tool_files(tmp_path)
    paths = (
        creds.agent_token_file,
        creds.tokens_file,
        creds.signing_key_file,
        creds.public_key_file,
    )
    first = [path.read_text() for path in paths]
    for path in paths:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert ensure_tool_credentials(data) == creds
    assert [path.read_text() for path in paths] == first

    token = creds.agent_token_file.read_text().strip()
    access = ToolAccess(
        settings=ToolServerSettings(tokens_file=creds.tokens_file), secrets=SecretResolver()
    )
    assert access.authenticate(f"Bearer {token}").may_call("memory_search")
    identity = IdentitySettings(
        signing_key_file=creds.signing_key_file, public_key_file=creds.public_key_file
    )
    signer = build_caller_signer(identity, secrets=SecretResolver())
    verifier = build_caller_verifier(identity, audience="agentkeel-tools", secrets=SecretResolver())
    assert signer is not None and verifier is not None
    signed = signer.sign(
        audience="agentkeel-tools",
        tool="memory_search",
        agent_id="default",
        user_id="alice",
        session_id="s",
        turn=1,
    )
    assert verifier.verify(signed, tool="memory_search").user_id == "alice"

    extended = yaml.safe_load(creds.tokens_file.read_text())
    extended["tokens"]["operator-token-" + "o" * 20] = {"name": "ops", "tools": ["calculator"]}
    creds.tokens_file.write_text(yaml.safe_dump(extended))
    creds.public_key_file.unlink()
    ensure_tool_credentials(data)
    assert "ops" in creds.tokens_file.read_text()
    assert creds.public_key_file.read_text() == first[3]


def test_port_in_use_is_a_config_error_naming_the_service(tmp_path: Path, model_file: Path) -> None:
    """A port that something already listens on stops keel up before any child starts."""
    settings = settings_for(tmp_path, model_file, replicas=1, memory=False, tools=False)
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
            tool_credentials=tool_files(tmp_path),
        )
        with pytest.raises(ConfigError, match=rf"Port {port} .*replica-1.*up\.base_port"):
            check_ports_free(specs, host=service_hosts(settings))


def test_busy_memory_port_names_the_memory_setting(
    tmp_path: Path, model_file: Path, credentials: MemoryCredentials
) -> None:
    """A busy memory port is reported for the memory service, with memory.port as the fix."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        settings = settings_for(tmp_path, model_file, replicas=1, extra={"memory": {"port": port}})
        specs = plan_services(
            settings,
            config_path=None,
            start_local_model=False,
            admin_token_file=tmp_path / "t",
            tool_credentials=tool_files(tmp_path),
            memory_credentials=credentials,
        )
        with pytest.raises(ConfigError, match=rf"Port {port} .*\(for memory\).*memory\.port"):
            check_ports_free(specs, host=service_hosts(settings))


def test_services_table_lists_every_service_with_url_and_log(
    tmp_path: Path, model_file: Path, credentials: MemoryCredentials
) -> None:
    """The table after start shows all five services, the MCP URL of the tool server, logs."""
    settings = settings_for(tmp_path, model_file, replicas=2)
    specs = plan_services(
        settings,
        config_path=None,
        start_local_model=True,
        admin_token_file=tmp_path / "t",
        tool_credentials=tool_files(tmp_path),
        memory_credentials=credentials,
    )
    statuses = [
        ServiceStatus(
            name=spec.name,
            state=ServiceState.READY,
            pid=1000 + index,
            restarts=0,
            log_path=tmp_path / "logs" / f"{spec.name}.log",
            port=spec.port,
        )
        for index, spec in enumerate(specs)
    ]
    out = Console(file=io.StringIO(), record=True, width=250)
    UpView(out=out, err=Console(file=io.StringIO())).print_services(
        statuses, specs, tmp_path / "data", tmp_path / "data" / "logs"
    )
    text = out.export_text()
    rows = {
        cells[0]: cells
        for line in text.splitlines()
        if len(cells := [c.strip() for c in line.split("│") if c.strip()]) == 4
    }
    assert rows[LOCAL_MODEL_SERVICE][1] == "http://127.0.0.1:18090"
    assert rows[MEMORY_SERVICE][1] == "http://127.0.0.1:18788"
    assert rows[TOOLS_SERVICE][1] == "http://127.0.0.1:19090/mcp"
    assert rows["replica-1"][1] == "http://127.0.0.1:18081"
    assert rows["replica-2"][1] == "http://127.0.0.1:18082"
    assert rows[MEMORY_SERVICE][3].endswith("logs/memory.log")
    assert "memory_agent_token" in text
    assert "tools_agent_token" in text
    assert "data/logs/<category>/<service>.jsonl" in text and "keel logs tail -f" in text


def test_up_flags_turn_memory_and_tools_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--no-memory, --no-tools and --no-router reach the plan: only the replicas are left to
    start; without them the router comes last."""
    planned: list[list[str]] = []

    def stop_before_starting(specs: list[ServiceSpec], *, host: dict[str, str]) -> None:
        planned.append([spec.name for spec in specs])
        raise ConfigError("stopped by the test before anything started")

    monkeypatch.setattr(up_module, "check_ports_free", stop_before_starting)
    args = ["up", "--data-dir", str(tmp_path / "d"), "--no-local-model", "--replicas", "1"]
    result = CliRunner().invoke(app, [*args, "--no-memory", "--no-tools", "--no-router"])
    assert result.exit_code == 2, result.output
    assert planned == [["replica-1"]]
    assert not (tmp_path / "d" / "memory_agent_token").exists()

    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2, result.output
    assert planned[-1] == [MEMORY_SERVICE, TOOLS_SERVICE, "replica-1", ROUTER_SERVICE]
    assert (tmp_path / "d" / "memory_tokens.yaml").exists()
    assert (tmp_path / "d" / "tools_tokens.yaml").exists()
    assert (tmp_path / "d" / "caller_signing_key").exists()


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


def test_each_keel_up_seeds_a_fresh_router_table(tmp_path: Path) -> None:
    """The last run's router.db (and its WAL files) move to router.previous.db, replacing
    an older copy, so the router seeds its table from the replicas that run now."""
    data = tmp_path / "data"
    data.mkdir()
    assert up_module.set_aside_router_table(data) is None
    (data / "router.previous.db").write_text("older")
    (data / "router.previous.db-shm").write_text("older shm")
    (data / "router.db").write_text("last run")
    (data / "router.db-wal").write_text("last wal")
    moved = up_module.set_aside_router_table(data)
    assert moved == data / "router.previous.db"
    assert not (data / "router.db").exists() and not (data / "router.db-wal").exists()
    assert (data / "router.previous.db").read_text() == "last run"
    assert (data / "router.previous.db-wal").read_text() == "last wal"
    assert not (data / "router.previous.db-shm").exists()


def test_keel_env_up_passes_the_environment_to_every_child(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`keel --env production up` reads the overlay and hands KEEL_ENV to every process it
    starts, so each loads the same overlay beside the config file; without --env none is set."""
    config = tmp_path / "keel.yaml"
    config.write_text("agent:\n  id: support\n")
    (tmp_path / "keel.production.yaml").write_text("agent:\n  version: v7\n")
    planned: list[list[ServiceSpec]] = []

    def stop_before_starting(specs: list[ServiceSpec], *, host: dict[str, str]) -> None:
        planned.append(specs)
        raise ConfigError("stopped by the test before anything started")

    monkeypatch.setattr(up_module, "check_ports_free", stop_before_starting)
    args = ["up", "--data-dir", str(tmp_path / "d"), "--no-local-model", "--replicas", "1"]
    result = CliRunner().invoke(app, ["--config", str(config), "--env", "production", *args])
    assert result.exit_code == 2, result.output
    assert {spec.name: spec.env.get("KEEL_ENV") for spec in planned[-1]} == {
        MEMORY_SERVICE: "production",
        TOOLS_SERVICE: "production",
        "replica-1": "production",
        ROUTER_SERVICE: "production",
    }
    result = CliRunner().invoke(app, ["--config", str(config), *args])
    assert not any("KEEL_ENV" in spec.env for spec in planned[-1])

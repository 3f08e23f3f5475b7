"""How commands find the local stack: flag, then setting, then stack file, then default."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from agentkeel.cli.stack import STACK_FILE, LocalStack, StackFile, read_stack_file
from agentkeel.cli.up import ensure_admin_token, ensure_memory_credentials
from agentkeel.config.layers import load_settings
from agentkeel.errors import ConfigError, SecretError

MEMORY = "http://127.0.0.1:18788"
REPLICAS = {f"replica-{n}": (f"http://127.0.0.1:{18080 + n}", 18080 + n) for n in (1, 2, 10)}


def stack_for(
    data_dir: Path, settings: dict[str, Any] | None = None, *, alive: bool | None = None
) -> LocalStack:
    """The stack as a command with these settings (and no flags) sees it."""
    loaded = load_settings(environ={}, overrides={"data_dir": str(data_dir), **(settings or {})})
    found = LocalStack.from_settings(loaded)
    if alive is None:
        return found
    return LocalStack(loaded=loaded, record=found.record, alive=alive)


def write_stack(data_dir: Path, *, state: str = "running", pid: int | None = None) -> StackFile:
    stack = StackFile(data_dir=data_dir, pid=os.getpid() if pid is None else pid)
    stack.write(services={"memory": (MEMORY, 18788), **REPLICAS}, state="starting")
    if state != "starting":
        stack.mark(state)  # type: ignore[arg-type]
    return stack


def test_keel_up_credentials_are_recorded_in_a_private_stack_file(tmp_path: Path) -> None:
    """The stack file is mode 0600 and names the services, keel up's pid and the credential
    files keel up made, relative to the data directory; a new state is recorded in place."""
    ensure_admin_token(tmp_path)
    ensure_memory_credentials(tmp_path)
    stack = write_stack(tmp_path, state="starting")
    path = tmp_path / STACK_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    data = json.loads(path.read_text())
    assert data["state"] == "starting" and data["pid"] == os.getpid()
    assert data["services"]["memory"] == {"url": MEMORY, "port": 18788}
    assert data["credentials"] == {
        "admin_token": "admin_token",
        "memory_agent_token": "memory_agent_token",
        "memory_tokens": "memory_tokens.yaml",
    }
    stack.mark("stopped")
    record = read_stack_file(tmp_path)
    assert record is not None and record.state == "stopped"
    assert record.started_at == data["started_at"]


def test_a_running_stack_gives_its_urls_and_tokens(tmp_path: Path) -> None:
    """With no flag and no setting, a live stack's memory URL, replicas (by number) and
    admin token are what commands use."""
    token = ensure_admin_token(tmp_path)
    write_stack(tmp_path)
    stack = stack_for(tmp_path)
    assert stack.running
    memory = stack.memory_url(None)
    assert memory.value == MEMORY and STACK_FILE in memory.source
    urls, _ = stack.replica_urls(None)
    assert urls == [REPLICAS[f"replica-{n}"][0] for n in (1, 2, 10)]
    assert stack.memory_token_file(None) == token
    assert stack.admin_token_file(None) == token


def test_a_flag_then_a_setting_win_over_the_stack_file(tmp_path: Path) -> None:
    """--url beats memory_client.url, which beats the stack; a set memory.port or
    up.base_port beats the stack too; a set token file beats the stack's."""
    ensure_admin_token(tmp_path)
    write_stack(tmp_path)
    own_token = tmp_path / "own_token"
    own_token.write_text("t")
    configured = stack_for(
        tmp_path,
        {
            "memory_client": {"url": "http://memory.internal:8788", "token_file": str(own_token)},
            "up": {"base_port": 9100, "replicas": 1},
        },
    )
    assert configured.memory_url("http://flag:1").value == "http://flag:1"
    assert configured.memory_url(None).value == "http://memory.internal:8788"
    assert configured.replica_urls(["http://flag:2"])[0] == ["http://flag:2"]
    assert configured.replica_urls(None)[0] == ["http://127.0.0.1:9100"]
    assert configured.memory_token_file(None) == own_token
    assert configured.memory_token_file(own_token) == own_token
    by_port = stack_for(tmp_path, {"memory": {"port": 9200}})
    assert by_port.memory_url(None).value == "http://127.0.0.1:9200"


def test_a_stopped_or_dead_stack_falls_back_to_defaults_but_keeps_its_tokens(
    tmp_path: Path,
) -> None:
    """URLs of a stack whose keel up stopped (or died) are not used; the default ones are,
    and say why. Its token files still are: keel up reuses them next time."""
    token = ensure_admin_token(tmp_path)
    write_stack(tmp_path, state="stopped")
    stopped = stack_for(tmp_path)
    assert not stopped.running
    memory = stopped.memory_url(None)
    assert memory.value == "http://127.0.0.1:8788" and "stopped" in memory.source
    assert stopped.replica_urls(None)[0] == ["http://127.0.0.1:8081", "http://127.0.0.1:8082"]
    assert stopped.memory_token_file(None) == token

    write_stack(tmp_path, state="running")
    dead = stack_for(tmp_path, alive=False)
    assert dead.memory_url(None).value == "http://127.0.0.1:8788"


def test_no_stack_file_uses_the_data_directory_and_the_defaults(tmp_path: Path) -> None:
    """A data directory without a stack file (an older keel up) still gives its tokens;
    the URLs are the defaults."""
    ensure_memory_credentials(tmp_path)
    stack = stack_for(tmp_path)
    assert stack.record is None
    assert stack.memory_token_file(None) == tmp_path / "memory_agent_token"
    assert "no keel up stack file" in stack.memory_url(None).source


def test_a_stack_without_a_memory_server_says_so(tmp_path: Path) -> None:
    """keel up --no-memory: the memory URL falls back to the default and says why."""
    StackFile(data_dir=tmp_path).write(services=dict(REPLICAS), state="running")
    source = stack_for(tmp_path).memory_url(None).source
    assert "runs no memory server" in source


def test_missing_tokens_are_an_error_listing_what_was_tried(tmp_path: Path) -> None:
    """No token anywhere: the error lists the files tried and names --token-file; a
    --token-file that does not exist is refused."""
    with pytest.raises(SecretError) as caught:
        stack_for(tmp_path / "empty").memory_token_file(None)
    message = caught.value.message
    assert str(tmp_path / "empty" / "admin_token") in message
    assert "/run/secrets/memory_admin_token" in message
    assert "--token-file" in message and "KEEL_DATA_DIR" in message
    with pytest.raises(SecretError, match="does not exist"):
        stack_for(tmp_path).memory_token_file(tmp_path / "nope")
    with pytest.raises(SecretError, match="no admin token file found"):
        stack_for(tmp_path / "empty").admin_token_file(None)


def test_a_broken_stack_file_is_a_config_error_naming_it(tmp_path: Path) -> None:
    """A stack file that is not JSON, or not a stack description, says which file and what
    to do."""
    (tmp_path / STACK_FILE).write_text("{not json")
    with pytest.raises(ConfigError, match=r"stack\.json.*Delete it"):
        stack_for(tmp_path)
    (tmp_path / STACK_FILE).write_text('{"state": "running"}')
    with pytest.raises(ConfigError, match="not a keel up stack description"):
        stack_for(tmp_path)


def test_credential_names_cannot_point_outside_the_data_directory(tmp_path: Path) -> None:
    """A credential the stack file names with a path is looked up under its usual name."""
    data = tmp_path / "data"
    token = ensure_admin_token(data)
    outside = tmp_path / "elsewhere"
    outside.write_text("x")
    write_stack(data)
    path = data / STACK_FILE
    record = json.loads(path.read_text())
    record["credentials"]["admin_token"] = "../elsewhere"
    path.write_text(json.dumps(record))
    assert stack_for(data).credential("admin_token") == token


def test_the_data_directory_comes_from_keel_data_dir_or_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """KEEL_DATA_DIR names the data directory; without it, ./.keel in the working directory."""
    write_stack(tmp_path / "elsewhere")
    monkeypatch.setenv("KEEL_DATA_DIR", str(tmp_path / "elsewhere"))
    assert LocalStack.from_settings(load_settings()).memory_url(None).value == MEMORY
    monkeypatch.delenv("KEEL_DATA_DIR")
    write_stack(tmp_path / "project" / ".keel")
    monkeypatch.chdir(tmp_path / "project")
    assert LocalStack.from_settings(load_settings()).memory_url(None).value == MEMORY


ROUTER = "http://127.0.0.1:18080"


def write_stack_with_router(data_dir: Path, *, pid: int | None = None) -> StackFile:
    stack = StackFile(data_dir=data_dir, pid=os.getpid() if pid is None else pid)
    stack.write(
        services={"memory": (MEMORY, 18788), **REPLICAS, "router": (ROUTER, 18080)},
        state="running",
        router_url=ROUTER,
        control_socket="control.sock",
    )
    return stack


def test_the_router_and_the_control_socket_are_recorded_and_found(tmp_path: Path) -> None:
    """stack.json names the router URL and the control socket (a name in the data dir);
    a live stack gives them to callers, the socket only while its file exists."""
    write_stack_with_router(tmp_path)
    data = json.loads((tmp_path / STACK_FILE).read_text())
    assert data["router"] == {"url": ROUTER}
    assert data["control_socket"] == "control.sock"
    stack = stack_for(tmp_path)
    assert stack.router_url() == ROUTER
    assert stack.control_socket() is None
    (tmp_path / "control.sock").write_text("")
    assert stack.control_socket() == (tmp_path / "control.sock").absolute()
    dead = stack_for(tmp_path, alive=False)
    assert dead.router_url() is None and dead.control_socket() is None


def test_a_control_socket_outside_the_data_dir_is_ignored(tmp_path: Path) -> None:
    """A stack file naming a path elsewhere for the socket is not followed."""
    stack = StackFile(data_dir=tmp_path, pid=os.getpid())
    stack.write(services={}, state="running", control_socket="../elsewhere.sock")
    (tmp_path.parent / "elsewhere.sock").write_text("")
    assert stack_for(tmp_path).control_socket() is None


def test_chat_goes_through_the_router_before_the_replicas(tmp_path: Path) -> None:
    """agent_urls: --url, then a set router.port, then the stack's router (even with
    up.base_port set), and without a router the replicas as before."""
    write_stack_with_router(tmp_path)
    assert stack_for(tmp_path).agent_urls(["http://x:1"]) == (["http://x:1"], "--url")
    urls, source = stack_for(tmp_path, {"up": {"base_port": 19000}}).agent_urls(None)
    assert urls == [ROUTER] and "router" in source
    urls, source = stack_for(tmp_path, {"router": {"port": 19080}}).agent_urls(None)
    assert (urls, source) == (["http://127.0.0.1:19080"], "router.host/port")
    other = tmp_path / "no-router"
    write_stack(other)
    urls, _ = stack_for(other).agent_urls(None)
    assert urls == [REPLICAS[f"replica-{n}"][0] for n in (1, 2, 10)]


def test_update_services_rewrites_only_the_services(tmp_path: Path) -> None:
    """Replicas started later are recorded in place; the router, socket and state stay."""
    stack = write_stack_with_router(tmp_path)
    stack.update_services({"agent-v2-1": ("http://127.0.0.1:18083", 18083)})
    record = read_stack_file(tmp_path)
    assert record is not None
    assert set(record.services) == {"agent-v2-1"}
    assert record.router is not None and record.router.url == ROUTER
    assert record.control_socket == "control.sock" and record.state == "running"


def test_replicas_keel_up_started_while_running_are_found_after_its_own(tmp_path: Path) -> None:
    """A rollout replaces the stack's replicas with ``agent-<version>-<n>`` ones; commands
    that talk to a replica directly (``keel golden run``) still find one."""
    stack = StackFile(data_dir=tmp_path, pid=os.getpid())
    stack.write(
        services={
            "memory": (MEMORY, 18788),
            "agent-v2-1": ("http://127.0.0.1:18201", 18201),
            "replica-2": ("http://127.0.0.1:18082", 18082),
        },
        state="running",
    )
    urls, _ = stack_for(tmp_path).replica_urls(None)
    assert urls == ["http://127.0.0.1:18082", "http://127.0.0.1:18201"]

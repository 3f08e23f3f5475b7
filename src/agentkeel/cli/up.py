"""``keel up``: the whole embedded stack on one machine, supervised until Ctrl-C.

Six kinds of service, started in dependency order, each once what it needs
answers its ready check:

===========  ============================================  ==============
service      command                                       depends on
===========  ============================================  ==============
local-model  llama.cpp server (port 8090)                  -
memory       ``keel serve memory`` (port 8788)             -
tools        ``keel serve tools`` (port 9090)              memory
replica-N    ``keel serve agent`` (ports 8081, 8082, ...)  all the above
router       ``keel serve router`` (port 8080)             the replicas
===========  ============================================  ==============

``--no-local-model``, ``--no-memory``, ``--no-tools`` and ``--no-router`` (or
``local_model.enabled``, ``up.memory``, ``up.tools``, ``up.router`` set to false)
leave a service out. The router has the replicas as backends of version
``agent.version`` (the stable one), its pins in ``<data_dir>/router.db`` and
the stack's ``admin_token`` for its admin API.

While it runs, ``keel up`` serves its control channel on the unix socket
``<data_dir>/control.sock`` (mode 0600: the file mode is the authentication;
``ops/control.py``): replicas of any version are started, listed, drained and
stopped there without a restart (``deploy/drivers/local.py`` is the client).
They are not added to the router; the rollout controller does that. State (the SQLite
``sessions.db``, ``memory/memory.db``), logs and the credentials live in the data
directory (``./.keel`` by default). Each child writes its JSON lines to
``logs/<category>/<service>.jsonl`` (``KEEL_LOGGING__DIR`` and a distinct
``KEEL_LOGGING__SERVICE_NAME``: ``memory``, ``tools``, ``replica-1``, ``router``),
and its stdout and stderr (warnings, errors, crashes) go to ``logs/<service>.log``;
``keel up``'s own lines (the control channel's audit lines, log retention) go to
``logs/<category>/keel-up.jsonl`` the same way. It runs ``keel logs prune`` at start
and every ``logging.prune_interval_h``.
The credentials are made on the first run with mode 0600 and reused after:

- ``admin_token``: the replicas' admin endpoints and the memory server's admin token;
- ``memory_agent_token``: what replicas and the tool server send to the memory server;
- ``memory_tokens.yaml``: the memory server's tokens file, granting that token read
  and write on every namespace;
- ``tools_agent_token``: the bearer token replicas send to the tool server;
- ``tools_tokens.yaml``: the tool server's tokens file, granting that token every tool;
- ``caller_signing_key`` / ``caller_signing_key.pub``: the Ed25519 key pair of caller
  assertions; replicas get the private key, the tool server only the public one.

``stack.json`` (``cli/stack.py``) describes the running stack: its services' URLs
and ports and those credential files, so the other commands find them.
``prometheus/targets.json`` lists the replicas running now (``file_sd`` format, rewritten
whenever one starts or stops, emptied at exit), which the ``prometheus.yml`` of
``keel render prometheus --target local`` reads.

Children get file paths through ``KEEL_*_FILE`` variables, never secret values.

Tools: the tool server serves the memory tools (``memory_search``,
``memory_store``) and no other built-in, because the replicas already serve
``calculator`` and ``current_time`` in-process and a tool name offered twice
stops a replica. The replicas reach it as the MCP server ``tools``.
``agent.tools`` stays the allowlist: an agent uses the memory tools only when
it lists them, e.g. ``agent.tools: [calculator, current_time, memory_search,
memory_store]``.

Your own wiring wins. When ``memory_client.url`` is set, your agents use that
memory server: ``keel up`` starts none, and its tool server's memory tools use
the same URL (and your ``memory_client`` token). When ``tools.servers`` is set,
your agents use exactly those MCP servers: ``keel up`` starts no tool server
(run ``keel serve tools`` yourself and list it there if you want it too).
A ``tools.server.builtins`` or ``tools.server.memory_url`` you set is kept.

Ctrl-C stops the replicas first: they drain (turns in flight finish) while the
router in front of them still relays their answers. Then the rest stops in
reverse order: the router, the tool server, then the memory and model servers
(which do not call each other); a second Ctrl-C kills everything at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.status import Status
from rich.table import Table

from agentkeel.assets.prometheus_config import write_replica_targets
from agentkeel.cli.config_cmd import cli_state, load_cli_settings
from agentkeel.cli.output import exits_on_keel_error, stderr_console, stdout_console
from agentkeel.cli.stack import StackFile
from agentkeel.config.settings import KeelSettings
from agentkeel.deploy.types import ReplicaSpec
from agentkeel.errors import ConfigError
from agentkeel.identity.keys import generate_key_pair, public_pem_of
from agentkeel.ops.control import CONTROL_SOCKET, ControlServer, create_control_app
from agentkeel.ops.local_model import (
    check_server_installed,
    local_model_command,
    local_model_ready_url,
)
from agentkeel.ops.log_retention import LogPruner
from agentkeel.ops.ports import bind_error, url_host
from agentkeel.ops.replicas import (
    LOG_NAME_ENV,
    ReplicaManager,
    ReplicaTemplate,
    replica_spec_env,
)
from agentkeel.ops.stable_release import stable_spec
from agentkeel.ops.stack_services import starts_memory_server, starts_tool_server
from agentkeel.ops.supervisor import ServiceSpec, ServiceStatus, Supervisor, SupervisorEvent
from agentkeel.telemetry.audit_file import install_audit_file
from agentkeel.telemetry.logging import file_sink
from agentkeel.web.auth import yaml_error_position

LOCAL_MODEL_SERVICE = "local-model"
MEMORY_SERVICE = "memory"
TOOLS_SERVICE = "tools"
ROUTER_SERVICE = "router"
ROUTER_PINS_FILE = "router.db"
ROUTER_PREVIOUS_FILE = "router.previous.db"
KEEL_UP_SERVICE = "keel-up"
"""The service name of ``keel up``'s own log lines and audit records."""
ADMIN_TOKEN_FILE = "admin_token"
MEMORY_AGENT_TOKEN_FILE = "memory_agent_token"
MEMORY_TOKENS_FILE = "memory_tokens.yaml"
TOOLS_AGENT_TOKEN_FILE = "tools_agent_token"
TOOLS_TOKENS_FILE = "tools_tokens.yaml"
SIGNING_KEY_FILE = "caller_signing_key"
PUBLIC_KEY_FILE = "caller_signing_key.pub"
_MEMORY_GRANT_NAME = "keel-up-agents"
_TOOLS_GRANT_NAME = "keel-up-replicas"
_MODEL_STOP_TIMEOUT_S = 10.0
# The memory and tool servers finish requests in flight and flush their stores.
_SERVER_STOP_TIMEOUT_S = 15.0


def ensure_admin_token(data_dir: Path) -> Path:
    """``<data_dir>/admin_token`` (mode 0600), created with a random token on first use."""
    return _ensure_token_file(data_dir / ADMIN_TOKEN_FILE)


@dataclass(frozen=True, slots=True)
class MemoryCredentials:
    """The files through which ``keel up``'s services authenticate to its memory server."""

    agent_token_file: Path
    """The bearer token replicas and the tool server send (``memory_client.token_file``)."""
    tokens_file: Path
    """The memory server's tokens file (``memory.tokens_file``) granting that token."""


def ensure_memory_credentials(data_dir: Path) -> MemoryCredentials:
    """``memory_agent_token`` and ``memory_tokens.yaml`` in ``data_dir`` (mode 0600).

    Made on first use and reused after. The tokens file grants the agent token
    read and write on every namespace (``"*"``); entries an operator added to it
    are kept. Raises ``ConfigError`` when the tokens file exists but cannot be read.
    """
    token_file = _ensure_token_file(data_dir / MEMORY_AGENT_TOKEN_FILE)
    token = token_file.read_text(encoding="utf-8").strip()
    tokens_file = data_dir / MEMORY_TOKENS_FILE
    grants = _read_grants(tokens_file, kind="memory") if tokens_file.exists() else {}
    if token not in grants:
        grants[token] = {"name": _MEMORY_GRANT_NAME, "read": ["*"], "write": ["*"]}
        _write_private(
            tokens_file,
            "# Written by keel up: memory server tokens (see memory.tokens_file).\n"
            + yaml.safe_dump({"tokens": grants}, sort_keys=False),
        )
    return MemoryCredentials(agent_token_file=token_file, tokens_file=tokens_file)


@dataclass(frozen=True, slots=True)
class ToolCredentials:
    """The files through which ``keel up``'s replicas authenticate to its tool server."""

    agent_token_file: Path
    """The bearer token replicas send (``tools.servers[].token_file``)."""
    tokens_file: Path
    """The tool server's tokens file (``tools.server.tokens_file``) granting that token."""
    signing_key_file: Path
    """The replicas' caller signing key (``identity.signing_key_file``)."""
    public_key_file: Path
    """Its public half, for the tool server (``identity.public_key_file``)."""


def ensure_tool_credentials(data_dir: Path) -> ToolCredentials:
    """``tools_agent_token``, ``tools_tokens.yaml`` and the caller key pair in ``data_dir``
    (mode 0600), made on first use and reused after.

    The tokens file grants the agent token every tool (``"*"``); entries an
    operator added are kept. A missing public key is made again from the private
    one. Raises ``ConfigError`` when the tokens file exists but cannot be read.
    """
    token_file = _ensure_token_file(data_dir / TOOLS_AGENT_TOKEN_FILE)
    token = token_file.read_text(encoding="utf-8").strip()
    tokens_file = data_dir / TOOLS_TOKENS_FILE
    grants = _read_grants(tokens_file, kind="tool server") if tokens_file.exists() else {}
    if token not in grants:
        grants[token] = {"name": _TOOLS_GRANT_NAME, "tools": ["*"]}
        _write_private(
            tokens_file,
            "# Written by keel up: tool server tokens (see tools.server.tokens_file).\n"
            + yaml.safe_dump({"tokens": grants}, sort_keys=False),
        )
    private, public = ensure_caller_key_pair(data_dir)
    return ToolCredentials(
        agent_token_file=token_file,
        tokens_file=tokens_file,
        signing_key_file=private,
        public_key_file=public,
    )


def ensure_caller_key_pair(data_dir: Path) -> tuple[Path, Path]:
    """The stack's Ed25519 key pair (``caller_signing_key`` and its ``.pub``, mode 0600),
    made on first use: replicas sign caller assertions for the tool server with it, and
    with auth on the router signs front-door assertions that replicas verify with the
    public half. A missing public key is made again from the private one."""
    data_dir.mkdir(parents=True, exist_ok=True)
    private, public = data_dir / SIGNING_KEY_FILE, data_dir / PUBLIC_KEY_FILE
    if not private.exists():
        pair = generate_key_pair()
        _write_private(private, pair.private_pem)
        _write_private(public, pair.public_pem)
    elif not public.exists():
        _write_private(public, public_pem_of(private.read_text(encoding="ascii"), source=private))
    return private, public


def _ensure_token_file(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_urlsafe(32) + "\n")
    return path


def _read_grants(path: Path, *, kind: str) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the {kind} tokens file {path} ({exc}). Fix it, or delete it "
            "and run keel up again to have it made afresh."
        ) from exc
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"The {kind} tokens file {path} is not valid YAML ({yaml_error_position(exc)}). "
            "Fix it, or delete it and run keel up again to have it made afresh."
        ) from None
    # The same two shapes the servers read: {tokens: {...}} or the mapping itself.
    if isinstance(loaded, dict) and set(loaded) == {"tokens"}:
        loaded = loaded["tokens"]
    grants = loaded if isinstance(loaded, dict) else None
    if not isinstance(grants, dict):
        raise ConfigError(
            f"The {kind} tokens file {path} must map each token to its grant. "
            "Fix it, or delete it and run keel up again to have it made afresh."
        )
    return dict(grants)


def _write_private(path: Path, text: str) -> None:
    """Replace ``path`` with ``text``, mode 0600, atomically (no half-written file)."""
    fd, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.chmod(temp, 0o600)
        os.replace(temp, path)
    except BaseException:
        Path(temp).unlink(missing_ok=True)
        raise


def auth_note(settings: KeelSettings) -> str:
    """What ``keel up`` says about authentication: off and how to turn it on, or where
    the API keys are and how to make the first one."""
    if not settings.auth.enabled:
        return (
            "[yellow]auth off[/]  anyone who can reach the router may call the agents; "
            "turn it on with keel up --auth (or auth.enabled: true)"
        )
    keys = settings.auth.api_keys_path(
        secrets_dir=settings.secrets_dir, data_dir=settings.data_dir.absolute()
    )
    return (
        f"[green]auth on[/]   the router checks API keys in {keys}; make one with: "
        "keel keys create --name me --org my-org --scope chat --scope sessions:read"
    )


def replica_name(index: int) -> str:
    return f"replica-{index}"


def memory_url(settings: KeelSettings) -> str:
    """Where ``keel up``'s memory server answers."""
    return f"http://{url_host(settings.memory.host)}:{settings.memory.port}"


def tools_mcp_url(settings: KeelSettings) -> str:
    """Where ``keel up``'s tool server answers MCP."""
    server = settings.tools.server
    return f"http://{url_host(server.host)}:{server.port}/mcp"


def skipped_service_notes(settings: KeelSettings) -> list[str]:
    """Why a service that is on in ``up`` is not started: the user's own wiring wins."""
    notes: list[str] = []
    if settings.up.memory and not starts_memory_server(settings):
        notes.append(
            f"memory: not started; memory_client.url sends agents to {settings.memory_client.url}"
        )
    if settings.up.tools and not starts_tool_server(settings):
        names = ", ".join(server.name for server in settings.tools.servers)
        notes.append(f"tools: not started; tools.servers lists the agents' MCP servers ({names})")
    return notes


@dataclass(frozen=True, slots=True)
class StackPlan:
    """What ``keel up`` runs: its children in start order, and how it starts replicas."""

    services: list[ServiceSpec]
    replica_template: ReplicaTemplate
    """The command and wiring of every replica, also those started later (control channel)."""
    replicas: dict[str, str]
    """keel up's own replicas: name → version (``agent.version``)."""


def plan_services(
    settings: KeelSettings,
    *,
    config_path: Path | None,
    start_local_model: bool,
    admin_token_file: Path,
    memory_credentials: MemoryCredentials | None = None,
    tool_credentials: ToolCredentials | None = None,
    python: str | None = None,
    caller_keys: tuple[Path, Path] | None = None,
) -> list[ServiceSpec]:
    """The children of ``keel up`` in start order (``plan_stack``'s services)."""
    return plan_stack(
        settings,
        config_path=config_path,
        start_local_model=start_local_model,
        admin_token_file=admin_token_file,
        memory_credentials=memory_credentials,
        tool_credentials=tool_credentials,
        python=python,
        caller_keys=caller_keys,
    ).services


def plan_stack(
    settings: KeelSettings,
    *,
    config_path: Path | None,
    start_local_model: bool,
    admin_token_file: Path,
    memory_credentials: MemoryCredentials | None = None,
    tool_credentials: ToolCredentials | None = None,
    python: str | None = None,
    stable: ReplicaSpec | None = None,
    caller_keys: tuple[Path, Path] | None = None,
    environment: str | None = None,
) -> StackPlan:
    """The children of ``keel up`` in start order: local model (optional), memory
    server, tool server, replicas, router (``up.router``, default on).

    The memory and tool servers run when ``starts_memory_server`` and
    ``starts_tool_server`` say so; the memory server needs
    ``memory_credentials`` (``ensure_memory_credentials``), the tool server
    ``tool_credentials`` (``ensure_tool_credentials``). Every child gets
    the data directory and the config file through ``KEEL_*`` variables, so it
    loads the same settings as ``keel up`` did, plus the wiring between the
    services where the config leaves it unset. The router gets the replicas as
    backends of version ``agent.version``, the stack's admin token and its pin
    table in ``<data_dir>/router.db``. ``stable`` (``stable_spec``) starts the
    replicas as the version a rollout promoted instead, with its entrypoint,
    config and env. ``environment`` (``keel --env``) reaches every child as
    ``KEEL_ENV``, so each reads the same overlay beside its config file.
    """
    interpreter = python or sys.executable
    version = stable.version if stable is not None else settings.agent.version
    stable_env = (
        replica_spec_env(stable, shared_env=shared_replica_env(settings))
        if stable is not None
        else {}
    )
    data_dir = settings.data_dir.absolute()
    base_env = {
        "PYTHONUNBUFFERED": "1",
        "KEEL_DATA_DIR": str(data_dir),
        "KEEL_LOGGING__DIR": str(settings.logging.directory(data_dir).absolute()),
    }
    if config_path is not None:
        base_env["KEEL_CONFIG"] = str(config_path.absolute())
    if environment is not None:
        base_env["KEEL_ENV"] = environment
    router_auth_env, replica_auth_env = _front_door_env(settings, caller_keys)
    if settings.auth.enabled:
        base_env["KEEL_AUTH__ENABLED"] = "true"  # `keel up --auth` is not in the config
    services: list[ServiceSpec] = []
    if start_local_model:
        model = settings.local_model
        services.append(
            ServiceSpec(
                name=LOCAL_MODEL_SERVICE,
                command=local_model_command(model, python=interpreter),
                env={"PYTHONUNBUFFERED": "1"},
                port=model.port,
                ready_url=local_model_ready_url(model),
                stop_timeout_s=_MODEL_STOP_TIMEOUT_S,
                ready_timeout_s=settings.up.ready_timeout_s,
            )
        )

    # How a client reaches keel up's memory server; empty when it is not started.
    memory_env: dict[str, str] = {}
    if starts_memory_server(settings):
        if memory_credentials is None:
            raise ConfigError(
                "keel up's memory server needs its credentials: call "
                "ensure_memory_credentials(data_dir) and pass them as memory_credentials."
            )
        memory = settings.memory
        services.append(
            _server_spec(
                MEMORY_SERVICE,
                settings,
                interpreter,
                host=memory.host,
                port=memory.port,
                env={
                    **base_env,
                    "KEEL_MEMORY__TOKENS_FILE": str(memory_credentials.tokens_file.absolute()),
                    "KEEL_MEMORY__ADMIN_TOKEN_FILE": str(admin_token_file.absolute()),
                },
            )
        )
        memory_env = {
            "KEEL_MEMORY_CLIENT__URL": memory_url(settings),
            "KEEL_MEMORY_CLIENT__TOKEN_FILE": str(memory_credentials.agent_token_file.absolute()),
        }

    # How a replica reaches keel up's tool server; empty when it is not started.
    replica_tools_env: dict[str, str] = {}
    if starts_tool_server(settings):
        if tool_credentials is None:
            raise ConfigError(
                "keel up's tool server needs its credentials: call "
                "ensure_tool_credentials(data_dir) and pass them as tool_credentials."
            )
        server = settings.tools.server
        tools_env = {
            **base_env,
            "KEEL_TOOLS__SERVER__TOKENS_FILE": str(tool_credentials.tokens_file.absolute()),
            "KEEL_IDENTITY__PUBLIC_KEY_FILE": str(tool_credentials.public_key_file.absolute()),
        }
        if "builtins" not in server.model_fields_set:
            tools_env["KEEL_TOOLS__SERVER__BUILTINS"] = "[]"
        if server.memory_url is None:
            if memory_env:
                tools_env.update(memory_env)
                tools_env["KEEL_TOOLS__SERVER__MEMORY_URL"] = memory_env["KEEL_MEMORY_CLIENT__URL"]
            elif settings.memory_client.url is not None:
                # The user's memory server, reached with the user's memory_client token.
                tools_env["KEEL_TOOLS__SERVER__MEMORY_URL"] = settings.memory_client.url
        services.append(
            _server_spec(
                TOOLS_SERVICE,
                settings,
                interpreter,
                host=server.host,
                port=server.port,
                env=tools_env,
                depends_on=(MEMORY_SERVICE,) if memory_env else (),
            )
        )
        mcp_server = {
            "name": TOOLS_SERVICE,
            "url": tools_mcp_url(settings),
            "token_file": str(tool_credentials.agent_token_file.absolute()),
            "audience": server.audience,
        }
        replica_tools_env = {
            "KEEL_TOOLS__SERVERS": json.dumps([mcp_server]),
            "KEEL_IDENTITY__SIGNING_KEY_FILE": str(tool_credentials.signing_key_file.absolute()),
        }

    template = ReplicaTemplate(
        interpreter=interpreter,
        host=settings.server.host,
        env={
            **base_env,
            **memory_env,
            **replica_tools_env,
            **replica_auth_env,
            "KEEL_SERVER__ADMIN_TOKEN_FILE": str(admin_token_file.absolute()),
        },
        depends_on=tuple(spec.name for spec in services),
        drain_timeout_s=settings.server.drain_timeout_s,
        ready_timeout_s=settings.up.ready_timeout_s,
    )
    replicas = [
        template.spec(replica_name(index), settings.up.base_port + index - 1, env=stable_env)
        for index in range(1, settings.up.replicas + 1)
    ]
    services += replicas
    if settings.up.router:
        services.append(
            _router_spec(
                settings,
                interpreter,
                env={**base_env, **router_auth_env},
                backends=[
                    (version, template.url(replica.port))
                    for replica in replicas
                    if replica.port is not None
                ],
                admin_token_file=admin_token_file,
                depends_on=tuple(replica.name for replica in replicas),
            )
        )
    return StackPlan(
        services=services,
        replica_template=template,
        replicas={replica.name: version for replica in replicas},
    )


def _front_door_env(
    settings: KeelSettings, caller_keys: tuple[Path, Path] | None
) -> tuple[dict[str, str], dict[str, str]]:
    """The router's and the replicas' key files for front-door assertions (auth on)."""
    if not settings.auth.enabled:
        return {}, {}
    if caller_keys is None:
        raise ConfigError(
            "With auth.enabled, keel up's router signs front-door assertions: call "
            "ensure_caller_key_pair(data_dir) and pass it as caller_keys."
        )
    private, public = caller_keys
    identity = settings.identity
    router_env: dict[str, str] = {}
    replica_env: dict[str, str] = {}
    if identity.signing_key_file is None:
        router_env["KEEL_IDENTITY__SIGNING_KEY_FILE"] = str(private.absolute())
    if identity.public_key_file is None:
        replica_env["KEEL_IDENTITY__PUBLIC_KEY_FILE"] = str(public.absolute())
    return router_env, replica_env


def _router_spec(
    settings: KeelSettings,
    interpreter: str,
    *,
    env: dict[str, str],
    backends: list[tuple[str, str]],
    admin_token_file: Path,
    depends_on: tuple[str, ...],
) -> ServiceSpec:
    """``keel serve router`` in front of the replicas: they are version ``agent.version``
    (the stable one), pins and the routing table in ``<data_dir>/router.db``."""
    router = settings.router
    command = _serve_command(interpreter, ROUTER_SERVICE, router.host, router.port)
    for version, url in backends:
        command += ["--backend", f"{version}={url}"]
    command += [
        "--pins",
        f"sqlite:///{settings.data_dir.absolute() / ROUTER_PINS_FILE}",
        "--admin-token-file",
        str(admin_token_file.absolute()),
    ]
    base = f"http://{url_host(router.host)}:{router.port}"
    return ServiceSpec(
        name=ROUTER_SERVICE,
        command=command,
        env={**env, LOG_NAME_ENV: ROUTER_SERVICE},
        port=router.port,
        health_url=f"{base}/health",
        ready_url=f"{base}/ready",
        depends_on=depends_on,
        stop_timeout_s=_SERVER_STOP_TIMEOUT_S,
        ready_timeout_s=settings.up.ready_timeout_s,
    )


def _serve_command(interpreter: str, service: str, host: str, port: int) -> list[str]:
    return [
        interpreter,
        "-m",
        "agentkeel.cli.main",
        "serve",
        service,
        "--host",
        host,
        "--port",
        str(port),
    ]


def _server_spec(
    name: str,
    settings: KeelSettings,
    interpreter: str,
    *,
    host: str,
    port: int,
    env: dict[str, str],
    depends_on: tuple[str, ...] = (),
) -> ServiceSpec:
    base = f"http://{url_host(host)}:{port}"
    return ServiceSpec(
        name=name,
        command=_serve_command(interpreter, name, host, port),
        env={**env, LOG_NAME_ENV: name},
        port=port,
        health_url=f"{base}/health",
        ready_url=f"{base}/ready",
        depends_on=depends_on,
        stop_timeout_s=_SERVER_STOP_TIMEOUT_S,
        ready_timeout_s=settings.up.ready_timeout_s,
    )


def service_hosts(settings: KeelSettings) -> dict[str, str]:
    """The address each of ``keel up``'s services listens on, by service name."""
    hosts = {replica_name(i): settings.server.host for i in range(1, settings.up.replicas + 1)}
    hosts[LOCAL_MODEL_SERVICE] = settings.local_model.host
    hosts[MEMORY_SERVICE] = settings.memory.host
    hosts[TOOLS_SERVICE] = settings.tools.server.host
    hosts[ROUTER_SERVICE] = settings.router.host
    return hosts


def check_ports_free(services: list[ServiceSpec], *, host: Mapping[str, str]) -> None:
    """Raise ``ConfigError`` naming the first port something else already listens on.

    Checked before starting: a ready check would otherwise be answered by the
    other process (often an earlier ``keel up``) instead of the new child.
    """
    for spec in services:
        if spec.port is None:
            continue
        address = host.get(spec.name, "127.0.0.1")
        problem = bind_error(address, spec.port)
        if problem is not None:
            raise ConfigError(
                f"Port {spec.port} on {address} (for {spec.name}) is already in use "
                f"({problem.strerror}). Stop whatever listens there (another keel up?) or "
                "choose other ports: up.base_port for replicas, router.port for the router, "
                "local_model.port for the model server, memory.port for the memory server, "
                "tools.server.port for the tool server."
            ) from problem


class UpView:
    """Renders supervisor events: a spinner while starting, one line per change after."""

    def __init__(self, *, out: Console, err: Console) -> None:
        self._out = out
        self._err = err
        self._status: Status | None = None

    def begin(self, text: str) -> None:
        self._status = self._err.status(text)
        self._status.start()

    def end(self) -> None:
        if self._status is not None:
            self._status.stop()
            self._status = None

    def note(self, markup: str) -> None:
        self._err.print(markup)

    def on_event(self, event: SupervisorEvent) -> None:
        name = event.service
        if event.kind == "starting":
            self._spin(f"Starting {name} (pid {event.pid})...")
        elif event.kind == "waiting":
            self._spin(f"Waiting for {name}: {event.detail}...")
        elif event.kind == "ready":
            self._err.print(f"[green]ready[/]     {name} (pid {event.pid})")
        elif event.kind == "exited":
            self._err.print(f"[yellow]exited[/]    {name} with code {event.returncode}")
        elif event.kind == "restarting":
            self._err.print(f"[yellow]restart[/]   {name} in {event.delay_s:.1f}s")
        elif event.kind == "stopping":
            what = "draining" if name.startswith(("replica-", "agent-")) else "stopping"
            self._err.print(f"[cyan]{what:<9}[/] {name} (pid {event.pid})")
        elif event.kind == "stopped":
            self._err.print(f"[dim]stopped   {name}[/]")
        elif event.kind == "killed":
            self._err.print(f"[red]killed[/]    {name}: it did not stop in time")

    def _spin(self, text: str) -> None:
        if self._status is not None:
            self._status.update(text)

    def print_services(
        self,
        statuses: list[ServiceStatus],
        specs: list[ServiceSpec],
        data_dir: Path,
        log_dir: Path | None = None,
    ) -> None:
        """The services table (name, URL, pid, stdout log), then where the JSON log files
        and the credentials are."""
        urls = {spec.name: service_url(spec) for spec in specs}
        table = Table(title="keel up", title_justify="left")
        table.add_column("service", no_wrap=True)
        table.add_column("url", no_wrap=True)
        table.add_column("pid", justify="right")
        table.add_column("log", overflow="fold")
        for status in statuses:
            table.add_row(
                status.name,
                urls.get(status.name, "-"),
                str(status.pid or "-"),
                _short(status.log_path),
            )
        self._out.print(table)
        if log_dir is not None:
            self._out.print(
                f"logs: {_short(log_dir)}/<category>/<service>.jsonl  (keel logs tail -f; "
                "keel logs trace <correlation id>)"
            )
        self._out.print(f"data dir: {data_dir}  admin token: {data_dir / ADMIN_TOKEN_FILE}")
        if MEMORY_SERVICE in urls:
            self._out.print(f"memory agent token: {data_dir / MEMORY_AGENT_TOKEN_FILE}")
        if TOOLS_SERVICE in urls:
            self._out.print(f"tools token: {data_dir / TOOLS_AGENT_TOKEN_FILE}")
        if ROUTER_SERVICE in urls:
            self._out.print(f"router: {urls[ROUTER_SERVICE]} (in front of the replicas)")
        self._out.print(f"control socket: {data_dir / CONTROL_SOCKET} (mode 0600)")
        self._out.print(
            "keel up is running. Talk to it with `keel chat`; "
            "Ctrl-C stops it (replicas drain first)."
        )


def _short(path: Path) -> str:
    """``path`` relative to the working directory when it is below it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def service_url(spec: ServiceSpec) -> str:
    """The URL a user talks to: the base URL, or the MCP endpoint for the tool server."""
    url = spec.ready_url or spec.health_url or ""
    for suffix in ("/v1/models", "/ready", "/health"):
        if url.endswith(suffix):
            url = url[: -len(suffix)]
            break
    if spec.name == TOOLS_SERVICE and url:
        return f"{url}/mcp"
    return url or "-"


async def _supervise(
    supervisor: Supervisor,
    control: ControlServer,
    view: UpView,
    on_started: Callable[[], None],
    pruner: LogPruner | None = None,
) -> None:
    loop = asyncio.get_running_loop()
    requests = 0

    def on_signal() -> None:
        nonlocal requests
        requests += 1
        view.end()
        if requests == 1:
            view.note(
                "[bold]Stopping:[/] replicas drain first (turns in flight finish; the router "
                "still relays them). Press Ctrl-C again to kill everything now."
            )
        else:
            view.note("[bold red]Killing every service now.[/]")
        supervisor.request_stop()

    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, on_signal)
    pruning = asyncio.create_task(pruner.run()) if pruner is not None else None
    try:
        await supervisor.start()
        if not supervisor.stop_requested:
            await control.start()
            on_started()
        await supervisor.wait_until_stop_requested()
    finally:
        if pruning is not None:
            pruning.cancel()
        # The control channel outlives the stop: it lists the replicas draining and
        # refuses new ones, so a rollout sees what happens.
        try:
            await supervisor.stop()
        finally:
            await control.stop()
            view.end()
            for signum in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(signum)


@contextlib.contextmanager
def _log_files(directory: Path, *, max_bytes: int) -> Iterator[None]:
    """keel up's own log lines (the control channel's audit lines among them) in the
    category files under ``directory``, as the service ``keel-up``, next to its
    children's: ``keel logs trace`` and ``tail`` show them too."""
    handler = file_sink(directory, service=KEEL_UP_SERVICE, max_bytes=max_bytes)
    root = logging.getLogger()
    level = root.level
    # The ready checks' HTTP client logs every poll at INFO.
    noisy = [logging.getLogger(name) for name in ("httpx", "httpcore")]
    noisy_levels = [logger.level for logger in noisy]
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    for logger in noisy:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        for logger, old_level in zip(noisy, noisy_levels, strict=True):
            logger.setLevel(old_level)
        handler.close()


@exits_on_keel_error
def up(
    ctx: typer.Context,
    replicas: Annotated[
        int | None,
        typer.Option(min=1, max=32, help="How many agent replicas (up.replicas, default 2)."),
    ] = None,
    no_local_model: Annotated[
        bool,
        typer.Option(
            "--no-local-model", help="Do not start the local model server (use remote models)."
        ),
    ] = False,
    no_memory: Annotated[
        bool, typer.Option("--no-memory", help="Do not start the memory server (up.memory).")
    ] = False,
    no_tools: Annotated[
        bool, typer.Option("--no-tools", help="Do not start the MCP tool server (up.tools).")
    ] = False,
    no_router: Annotated[
        bool,
        typer.Option(
            "--no-router", help="Do not start the router in front of the replicas (up.router)."
        ),
    ] = False,
    data_dir: Annotated[
        Path | None,
        typer.Option(
            "--data-dir",
            help="Where state, logs and credentials go; wins over the global keel --data-dir "
            "(default: KEEL_DATA_DIR, else ./.keel).",
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            help="keel.yaml to read; wins over the global keel --config and KEEL_CONFIG.",
        ),
    ] = None,
    auth: Annotated[
        bool,
        typer.Option(
            "--auth",
            help="Authenticate callers at the router with API keys or OIDC tokens "
            "(auth.enabled; default off).",
        ),
    ] = False,
) -> None:
    """Start the local model, memory and tool servers, two agent replicas and the router in
    front of them; supervise them.

    Replicas of other versions can be started and stopped while it runs, through the
    control socket <data dir>/control.sock (mode 0600). Ctrl-C stops the replicas first
    (they drain while the router still relays their turns), then the rest in reverse
    order; a second Ctrl-C kills everything at once.
    """
    up_flags: dict[str, Any] = {}
    if replicas is not None:
        up_flags["replicas"] = replicas
    if no_memory:
        up_flags["memory"] = False
    if no_tools:
        up_flags["tools"] = False
    if no_router:
        up_flags["router"] = False
    overrides: dict[str, Any] | None = {"up": up_flags} if up_flags else None
    if auth:
        overrides = {**(overrides or {}), "auth": {"enabled": True}}
    loaded = load_cli_settings(ctx, config_path=config, data_dir=data_dir, overrides=overrides)
    settings = loaded.settings
    config_path = config or cli_state(ctx).config_path
    data = settings.data_dir.absolute()
    # A rollout's outcome wins over keel.yaml's version; a rollout half-way stops us here.
    stable = stable_spec(data, configured=settings.agent.version)
    start_model = settings.local_model.enabled and not no_local_model
    if start_model:
        check_server_installed()
    token_file = ensure_admin_token(data)
    credentials = ensure_memory_credentials(data) if starts_memory_server(settings) else None
    tool_credentials = ensure_tool_credentials(data) if starts_tool_server(settings) else None
    caller_keys = ensure_caller_key_pair(data) if settings.auth.enabled else None
    plan = plan_stack(
        settings,
        config_path=config_path,
        start_local_model=start_model,
        admin_token_file=token_file,
        memory_credentials=credentials,
        tool_credentials=tool_credentials,
        stable=stable,
        caller_keys=caller_keys,
        environment=loaded.environment,
    )
    specs = plan.services
    check_ports_free(specs, host=service_hosts(settings))

    view = UpView(out=stdout_console(), err=stderr_console())
    for note in skipped_service_notes(settings):
        view.note(f"[yellow]note[/]      {note}")
    view.note(auth_note(settings))
    if stable is not None:
        view.note(
            f"[yellow]note[/]      the replicas run {stable.version}, the version the last "
            f"rollout made stable (agent.version in the config says {settings.agent.version})"
        )
    supervisor = Supervisor(
        services=specs, log_dir=settings.logging.output_directory(data), on_event=view.on_event
    )

    # What `keel chat`, `keel memory` and the others read to find this stack.
    stack = StackFile(data_dir=data)
    urls = {spec.name: service_url(spec) for spec in specs}

    def running_services() -> dict[str, tuple[str, int | None]]:
        return {
            status.name: (
                urls.get(status.name)
                or (plan.replica_template.url(status.port) if status.port else "-"),
                status.port,
            )
            for status in supervisor.status()
        }

    def replicas_changed() -> None:
        stack.update_services(running_services())
        write_replica_targets(data, manager.running_replicas())

    manager = ReplicaManager(
        supervisor=supervisor,
        template=plan.replica_template,
        replicas=plan.replicas,
        reserved_ports=[spec.port for spec in specs if spec.port is not None],
        shared_env=shared_replica_env(settings),
        environ=os.environ,
        on_change=replicas_changed,
    )
    control = ControlServer(app=create_control_app(manager), path=data / CONTROL_SOCKET)
    control.bind()
    if settings.up.router:
        set_aside_router_table(data)
    stack.write(
        services={spec.name: (service_url(spec), spec.port) for spec in specs},
        state="starting",
        router_url=urls.get(ROUTER_SERVICE),
        control_socket=CONTROL_SOCKET,
    )
    write_replica_targets(data, manager.running_replicas())

    log_dir = settings.logging.directory(data).absolute()
    pruner = LogPruner(
        directory=log_dir,
        settings=settings.logging,
        interval_s=settings.logging.prune_interval_h * 3600,
        clock=time.time,
        actor=KEEL_UP_SERVICE,
        output_directory=settings.logging.output_directory(data),
    )

    def on_started() -> None:
        view.end()
        stack.mark("running")
        view.print_services(supervisor.status(), specs, data, log_dir)

    view.begin("Starting keel services...")
    try:
        with _log_files(log_dir, max_bytes=settings.logging.max_file_bytes):
            # The control channel's replica starts and stops are audited from here.
            install_audit_file(data, service=KEEL_UP_SERVICE)
            _prune_at_start(pruner, view)
            asyncio.run(_supervise(supervisor, control, view, on_started, pruner))
    finally:
        stack.mark("stopped")
        # Prometheus stops scraping the replicas that are gone.
        write_replica_targets(data, [])
    stderr_console().print("[green]keel up stopped cleanly.[/]")


def _prune_at_start(pruner: LogPruner, view: UpView) -> None:
    """``keel logs prune`` before the children start; a failure is a note, not a stop."""
    try:
        report = pruner.prune()
    except OSError as exc:
        view.note(f"[yellow]note[/]      log retention skipped: {exc}")
        return
    if report.deleted_files:
        view.note(
            f"[dim]log retention: deleted {report.deleted_files} file(s) in "
            f"{_short(pruner.directory)}[/]"
        )


def set_aside_router_table(data_dir: Path) -> Path | None:
    """Move the last run's ``router.db`` (with its ``-wal``/``-shm`` files) to
    ``router.previous.db``, replacing an older one; returns where it went, if anywhere.

    A router keeps its routing table across its own restarts (what a rollout
    changed survives a crash), but a new ``keel up`` runs new replicas: the
    table of the last run may name replicas and a stable version that are gone,
    and the router would never be ready. So each ``keel up`` seeds a fresh
    table from its own replicas; pins are learned again from the version each
    session stored.
    """
    current = data_dir / ROUTER_PINS_FILE
    if not current.exists():
        return None
    previous = data_dir / ROUTER_PREVIOUS_FILE
    for suffix in ("", "-wal", "-shm"):
        Path(f"{previous}{suffix}").unlink(missing_ok=True)
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{current}{suffix}")
        if source.exists():
            os.replace(source, f"{previous}{suffix}")
    return previous


def shared_replica_env(settings: KeelSettings) -> dict[str, str]:
    """What a replica with a ``keel.yaml`` of its own must still share with the stack:
    the session store (so sessions move between versions' replicas) and ``redis_url``
    (shared rate limits)."""
    env = {"KEEL_STORE__URL": settings.store_url()}
    if settings.redis_url:
        env["KEEL_REDIS_URL"] = settings.redis_url
    return env

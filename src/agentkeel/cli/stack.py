"""The local stack that ``keel up`` runs, as every other command finds it.

``keel up`` describes what it runs in ``<data dir>/stack.json`` (mode 0600):
its own pid, each service's URL and port, and the credential files it made,
named relative to the data directory. The file says ``starting`` while the
services come up, ``running`` once they all answer, and ``stopped`` after
``keel up`` exits. Commands that talk to the stack (``keel chat``,
``keel memory``, ``keel snapshot``) read it the way ``kubectl`` reads its
kubeconfig, so they work without flags right after ``keel up``, on whatever
ports it was given::

    {"format": 1, "state": "running", "pid": 41200,
     "services": {"memory": {"url": "http://127.0.0.1:8788", "port": 8788}, ...},
     "router": {"url": "http://127.0.0.1:8080"}, "control_socket": "control.sock",
     "credentials": {"admin_token": "admin_token", ...}}

``router`` is the front door (``keel chat`` and ``keel eval`` talk to it);
``control_socket`` (a name in the data directory) is keel up's control
channel, which ``deploy.drivers.LocalDriver`` uses to start and stop replicas.
Replicas started through it are added to ``services`` while they run.

The data directory is the global ``--data-dir``, else ``KEEL_DATA_DIR``, else
``data_dir`` in ``keel.yaml``, else ``./.keel``. Every value is resolved in the
same order: the command's own flag, then a setting (``keel.yaml`` or a
``KEEL_*`` variable), then the stack file (URLs only while that ``keel up``
is still alive; credentials as long as their files exist), then the built-in
default. Each answer says where it came from, so an error can name it and the
flag that overrides it.

A credential ``keel up`` makes is one line in ``CREDENTIALS``: ``keel up``
records it when the file exists and ``LocalStack.credential`` finds it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agentkeel.config.layers import LoadedSettings
from agentkeel.errors import ConfigError, SecretError

STACK_FILE = "stack.json"
STACK_FORMAT = 1
DEFAULT_MEMORY_URL = "http://127.0.0.1:8788"
MEMORY_SERVICE = "memory"
REPLICA_PREFIX = "replica-"
# Replicas of other versions that keel up started while it ran (``ops/replicas.py``).
RUNTIME_REPLICA_PREFIX = "agent-"

StackState = Literal["starting", "running", "stopped"]


@dataclass(frozen=True, slots=True)
class CredentialSpec:
    """A credential file ``keel up`` keeps in the data directory."""

    key: str
    file_name: str
    purpose: str


CREDENTIALS: tuple[CredentialSpec, ...] = (
    CredentialSpec("admin_token", "admin_token", "replicas' and memory server's admin API"),
    CredentialSpec("memory_agent_token", "memory_agent_token", "every memory namespace"),
    CredentialSpec("memory_tokens", "memory_tokens.yaml", "the memory server's tokens file"),
    CredentialSpec("tools_agent_token", "tools_agent_token", "the tool server, every tool"),
    CredentialSpec("tools_tokens", "tools_tokens.yaml", "the tool server's tokens file"),
)
_CREDENTIAL_FILES = {spec.key: spec.file_name for spec in CREDENTIALS}


class StackService(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str
    port: int | None = None


class StackRouter(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str


class StackRecord(BaseModel):
    """The contents of ``stack.json``; unknown keys are ignored, so newer files still read."""

    model_config = ConfigDict(extra="ignore")

    format: int = STACK_FORMAT
    state: StackState
    pid: int
    started_at: float
    updated_at: float
    services: dict[str, StackService] = Field(default_factory=dict)
    credentials: dict[str, str] = Field(default_factory=dict)
    router: StackRouter | None = None
    control_socket: str | None = None


@dataclass(frozen=True, slots=True)
class Resolved:
    """A value and where it came from (for messages: "from the keel up stack in .keel")."""

    value: str
    source: str


# -- writing (keel up) --------------------------------------------------------------------


class StackFile:
    """``<data_dir>/stack.json``: written by ``keel up``, read by ``LocalStack``.

    >>> stack = StackFile(data_dir=Path(".keel"))
    >>> stack.write(services={"memory": ("http://127.0.0.1:8788", 8788)}, state="starting")
    >>> stack.mark("running")
    """

    def __init__(self, *, data_dir: Path, pid: int | None = None) -> None:
        self.data_dir = data_dir
        self.path = data_dir / STACK_FILE
        self._pid = os.getpid() if pid is None else pid
        self._record: StackRecord | None = None

    def write(
        self,
        *,
        services: Mapping[str, tuple[str, int | None]],
        state: StackState,
        router_url: str | None = None,
        control_socket: str | None = None,
    ) -> StackRecord:
        """Describe the services (name → (url, port)), the router, the control socket
        (a file name in the data directory) and the credential files that exist."""
        now = time.time()
        self._record = StackRecord(
            state=state,
            pid=self._pid,
            started_at=now,
            updated_at=now,
            services=_services(services),
            credentials={
                spec.key: spec.file_name
                for spec in CREDENTIALS
                if (self.data_dir / spec.file_name).is_file()
            },
            router=StackRouter(url=router_url) if router_url else None,
            control_socket=control_socket,
        )
        self._save(self._record)
        return self._record

    def update_services(self, services: Mapping[str, tuple[str, int | None]]) -> None:
        """Record the services running now (replicas come and go through the control channel)."""
        if self._record is None:
            return
        self._record = self._record.model_copy(
            update={"services": _services(services), "updated_at": time.time()}
        )
        self._save(self._record)

    def mark(self, state: StackState) -> None:
        """Record a new state (``running`` once ready, ``stopped`` at exit)."""
        if self._record is None:
            return
        self._record = self._record.model_copy(update={"state": state, "updated_at": time.time()})
        self._save(self._record)

    def _save(self, record: StackRecord) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        text = json.dumps(record.model_dump(mode="json"), indent=2) + "\n"
        fd, temp = tempfile.mkstemp(dir=self.data_dir, prefix=f".{STACK_FILE}.")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(text)
            os.chmod(temp, 0o600)
            os.replace(temp, self.path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise


def _services(services: Mapping[str, tuple[str, int | None]]) -> dict[str, StackService]:
    return {name: StackService(url=url, port=port) for name, (url, port) in services.items()}


def read_stack_file(data_dir: Path) -> StackRecord | None:
    """The stack file in ``data_dir``, or None when there is none.

    Raises ``ConfigError`` naming the file when it exists but cannot be read.
    """
    path = data_dir / STACK_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(
            f"Cannot read the stack file {path} ({exc.strerror}). Fix its permissions, or "
            "delete it; keel up writes it again when it starts."
        ) from exc
    try:
        return StackRecord.model_validate_json(text)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"] if exc.errors() else str(exc)
        raise ConfigError(
            f"The stack file {path} is not a keel up stack description ({problem}). "
            "Delete it; keel up writes it again when it starts."
        ) from exc


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# -- reading (every command that talks to the stack) ----------------------------------------


class LocalStack:
    """What a command knows about the local stack: settings, data dir and stack file.

    >>> stack = LocalStack.from_settings(load_cli_settings(ctx))
    >>> stack.memory_url(None).value          # the --url flag, if given, wins
    'http://127.0.0.1:8788'
    """

    def __init__(
        self, *, loaded: LoadedSettings, record: StackRecord | None, alive: bool | None = None
    ) -> None:
        self.loaded = loaded
        self.settings = loaded.settings
        self.data_dir = loaded.settings.data_dir
        self.record = record
        self._alive = alive

    @classmethod
    def from_settings(cls, loaded: LoadedSettings) -> LocalStack:
        return cls(loaded=loaded, record=read_stack_file(loaded.settings.data_dir))

    @property
    def stack_path(self) -> Path:
        return self.data_dir / STACK_FILE

    @property
    def running(self) -> bool:
        """A stack file says ``starting`` or ``running`` and its ``keel up`` is alive."""
        if self.record is None or self.record.state == "stopped":
            return False
        if self._alive is None:
            self._alive = _process_alive(self.record.pid)
        return self._alive

    def describe(self) -> str:
        """One phrase on what was found, for messages."""
        if self.record is None:
            return f"no keel up stack file at {self.stack_path}"
        if not self.running:
            return f"the keel up stack in {self.stack_path} is stopped"
        return f"the keel up stack in {self.stack_path}"

    def _configured(self, key: str) -> bool:
        return self.loaded.source_of(key) != "default"

    def _stack_url(self, name: str) -> str | None:
        if not self.running or self.record is None:
            return None
        service = self.record.services.get(name)
        return service.url if service is not None else None

    # -- URLs -------------------------------------------------------------------------------

    def memory_url(self, flag: str | None) -> Resolved:
        """``--url``, then ``memory_client.url`` or ``memory.host``/``memory.port`` when set,
        then the stack's memory server, then ``http://127.0.0.1:8788``."""
        if flag:
            return Resolved(flag, "--url")
        client_url = self.settings.memory_client.url
        if client_url:
            return Resolved(client_url, "memory_client.url")
        memory = self.settings.memory
        if self._configured("memory.port") or self._configured("memory.host"):
            return Resolved(f"http://{_url_host(memory.host)}:{memory.port}", "memory.host/port")
        from_stack = self._stack_url(MEMORY_SERVICE)
        if from_stack:
            return Resolved(from_stack, self.describe())
        reason = self.describe()
        if self.running:
            reason += " runs no memory server"
        return Resolved(DEFAULT_MEMORY_URL, f"the default ({reason})")

    def router_url(self) -> str | None:
        """The running stack's router, when ``keel up`` runs one."""
        if not self.running or self.record is None or self.record.router is None:
            return None
        return self.record.router.url

    def control_socket(self) -> Path | None:
        """The running stack's control socket (``LocalDriver``'s), when it exists."""
        if not self.running or self.record is None or not self.record.control_socket:
            return None
        name = self.record.control_socket
        if Path(name).name != name:
            # Only a plain name inside the data directory, never a path elsewhere.
            return None
        path = (self.data_dir / name).absolute()
        return path if path.exists() else None

    def agent_urls(self, flags: Sequence[str] | None) -> tuple[list[str], str]:
        """Where to talk to the agent: ``--url`` (repeatable), then ``router.host``/
        ``router.port`` when set, then the running stack's router, then the replicas
        (``replica_urls``). The front door comes before the replicas behind it, so a
        session stays on the version the router pinned it to."""
        if flags:
            return list(flags), "--url"
        router = self.settings.router
        configured = self._configured("router.port") or self._configured("router.host")
        if configured and self.settings.up.router:
            return [f"http://{_url_host(router.host)}:{router.port}"], "router.host/port"
        from_stack = self.router_url()
        if from_stack:
            return [from_stack], f"the router of {self.describe()}"
        return self.replica_urls(None)

    def replica_urls(self, flags: Sequence[str] | None) -> tuple[list[str], str]:
        """``--url`` (repeatable), then ``up.base_port``/``up.replicas`` when set, then the
        stack's replicas, then the default replicas (8081, 8082)."""
        if flags:
            return list(flags), "--url"
        if not (self._configured("up.base_port") or self._configured("up.replicas")):
            running = self._replicas_in_stack()
            if running:
                return running, self.describe()
            source = f"the default ({self.describe()})"
        else:
            source = "up.base_port/up.replicas"
        host = _url_host(self.settings.server.host)
        up = self.settings.up
        return [f"http://{host}:{up.base_port + index}" for index in range(up.replicas)], source

    def _replicas_in_stack(self) -> list[str]:
        if not self.running or self.record is None:
            return []
        replicas = [
            (name, service.url)
            for name, service in self.record.services.items()
            if name.startswith((REPLICA_PREFIX, RUNTIME_REPLICA_PREFIX))
        ]
        # The stack's own replicas first, in order, then those started while it runs.
        replicas.sort(
            key=lambda item: (
                not item[0].startswith(REPLICA_PREFIX),
                _replica_index(item[0]),
                item[0],
            )
        )
        return [url for _, url in replicas]

    # -- credentials ------------------------------------------------------------------------

    def credential(self, key: str) -> Path | None:
        """The data directory's credential file ``key`` (see ``CREDENTIALS``), if it exists.

        The stack file's name is used when it lists one, else the usual name: a
        data directory from before stack files (or one whose keel up stopped)
        still has its credentials.
        """
        name = (self.record.credentials.get(key) if self.record else None) or ""
        if not name or Path(name).name != name:
            # Only plain names inside the data directory, never a path elsewhere.
            name = _CREDENTIAL_FILES[key]
        path = self.data_dir / name
        return path if path.is_file() else None

    def memory_token_file(self, flag: Path | None) -> Path:
        """The bearer token for the memory server.

        ``--token-file``; then the files the settings name (``memory.admin_token_file``,
        ``memory_client.token_file``, a configured secrets directory); then the stack's
        ``admin_token`` and ``memory_agent_token``; then the default secrets directory.
        The admin token comes first each time: it may also read and write every namespace.
        """
        if flag is not None:
            if not flag.is_file():
                raise SecretError(
                    f"--token-file {flag} does not exist; pass a file that does, or leave "
                    "--token-file out to use the local stack's token."
                )
            return flag
        settings = self.settings
        memory = settings.memory
        client = settings.memory_client
        # (file, whether a setting names it) in the order they are tried.
        candidates: list[tuple[Path, bool]] = []
        if memory.admin_token_file is not None:
            candidates.append((memory.admin_token_file, True))
        if client.token_file is not None:
            candidates.append((client.token_file, True))
        if self._configured("memory.secrets_dir"):
            memory_secrets, memory_secrets_set = memory.secrets_dir, True
        else:
            memory_secrets, memory_secrets_set = (
                settings.secrets_dir,
                self._configured("secrets_dir"),
            )
        if memory_secrets is not None:
            candidates.append((memory_secrets / memory.admin_token_secret, memory_secrets_set))
        if settings.secrets_dir is not None:
            candidates.append(
                (settings.secrets_dir / client.token_secret, self._configured("secrets_dir"))
            )
        configured = [path for path, is_set in candidates if is_set]
        defaults = [path for path, is_set in candidates if not is_set]
        tried: list[str] = []
        for candidate in configured:
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
        for key in ("admin_token", "memory_agent_token"):
            found = self.credential(key)
            if found is not None:
                return found
            tried.append(str(self.data_dir / _CREDENTIAL_FILES[key]))
        for candidate in defaults:
            if candidate.is_file():
                return candidate
            tried.append(str(candidate))
        raise SecretError(
            f"no memory token file found (tried: {', '.join(tried)}; {self.describe()}). "
            "Start keel up (it writes its tokens into the data directory), point --data-dir "
            "or KEEL_DATA_DIR at the data directory it uses, or pass --token-file FILE: the "
            "admin token for snapshot, integrity and quarantine commands, or a namespace token."
        )

    def admin_token_file(self, flag: Path | None) -> Path:
        """The replicas' admin token: ``--token-file``, then ``server.admin_token_file``,
        then the stack's ``admin_token``, then the secrets directory's."""
        server = self.settings.server
        return self._admin_token(
            flag,
            server.admin_token_file,
            server.admin_token_secret,
            what="admin token file",
            hint="Start keel up, point --data-dir or KEEL_DATA_DIR at its data directory, or "
            "pass --token-file FILE.",
        )

    def router_admin_token_file(self, flag: Path | None) -> Path:
        """The router's admin token: ``--token-file``, then ``router.admin_token_file``,
        then the stack's ``admin_token``, then the secrets directory's."""
        router = self.settings.router
        return self._admin_token(
            flag,
            router.admin_token_file,
            router.admin_token_secret,
            what="router admin token file",
            hint="Pass --token-file FILE, set router.admin_token_file, or point --data-dir at "
            "the data directory of the keel up that runs the router.",
        )

    def _admin_token(
        self, flag: Path | None, setting: Path | None, secret_name: str, *, what: str, hint: str
    ) -> Path:
        if flag is not None:
            if not flag.is_file():
                raise SecretError(f"--token-file {flag} does not exist; pass a file that does.")
            return flag
        tried: list[str] = []
        if setting is not None:
            if setting.is_file():
                return setting
            tried.append(str(setting))
        found = self.credential("admin_token")
        if found is not None:
            return found
        tried.append(str(self.data_dir / _CREDENTIAL_FILES["admin_token"]))
        if self.settings.secrets_dir is not None:
            secret = self.settings.secrets_dir / secret_name
            if secret.is_file():
                return secret
            tried.append(str(secret))
        raise SecretError(f"no {what} found (tried: {', '.join(tried)}; {self.describe()}). {hint}")


def _replica_index(name: str) -> int:
    suffix = name.removeprefix(REPLICA_PREFIX)
    return int(suffix) if suffix.isdigit() else 0


def _url_host(host: str) -> str:
    # Listening on every interface still means connecting over loopback.
    return "127.0.0.1" if host in ("0.0.0.0", "") else host

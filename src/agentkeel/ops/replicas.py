"""Agent replicas of any version, started and stopped while ``keel up`` runs.

``ReplicaTemplate`` is the one way ``keel up`` starts a replica (the command,
the wiring to its store, memory and tool servers, the timeouts): its own
replicas at start and the ones asked for later through the control channel.
``ReplicaManager`` does the asking: a replica of version ``v2`` is that same
command with ``KEEL_AGENT__VERSION=v2``, the spec's entrypoint
(``KEEL_AGENT__ENTRYPOINT``), config file (``KEEL_CONFIG``) and extra
``KEEL_*`` values, on the next free port above the replicas already running,
named ``agent-v2-1``, ``agent-v2-2``, ... It always shares the stack's data
directory, session store and credentials: those variables are keel up's, and
a spec that tries to set them, or to pass a secret, is refused.

>>> manager = ReplicaManager(supervisor=supervisor, template=template,
...                          replicas={"replica-1": "v1"}, reserved_ports={8080, 8788})
>>> infos = await manager.start_replicas(ReplicaSpec(version="v2"), count=1)
>>> await manager.stop_replica(infos[0].name, drain=True)
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from agentkeel.config.layers import load_settings, looks_like_secret, secret_env_message
from agentkeel.config.settings import KeelSettings
from agentkeel.deploy.types import ReplicaInfo, ReplicaSpec
from agentkeel.errors import (
    ConfigError,
    Conflict,
    InvalidRequest,
    NotFound,
    Unavailable,
)
from agentkeel.ops.ports import bind_error, url_host
from agentkeel.ops.supervisor import ServiceSpec, ServiceState, Supervisor
from agentkeel.telemetry.audit import audit

__all__ = [
    "LOG_NAME_ENV",
    "MAX_REPLICAS_PER_START",
    "REPLICA_STOP_MARGIN_S",
    "ReplicaManager",
    "ReplicaTemplate",
    "check_extra_env",
    "replica_spec_env",
]

LOG_NAME_ENV = "KEEL_LOGGING__SERVICE_NAME"
"""The variable that names a child's log files (its supervisor name: one writer per file)."""

MAX_REPLICAS_PER_START = 16
REPLICA_STOP_MARGIN_S = 10.0
"""After a replica's drain: uvicorn's own graceful shutdown and closing the store."""

# A version is a metric label value and part of a service name: short and plain.
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
_ENTRYPOINT = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_ENV_KEY = re.compile(r"^KEEL_[A-Z0-9_]+$")
_MAX_ENV = 64
_MAX_ENV_VALUE = 8192
# Values that are secrets whatever their variable is called: key files, provider keys.
_SECRET_VALUE = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----|\b(?:sk-ant-|sk-|ghp_|xox[abp]-)[A-Za-z0-9_-]{20,}"
)
# What keel up decides for every replica (flags, spec fields, the shared wiring).
_RESERVED = frozenset(
    {
        "KEEL_CONFIG",
        "KEEL_DATA_DIR",
        "KEEL_AGENT__VERSION",
        "KEEL_AGENT__ENTRYPOINT",
        "KEEL_SERVER__HOST",
        "KEEL_SERVER__PORT",
        "KEEL_SERVER__REPLICA_ID",
        "KEEL_SERVER__ADMIN_TOKEN_FILE",
        "KEEL_STORE__URL",
        "KEEL_REDIS_URL",
        "KEEL_LOGGING__DIR",
        LOG_NAME_ENV,
    }
)

ReplicaState = Literal["starting", "ready", "draining", "stopped", "failed"]

_STATES: dict[ServiceState, ReplicaState] = {
    ServiceState.PENDING: "starting",
    ServiceState.STARTING: "starting",
    ServiceState.BACKOFF: "starting",
    ServiceState.READY: "ready",
    ServiceState.STOPPING: "draining",
    ServiceState.STOPPED: "stopped",
    ServiceState.FAILED: "failed",
}


@dataclass(frozen=True, slots=True)
class ReplicaTemplate:
    """How ``keel up`` starts an agent replica: ``keel serve agent`` with the stack's wiring.

    The command is ``interpreter``, ``program``, then ``--host`` and ``--port``.
    ``env`` holds what every replica gets (data dir, log dir, config file, admin
    token, memory and tool credentials); ``depends_on`` the services replicas need.
    Each replica's log files carry its name (``LOG_NAME_ENV``).
    """

    interpreter: str
    host: str
    env: Mapping[str, str]
    program: tuple[str, ...] = ("-m", "agentkeel.cli.main", "serve", "agent")
    depends_on: tuple[str, ...] = ()
    drain_timeout_s: float = 30.0
    ready_timeout_s: float = 120.0

    def url(self, port: int) -> str:
        return f"http://{url_host(self.host)}:{port}"

    def spec(
        self,
        name: str,
        port: int,
        *,
        env: Mapping[str, str] | None = None,
        drain_timeout_s: float | None = None,
    ) -> ServiceSpec:
        """The replica ``name`` on ``port``; ``env`` is added to the stack's wiring."""
        drain = self.drain_timeout_s if drain_timeout_s is None else drain_timeout_s
        base = self.url(port)
        return ServiceSpec(
            name=name,
            command=[self.interpreter, *self.program, "--host", self.host, "--port", str(port)],
            env={**self.env, "KEEL_SERVER__REPLICA_ID": name, **(env or {}), LOG_NAME_ENV: name},
            port=port,
            health_url=f"{base}/health",
            ready_url=f"{base}/ready",
            depends_on=self.depends_on,
            stop_timeout_s=drain + REPLICA_STOP_MARGIN_S,
            ready_timeout_s=self.ready_timeout_s,
            stop_first=True,
        )


def check_extra_env(env: Mapping[str, str]) -> None:
    """Refuse extra replica variables that are not plain ``KEEL_*`` settings.

    Raises ``InvalidRequest`` for a key that does not start with ``KEEL_``, one
    keel up sets itself (``_RESERVED``: the spec's own fields or the wiring the
    replicas share), one that names no settings section, and anything that
    looks like a secret (by name or by value): secrets go in files.
    """
    if len(env) > _MAX_ENV:
        raise InvalidRequest(f"env has {len(env)} variables; at most {_MAX_ENV} are accepted.")
    sections = set(KeelSettings.model_fields)
    for key, value in env.items():
        if not _ENV_KEY.match(key):
            raise InvalidRequest(
                f"env key {key!r} is refused: only KEEL_* settings (upper case, e.g. "
                "KEEL_AGENT__SYSTEM_PROMPT) may be passed to a replica."
            )
        if key in _RESERVED:
            raise InvalidRequest(
                f"env key {key} is set by keel up for every replica (the version, entrypoint "
                "and config have fields of their own; store, data dir and credentials are "
                "the stack's)."
            )
        if looks_like_secret(key):
            raise InvalidRequest(secret_env_message(key))
        section = key.removeprefix("KEEL_").split("__", 1)[0].lower()
        if section not in sections:
            raise InvalidRequest(
                f"env key {key} names no setting ({section!r} is not a section of keel.yaml; "
                f"sections: {', '.join(sorted(sections))})."
            )
        if len(value) > _MAX_ENV_VALUE or _SECRET_VALUE.search(value):
            raise InvalidRequest(
                f"env key {key}: the value looks like a secret or is over {_MAX_ENV_VALUE} "
                "characters. Secrets are read from files only: put it in a file and pass the "
                "*_FILE setting that names it."
            )


def replica_spec_env(spec: ReplicaSpec, *, shared_env: Mapping[str, str]) -> dict[str, str]:
    """The variables a replica of ``spec`` gets on top of the stack's wiring (checked).

    ``shared_env`` is added when the spec has a config file of its own (the session
    store and ``redis_url`` stay the stack's). ``InvalidRequest`` for a bad spec.
    """
    if not _VERSION.match(spec.version):
        raise InvalidRequest(
            f"version {spec.version!r} is not a version name: 1 to 63 letters, digits, "
            "'.', '_' or '-', starting with a letter or digit (e.g. v2)."
        )
    env: dict[str, str] = {"KEEL_AGENT__VERSION": spec.version}
    if spec.entrypoint is not None:
        if not _ENTRYPOINT.match(spec.entrypoint):
            raise InvalidRequest(
                f"entrypoint {spec.entrypoint!r} is not package.module:object "
                "(e.g. myapp.agents:support)."
            )
        env["KEEL_AGENT__ENTRYPOINT"] = spec.entrypoint
    if spec.config is not None:
        config = Path(spec.config)
        if not config.is_absolute():
            raise InvalidRequest(
                f"config {spec.config!r} must be an absolute path (keel up may run in "
                "another directory than the caller)."
            )
        if not config.is_file():
            raise InvalidRequest(f"config {spec.config} does not exist or is not a file.")
        env["KEEL_CONFIG"] = str(config)
        # A version's own keel.yaml still serves the stack's sessions.
        env.update(shared_env)
    check_extra_env(spec.env)
    env.update(spec.env)
    return env


@dataclass(slots=True)
class _Replica:
    name: str
    version: str
    port: int
    url: str


@dataclass(slots=True)
class _Claims:
    names: set[str] = field(default_factory=set)
    ports: set[int] = field(default_factory=set)


class ReplicaManager:
    """Starts, lists and stops agent replicas of any version in a running supervisor
    (the ``ReplicaDriver`` of ``keel up`` itself; the control channel serves it).

    ``replicas`` names the replicas keel up started itself (name → version),
    so they can be listed and stopped too (a rolling release replaces them).
    ``shared_env`` is what a replica with a config file of its own must still
    share with the stack (the session store URL, ``redis_url``). ``environ`` is
    the supervisor's environment, used to check a new replica's settings
    before it starts. ``on_change`` is called after replicas started or stopped.
    """

    def __init__(
        self,
        *,
        supervisor: Supervisor,
        template: ReplicaTemplate,
        replicas: Mapping[str, str],
        reserved_ports: Collection[int] = (),
        shared_env: Mapping[str, str] | None = None,
        environ: Mapping[str, str] | None = None,
        port_free: Callable[[str, int], bool] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self._supervisor = supervisor
        self._template = template
        self._replicas: dict[str, _Replica] = {}
        for name, version in replicas.items():
            status = supervisor.service_status(name)
            if status is None or status.port is None:
                raise ConfigError(f"Replica '{name}' is not a service of this supervisor.")
            self._replicas[name] = _Replica(name, version, status.port, template.url(status.port))
        self._reserved = set(reserved_ports)
        self._shared_env = dict(shared_env or {})
        self._environ = {k: v for k, v in (environ or {}).items() if k.startswith("KEEL_")}
        self._port_free = port_free or (lambda host, port: bind_error(host, port) is None)
        self._on_change = on_change
        self._claims = _Claims()
        self._stopping: set[str] = set()

    async def list_replicas(self) -> list[ReplicaInfo]:
        """Every replica the supervisor still runs, in start order."""
        return self.running_replicas()

    def running_replicas(self) -> list[ReplicaInfo]:
        """``list_replicas`` for a caller that cannot await (an ``on_change`` callback)."""
        infos: list[ReplicaInfo] = []
        for status in self._supervisor.status():
            replica = self._replicas.get(status.name)
            if replica is not None:
                infos.append(self._info(replica, _STATES[status.state]))
        return infos

    async def start_replicas(self, spec: ReplicaSpec, count: int) -> list[ReplicaInfo]:
        """Start ``count`` replicas of ``spec.version``; return once every one is ready.

        All or nothing: when one is not ready, the others of this call are
        stopped again and the error (``Unavailable``) names its log file.
        Raises ``InvalidRequest`` for a bad spec before anything starts.
        """
        env, settings = self._replica_env(spec, count)
        # Claimed before the first await, so concurrent calls get other names and ports.
        planned = [self._claim(spec.version) for _ in range(count)]
        try:
            specs = [
                self._template.spec(
                    name, port, env=env, drain_timeout_s=settings.server.drain_timeout_s
                )
                for name, port in planned
            ]
            for name, port in planned:
                self._replicas[name] = _Replica(name, spec.version, port, self._template.url(port))
            results = await asyncio.gather(
                *(self._supervisor.add(one) for one in specs), return_exceptions=True
            )
        finally:
            for name, port in planned:
                self._claims.names.discard(name)
                self._claims.ports.discard(port)
        failures = [result for result in results if isinstance(result, BaseException)]
        started = [
            name
            for (name, _), result in zip(planned, results, strict=True)
            if not isinstance(result, BaseException)
        ]
        if failures:
            for name in started:
                await self._supervisor.remove(name, drain=True)
            for name, _ in planned:
                self._replicas.pop(name, None)
            self._changed()
            audit(
                "stack.replicas.start",
                actor="control_socket",
                outcome="failed",
                version=spec.version,
                count=count,
            )
            raise failures[0]
        audit(
            "stack.replicas.start",
            actor="control_socket",
            version=spec.version,
            count=count,
            replicas=",".join(started),
        )
        self._changed()
        return [self._info(self._replicas[name], "ready") for name in started]

    async def stop_replica(self, name: str, *, drain: bool = True) -> None:
        """Stop the replica ``name`` (``drain``: SIGTERM, its turns in flight finish; else
        SIGKILL) and forget it; returns once it has exited. ``NotFound`` for a name that
        is no replica, ``Conflict`` while it is already being stopped."""
        replica = self._replicas.get(name)
        if replica is None or self._supervisor.service_status(name) is None:
            known = ", ".join(info.name for info in await self.list_replicas()) or "none"
            raise NotFound(f"No replica named {name!r}; replicas: {known}.")
        if name in self._stopping:
            raise Conflict(f"Replica {name!r} is already being stopped.")
        self._stopping.add(name)
        try:
            await self._supervisor.remove(name, drain=drain)
        finally:
            self._stopping.discard(name)
            self._replicas.pop(name, None)
            self._changed()
        audit("stack.replicas.stop", actor="control_socket", replica=name, drain=drain)

    # -- internals ----------------------------------------------------------------------

    def _info(self, replica: _Replica, state: ReplicaState) -> ReplicaInfo:
        return ReplicaInfo(name=replica.name, version=replica.version, url=replica.url, state=state)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _replica_env(self, spec: ReplicaSpec, count: int) -> tuple[dict[str, str], KeelSettings]:
        """The variables a replica of ``spec`` gets on top of the template's, and the
        settings it will load (checked now, so a bad spec is a 422, not a crash loop)."""
        if not 1 <= count <= MAX_REPLICAS_PER_START:
            raise InvalidRequest(
                f"count must be between 1 and {MAX_REPLICAS_PER_START}, got {count}."
            )
        env = replica_spec_env(spec, shared_env=self._shared_env)
        child = {**self._environ, **self._template.env, **env}
        try:
            settings = load_settings(environ=child).settings
        except ConfigError as exc:
            raise InvalidRequest(
                f"The settings of a {spec.version} replica do not load: {exc.message}"
            ) from exc
        return env, settings

    def _claim(self, version: str) -> tuple[str, int]:
        running = {status.name: status.port for status in self._supervisor.status()}
        taken = running.keys() | self._claims.names
        number = 1
        while f"agent-{version}-{number}" in taken:
            number += 1
        name = f"agent-{version}-{number}"
        used = {port for port in running.values() if port is not None}
        used |= self._reserved | self._claims.ports
        replica_ports = [replica.port for replica in self._replicas.values()]
        port = max([*replica_ports, *self._claims.ports], default=8080) + 1
        while port in used or not self._port_free(self._template.host, port):
            port += 1
            if port > 65535:
                raise Unavailable(
                    "No free port is left above the running replicas for a new one; stop a "
                    "replica or free some ports."
                )
        self._claims.names.add(name)
        self._claims.ports.add(port)
        return name, port

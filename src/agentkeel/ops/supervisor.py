"""Runs keel's child processes on one machine, the way ``keel up`` needs them.

- Health-gated start in dependency order (compose's ``service_healthy``): a
  service starts only once everything it ``depends_on`` answers its ready URL.
  Services with no dependency between them start together.
- A child that exits while supervised is restarted after an exponential
  backoff (capped); the backoff resets once a child has stayed up for
  ``reset_after_s``.
- Each child's stdout and stderr are appended to ``<log_dir>/<name>.log``.
- Stop is the start order reversed: replicas get SIGTERM first and drain
  (in-flight turns finish) before the model server they call is stopped.
  A service marked ``stop_first`` (the replicas) is stopped before every
  other one, so a router started after the replicas still relays the turns
  they finish while draining. A child still running after its
  ``stop_timeout_s`` gets SIGKILL.
- While running, services can be added (``add``: started, health-gated, then
  supervised like the others) and removed (``remove``: SIGTERM, so a replica
  drains, then forgotten) one at a time, without touching the rest.

Children run in their own session, so a Ctrl-C in the terminal reaches only the
supervisor, which then stops them in order. On Linux they also get SIGTERM
should the supervisor die without stopping them.

The clock is passed in (``agentkeel.resilience.clock``) so backoff and timeouts
are testable without waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import enum
import graphlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import httpx

from agentkeel.errors import ConfigError, NotFound, Unavailable
from agentkeel.resilience.clock import Clock, SystemClock

T = TypeVar("T")

Probe = Callable[["ServiceSpec"], Awaitable[bool]]
"""Answers whether a service is ready; the default GETs its ready or health URL."""

EventKind = Literal[
    "starting", "waiting", "ready", "exited", "restarting", "stopping", "stopped", "killed"
]

_LOG_TAIL_LINES = 15
_PR_SET_PDEATHSIG = 1


@dataclass(frozen=True, slots=True)
class ServiceSpec:
    """One child process and how to tell that it is ready.

    ``env`` is added to the supervisor's own environment. Readiness is a 200
    from ``ready_url``, else from ``health_url``, else an open TCP ``port``;
    with none of these a service counts as ready once started.
    """

    name: str
    command: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    port: int | None = None
    health_url: str | None = None
    ready_url: str | None = None
    depends_on: Sequence[str] = ()
    stop_timeout_s: float = 10.0
    """How long a child may take to exit after SIGTERM (a replica's drain) before SIGKILL."""
    ready_timeout_s: float = 120.0
    cwd: Path | None = None
    stop_first: bool = False
    """Stopped in the first wave, before every other service whatever the dependencies
    (replicas: they drain while what stands in front of them still relays their answers)."""


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """Exponential backoff between restarts of a crashing child.

    >>> [RestartPolicy().delay(n) for n in (1, 2, 3)]
    [0.5, 1.0, 2.0]
    """

    initial_backoff_s: float = 0.5
    multiplier: float = 2.0
    max_backoff_s: float = 30.0
    reset_after_s: float = 60.0
    """A child that stayed up this long counts as healthy again: its next crash
    starts the backoff from the beginning."""

    def delay(self, failures: int) -> float:
        """The wait before restart number ``failures`` (1 for the first)."""
        exponent = max(failures - 1, 0)
        return float(min(self.initial_backoff_s * self.multiplier**exponent, self.max_backoff_s))


class ServiceState(enum.StrEnum):
    PENDING = "pending"
    STARTING = "starting"
    READY = "ready"
    BACKOFF = "backoff"
    STOPPING = "stopping"
    STOPPED = "stopped"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class SupervisorEvent:
    """Something that happened to a child; ``keel up`` renders these."""

    kind: EventKind
    service: str
    pid: int | None = None
    returncode: int | None = None
    delay_s: float | None = None
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    state: ServiceState
    pid: int | None
    restarts: int
    log_path: Path
    port: int | None


@dataclass(slots=True)
class _Service:
    spec: ServiceSpec
    log_path: Path
    state: ServiceState = ServiceState.PENDING
    proc: asyncio.subprocess.Process | None = None
    ready_at: float = 0.0
    failures: int = 0
    restarts: int = 0
    monitor: asyncio.Task[None] | None = None
    retiring: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when this one service is being removed: its monitor restarts it no more."""
    stopping: asyncio.Future[None] | None = None
    """The SIGTERM-then-wait in progress, shared by everyone who stops this service."""


class Supervisor:
    """Starts, watches and stops a set of child processes.

    >>> supervisor = Supervisor(services=[model, replica], log_dir=Path(".keel/logs"))
    >>> await supervisor.start()        # health-gated, dependency order
    >>> await supervisor.wait_until_stop_requested()
    >>> await supervisor.stop()         # reverse order, graceful
    """

    def __init__(
        self,
        *,
        services: Sequence[ServiceSpec],
        log_dir: Path,
        clock: Clock | None = None,
        restart: RestartPolicy | None = None,
        poll_interval_s: float = 0.2,
        probe: Probe | None = None,
        on_event: Callable[[SupervisorEvent], None] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._levels = dependency_levels(services)
        self._services = {
            spec.name: _Service(spec, log_dir / f"{spec.name}.log") for spec in services
        }
        # Services added while running, in the order they were added.
        self._added: list[str] = []
        self._log_dir = log_dir
        self._clock: Clock = clock or SystemClock()
        self._restart = restart or RestartPolicy()
        self._poll_interval_s = poll_interval_s
        self._probe = probe
        self._on_event = on_event
        self._environ = dict(os.environ if environ is None else environ)
        self._stop_requested: asyncio.Event | None = None
        self._http: httpx.AsyncClient | None = None

    # -- public -------------------------------------------------------------

    def status(self) -> list[ServiceStatus]:
        """Each service's state, pid, restart count and log file, in start order."""
        return [self._status_of(self._services[name]) for name in self._order()]

    def service_status(self, name: str) -> ServiceStatus | None:
        """One service's status, or None when there is no service of that name."""
        return next((status for status in self.status() if status.name == name), None)

    async def start(self) -> None:
        """Start every service, one dependency level at a time, each level health-gated.

        Raises ``Unavailable`` (naming the service and quoting its log) when a
        child exits or is not ready in time; whatever had started is stopped.
        Returns early, without error, when a stop is requested meanwhile.
        """
        self._log_dir.mkdir(parents=True, exist_ok=True)
        try:
            for level in self._levels:
                if self._halting:
                    return
                group = [self._services[name] for name in level]
                for svc in group:
                    await self._spawn(svc)
                results = await asyncio.gather(*(self._wait_ready(svc) for svc in group))
                for svc, problem in zip(group, results, strict=True):
                    if problem is not None and not self._stop_event().is_set():
                        raise Unavailable(self._explain_failure(svc, problem))
            for svc in self._services.values():
                if svc.state is ServiceState.READY:
                    svc.monitor = asyncio.create_task(self._monitor(svc))
        except BaseException:
            await self.stop()
            raise

    def request_stop(self) -> None:
        """Ask for a graceful stop (Ctrl-C, SIGTERM). A second request kills everything now."""
        event = self._stop_event()
        if event.is_set():
            self.kill_all()
        event.set()

    @property
    def stop_requested(self) -> bool:
        """Whether a stop was requested (``request_stop``) or has begun (``stop``)."""
        return self._halting

    async def wait_until_stop_requested(self) -> None:
        """Supervise (restarting crashed children) until ``request_stop`` is called."""
        await self._stop_event().wait()

    async def stop(self) -> None:
        """Stop every child in reverse start order: SIGTERM, wait ``stop_timeout_s``, SIGKILL."""
        self._stop_event().set()
        monitors = [svc.monitor for svc in self._services.values() if svc.monitor is not None]
        if monitors:
            await asyncio.gather(*monitors, return_exceptions=True)
        # stop_first services, then the rest: those added while running, then
        # the start levels reversed.
        waves = [[name for name in self._order() if self._services[name].spec.stop_first]]
        waves.append([name for name in self._added if not self._services[name].spec.stop_first])
        waves += [
            [name for name in level if not self._services[name].spec.stop_first]
            for level in reversed(self._levels)
        ]
        for wave in waves:
            group = [self._services[name] for name in wave if name in self._services]
            await asyncio.gather(*(self._stop_one(svc) for svc in group))
        if self._http is not None:
            await self._http.aclose()
            self._http = None

    async def run(self, *, on_started: Callable[[], None] | None = None) -> None:
        """``start``, then supervise until a stop is requested, then ``stop``."""
        try:
            await self.start()
            if not self._stop_event().is_set() and on_started is not None:
                on_started()
            await self.wait_until_stop_requested()
        finally:
            await self.stop()

    def kill_all(self) -> None:
        """SIGKILL every running child (and its process group) at once."""
        for svc in self._services.values():
            if svc.proc is not None and svc.proc.returncode is None:
                _kill_group(svc.proc.pid)

    async def add(self, spec: ServiceSpec) -> ServiceStatus:
        """Start one more service while the others run; return once it is ready.

        From then on it is supervised like the others (restarted when it
        crashes, stopped by ``stop``). Raises ``ConfigError`` for a name in use
        or an unknown dependency, and ``Unavailable`` naming its log file and
        quoting its last lines when it exits or is not ready in time (it is
        then stopped and forgotten; its log stays), or when a stop is requested.
        """
        if spec.name in self._services:
            raise ConfigError(f"A service named '{spec.name}' already runs; pick another name.")
        unknown = set(spec.depends_on) - self._services.keys()
        if unknown:
            raise ConfigError(
                f"Service '{spec.name}' depends on {sorted(unknown)}, which are not running."
            )
        if self._halting:
            raise Unavailable(f"Not starting '{spec.name}': the supervisor is stopping.")
        self._log_dir.mkdir(parents=True, exist_ok=True)
        svc = _Service(spec, self._log_dir / f"{spec.name}.log")
        self._services[spec.name] = svc
        self._added.append(spec.name)
        try:
            await self._spawn(svc)
            problem = await self._wait_ready(svc)
            if problem is None and self._halting:
                problem = "was stopped: the supervisor is stopping"
            if problem is not None:
                raise Unavailable(self._explain_failure(svc, problem))
        except BaseException:
            if svc.proc is not None and svc.proc.returncode is None:
                await self._terminate(svc, timeout_s=spec.stop_timeout_s)
            self._forget(spec.name)
            raise
        svc.monitor = asyncio.create_task(self._monitor(svc))
        return self._status_of(svc)

    async def remove(self, name: str, *, drain: bool = True) -> ServiceStatus:
        """Stop one service and forget it; the others keep running.

        ``drain``: SIGTERM, then up to its ``stop_timeout_s`` to exit (a
        replica finishes its turns in flight) before SIGKILL; without it,
        SIGKILL at once. Raises ``NotFound`` for an unknown name.
        """
        svc = self._services.get(name)
        if svc is None:
            raise NotFound(f"No service named '{name}'; running: {', '.join(self._order())}.")
        svc.retiring.set()
        if svc.monitor is not None:
            await asyncio.gather(svc.monitor, return_exceptions=True)
        if svc.proc is not None and svc.proc.returncode is None:
            if drain:
                await self._stop_one(svc)
            else:
                svc.state = ServiceState.STOPPING
                self._emit("stopping", svc)
                _kill_group(svc.proc.pid)
                await svc.proc.wait()
                self._emit("killed", svc, returncode=svc.proc.returncode)
        svc.state = ServiceState.STOPPED
        status = self._status_of(svc)
        self._forget(name)
        return status

    # -- internals ----------------------------------------------------------

    @property
    def _halting(self) -> bool:
        return self._stop_event().is_set()

    def _order(self) -> list[str]:
        names = [name for level in self._levels for name in level]
        return [name for name in [*names, *self._added] if name in self._services]

    def _forget(self, name: str) -> None:
        self._services.pop(name, None)
        if name in self._added:
            self._added.remove(name)
        for level in self._levels:
            if name in level:
                level.remove(name)

    def _status_of(self, svc: _Service) -> ServiceStatus:
        return ServiceStatus(
            name=svc.spec.name,
            state=svc.state,
            pid=svc.proc.pid if svc.proc is not None else None,
            restarts=svc.restarts,
            log_path=svc.log_path,
            port=svc.spec.port,
        )

    def _stop_event(self) -> asyncio.Event:
        # Built on first use so the event belongs to the running loop.
        if self._stop_requested is None:
            self._stop_requested = asyncio.Event()
        return self._stop_requested

    def _emit(self, kind: EventKind, svc: _Service, **details: Any) -> None:
        if self._on_event is not None:
            pid = svc.proc.pid if svc.proc is not None else None
            self._on_event(SupervisorEvent(kind=kind, service=svc.spec.name, pid=pid, **details))

    async def _spawn(self, svc: _Service) -> None:
        spec = svc.spec
        svc.state = ServiceState.STARTING
        env = {**self._environ, **spec.env}
        with svc.log_path.open("ab") as log:
            stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
            log.write(f"--- keel: starting {spec.name} at {stamp} ---\n".encode())
            log.flush()
            try:
                svc.proc = await asyncio.create_subprocess_exec(
                    *spec.command,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log,
                    stderr=asyncio.subprocess.STDOUT,
                    env=env,
                    cwd=spec.cwd,
                    start_new_session=True,
                    preexec_fn=_die_with_parent_hook(),
                )
            except OSError as exc:
                raise ConfigError(
                    f"Service '{spec.name}' could not be started ({exc}). "
                    f"Command: {' '.join(spec.command)}"
                ) from exc
        self._emit("starting", svc)

    async def _wait_ready(self, svc: _Service) -> str | None:
        """Poll until ready. Returns None when ready, else why not (and the child is gone)."""
        proc = svc.proc
        assert proc is not None
        deadline = self._clock.monotonic() + svc.spec.ready_timeout_s
        self._emit("waiting", svc, detail=_target(svc.spec))
        while True:
            if self._done(svc):
                return "stop requested"
            if proc.returncode is not None:
                self._emit("exited", svc, returncode=proc.returncode)
                svc.state = ServiceState.STOPPED
                return f"exited with code {proc.returncode} before it was ready"
            if await self._is_ready(svc.spec):
                svc.state = ServiceState.READY
                svc.ready_at = self._clock.monotonic()
                self._emit("ready", svc)
                return None
            if self._clock.monotonic() >= deadline:
                await self._terminate(svc, timeout_s=svc.spec.stop_timeout_s)
                return f"was not ready within {svc.spec.ready_timeout_s:g}s"
            await self._clock.sleep(self._poll_interval_s)

    async def _is_ready(self, spec: ServiceSpec) -> bool:
        if self._probe is not None:
            return await self._probe(spec)
        url = spec.ready_url or spec.health_url
        if url is not None:
            if self._http is None:
                self._http = httpx.AsyncClient(timeout=2.0, trust_env=False)
            try:
                response = await self._http.get(url)
            except httpx.HTTPError:
                return False
            return response.status_code == 200
        if spec.port is not None:
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", spec.port)
            except OSError:
                return False
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return True
        return True

    async def _monitor(self, svc: _Service) -> None:
        """Wait for the child to exit; unless stopping, restart it with backoff."""
        while not self._done(svc):
            proc = svc.proc
            assert proc is not None
            await self._until_stop(proc.wait(), svc)
            if self._done(svc) or proc.returncode is None:
                return
            self._emit("exited", svc, returncode=proc.returncode)
            if self._clock.monotonic() - svc.ready_at >= self._restart.reset_after_s:
                svc.failures = 0
            while not self._done(svc):
                svc.failures += 1
                svc.restarts += 1
                delay = self._restart.delay(svc.failures)
                svc.state = ServiceState.BACKOFF
                self._emit("restarting", svc, delay_s=delay)
                await self._until_stop(self._clock.sleep(delay), svc)
                if self._done(svc):
                    return
                try:
                    await self._spawn(svc)
                except ConfigError as exc:
                    # The command cannot start at all now; keep trying with backoff.
                    self._emit("exited", svc, detail=exc.message)
                    continue
                if await self._wait_ready(svc) is None:
                    break

    def _done(self, svc: _Service) -> bool:
        """Whether ``svc`` is to be left alone: everything stops, or it is being removed."""
        return self._halting or svc.retiring.is_set()

    async def _until_stop(self, awaitable: Awaitable[T], svc: _Service) -> None:
        """Await ``awaitable`` unless a stop (of all, or of ``svc``) comes first; then it is
        cancelled."""
        work = asyncio.ensure_future(awaitable)
        stop = asyncio.ensure_future(self._stop_event().wait())
        retire = asyncio.ensure_future(svc.retiring.wait())
        await asyncio.wait({work, stop, retire}, return_when=asyncio.FIRST_COMPLETED)
        for task in (work, stop, retire):
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    async def _stop_one(self, svc: _Service) -> None:
        if svc.proc is None or svc.proc.returncode is not None:
            if svc.proc is not None:
                svc.state = ServiceState.STOPPED
            return
        if svc.stopping is None or svc.stopping.done():
            svc.state = ServiceState.STOPPING
            self._emit("stopping", svc)
            svc.stopping = asyncio.ensure_future(
                self._terminate(svc, timeout_s=svc.spec.stop_timeout_s)
            )
        # One SIGTERM per stop: a second one would end a replica's drain at once. A
        # caller that gives up waiting (cancelled) leaves the stop itself running.
        await asyncio.shield(svc.stopping)

    async def _terminate(self, svc: _Service, *, timeout_s: float) -> None:
        proc = svc.proc
        assert proc is not None
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        wait = asyncio.ensure_future(proc.wait())
        timer = asyncio.ensure_future(self._clock.sleep(timeout_s))
        await asyncio.wait({wait, timer}, return_when=asyncio.FIRST_COMPLETED)
        timer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await timer
        if not wait.done():
            _kill_group(proc.pid)
            await wait
            self._emit("killed", svc, returncode=proc.returncode)
        else:
            self._emit("stopped", svc, returncode=proc.returncode)
        svc.state = ServiceState.STOPPED

    def _explain_failure(self, svc: _Service, problem: str) -> str:
        tail = _log_tail(svc.log_path, _LOG_TAIL_LINES)
        quoted = "\n".join(f"    {line}" for line in tail) or "    (the log is empty)"
        return (
            f"Service '{svc.spec.name}' {problem} ({_target(svc.spec)}). "
            f"Its log is {svc.log_path}; last lines:\n{quoted}"
        )


def dependency_levels(services: Sequence[ServiceSpec]) -> list[list[str]]:
    """Service names grouped in start order: each group depends only on earlier groups.

    Within a group, names keep the order they were given in. Raises
    ``ConfigError`` for duplicate names, unknown dependencies and cycles.
    """
    names = [spec.name for spec in services]
    if len(set(names)) != len(names):
        raise ConfigError(f"Service names must be unique, got {names}.")
    graph = {spec.name: set(spec.depends_on) for spec in services}
    for name, deps in graph.items():
        unknown = deps - graph.keys()
        if unknown:
            raise ConfigError(
                f"Service '{name}' depends on {sorted(unknown)}, which are not defined."
            )
    sorter = graphlib.TopologicalSorter(graph)
    try:
        sorter.prepare()
    except graphlib.CycleError as exc:
        cycle = " -> ".join(exc.args[1])
        raise ConfigError(
            f"Services depend on each other in a cycle ({cycle}); remove one of those "
            "depends_on entries."
        ) from exc
    position = {name: index for index, name in enumerate(names)}
    levels: list[list[str]] = []
    while sorter.is_active():
        level = sorted(sorter.get_ready(), key=position.__getitem__)
        levels.append(level)
        sorter.done(*level)
    return levels


def _target(spec: ServiceSpec) -> str:
    if spec.ready_url or spec.health_url:
        return f"ready check {spec.ready_url or spec.health_url}"
    if spec.port is not None:
        return f"port {spec.port}"
    return "no ready check"


def _log_tail(path: Path, lines: int) -> list[str]:
    try:
        with path.open("rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(size - 16_384, 0))
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def _kill_group(pid: int) -> None:
    # The child leads its own session, so its pid is also its process group id.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _die_with_parent_hook() -> Callable[[], None] | None:
    """A pre-exec hook asking Linux to SIGTERM the child if the supervisor dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None

    def hook() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))

    return hook

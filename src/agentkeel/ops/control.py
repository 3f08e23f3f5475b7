"""The control channel of ``keel up``: a small HTTP API on a unix socket.

``keel up`` serves it on ``<data_dir>/control.sock`` while its stack runs, so
a rollout can add, replace and stop replicas of any version without a restart
(``agentkeel.deploy.drivers.local.LocalDriver`` is the client).

Authentication is the socket's file mode: it is made 0600 before it listens,
so only the user who runs ``keel up`` (and root) can connect. There is no
token, and no TCP port to reach from elsewhere.

========  ========================  =============================================
method    path                      does
========  ========================  =============================================
GET       /health                   ``{"status": "ok"}``
GET       /replicas                 ``{"replicas": [ReplicaInfo, ...]}``
POST      /replicas                 ``{"version", "entrypoint"?, "config"?, "env"?,
                                    "count"}``: starts them, waits for ``/ready``,
                                    201 ``{"replicas": [...]}``
POST      /replicas/{name}/stop     ``{"drain": true}``: drains (SIGTERM) and stops
                                    one, 200 ``{"stopped": name}``
========  ========================  =============================================

Errors are the usual ``{"error": {"code", "message"}}``: 422 for a bad spec,
404 for an unknown replica, 503 (naming the log file) when one never got ready.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import socket
import stat
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentkeel.deploy.types import ReplicaDriver, ReplicaSpec
from agentkeel.errors import ConfigError, KeelError
from agentkeel.web.bodies import parse_body
from agentkeel.web.errors import endpoint, http_exception_handler, keel_error_handler
from agentkeel.web.serve import Server, make_server

__all__ = [
    "CONTROL_SOCKET",
    "ControlServer",
    "StartReplicasRequest",
    "StopReplicaRequest",
    "bind_control_socket",
    "create_control_app",
]

CONTROL_SOCKET = "control.sock"
# sun_path holds 108 bytes on Linux (104 on macOS), the terminating NUL included.
_MAX_SOCKET_PATH = 103


class StartReplicasRequest(BaseModel):
    """``POST /replicas``: a ``ReplicaSpec`` and how many."""

    model_config = ConfigDict(extra="forbid")

    version: str
    entrypoint: str | None = None
    config: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    count: int = 1


class StopReplicaRequest(BaseModel):
    """``POST /replicas/{name}/stop``."""

    model_config = ConfigDict(extra="forbid")

    drain: bool = True


def create_control_app(driver: ReplicaDriver) -> Starlette:
    """The control API over ``driver`` (``keel up``'s ``ReplicaManager``)."""

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def list_replicas(request: Request) -> Response:
        infos = await driver.list_replicas()
        return JSONResponse({"replicas": [dataclasses.asdict(info) for info in infos]})

    async def start_replicas(request: Request) -> Response:
        body = await parse_body(request, StartReplicasRequest)
        spec = ReplicaSpec(
            version=body.version, entrypoint=body.entrypoint, config=body.config, env=body.env
        )
        infos = await driver.start_replicas(spec, body.count)
        return JSONResponse(
            {"replicas": [dataclasses.asdict(info) for info in infos]}, status_code=201
        )

    async def stop_replica(request: Request) -> Response:
        name = request.path_params["name"]
        body = await parse_body(request, StopReplicaRequest, empty=b"{}")
        await driver.stop_replica(name, drain=body.drain)
        return JSONResponse({"stopped": name})

    return Starlette(
        routes=[
            Route("/health", endpoint(health), methods=["GET"]),
            Route("/replicas", endpoint(list_replicas), methods=["GET"]),
            Route("/replicas", endpoint(start_replicas), methods=["POST"]),
            Route("/replicas/{name}/stop", endpoint(stop_replica), methods=["POST"]),
        ],
        exception_handlers={HTTPException: http_exception_handler, KeelError: keel_error_handler},
    )


def bind_control_socket(path: Path) -> socket.socket:
    """A listening unix socket at ``path``, mode 0600, ready for ``ControlServer``.

    The mode is set between ``bind`` and ``listen``, so nobody can connect
    while it is still wider. A socket file left by a ``keel up`` that died is
    replaced; one that still answers means another ``keel up`` uses this data
    directory, which is a ``ConfigError``, as is anything at ``path`` that is
    not a socket and a path too long for a unix socket.
    """
    text = str(path)
    if len(os.fsencode(text)) > _MAX_SOCKET_PATH:
        raise ConfigError(
            f"The control socket path {text} is longer than a unix socket allows "
            f"({_MAX_SOCKET_PATH} bytes); use a data directory with a shorter path (--data-dir)."
        )
    if path.is_symlink() or path.exists():
        if not stat.S_ISSOCK(path.lstat().st_mode):
            raise ConfigError(
                f"{text} exists and is not a socket; move it away so keel up can put its "
                "control socket there."
            )
        if _answers(text):
            raise ConfigError(
                f"Another keel up answers on {text}: one data directory serves one stack. "
                "Stop it, or give this one its own --data-dir."
            )
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(text)
        os.chmod(text, 0o600)
        sock.listen(64)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"Cannot listen on the control socket {text} ({exc.strerror}).") from exc
    return sock


def _answers(path: str) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(1.0)
        try:
            probe.connect(path)
        except OSError:
            return False
    return True


class ControlServer:
    """Serves the control app on a unix socket in the running event loop.

    >>> control = ControlServer(app=create_control_app(manager), path=data_dir / CONTROL_SOCKET)
    >>> control.bind()            # early: another keel up on this data dir fails here
    >>> await control.start()     # once the stack runs
    >>> await control.stop()      # stops serving and removes the socket file
    """

    def __init__(self, *, app: Starlette, path: Path, graceful_s: float = 5.0) -> None:
        self.path = path
        self._app = app
        self._graceful_s = graceful_s
        self._sock: socket.socket | None = None
        self._server: Server | None = None
        self._task: asyncio.Task[None] | None = None

    def bind(self) -> None:
        """Take the socket now (``bind_control_socket``); connections wait until ``start``."""
        if self._sock is None:
            self._sock = bind_control_socket(self.path)

    async def start(self) -> None:
        """Serve on the socket (bound now unless ``bind`` was called); returns once serving."""
        self.bind()
        assert self._sock is not None
        self._server = make_server(self._app, host="127.0.0.1", port=0, graceful_s=self._graceful_s)
        self._task = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._task.done():
                await self.stop()
                raise ConfigError(f"The control channel on {self.path} did not start.")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop serving (requests in flight get ``graceful_s``) and remove the socket file."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError, SystemExit):
                await self._task
        if self._sock is not None:
            self._sock.close()
            self.path.unlink(missing_ok=True)
        self._server = None
        self._task = None
        self._sock = None

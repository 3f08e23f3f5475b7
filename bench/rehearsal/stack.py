"""A real ``keel up`` for a rehearsal: its own temp data dir and ports, stopped cleanly.

The stack runs the scripted model (no local model, no tool server) with the
memory server, the router and several replicas of ``v1``, whose agent is the
entrypoint given (``examples.rehearsal_agent:stable`` by default). ``keel``
runs the CLI against it (``rollout start``, ``abort``, ``rollback``) as a
separate process, the way an operator would.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from agentkeel.testing.ports import free_port_run
from bench._common import clean_env

START_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 90.0
START_ATTEMPTS = 3
RUNNING_LINE = "keel up is running"
REPO_ROOT = Path(__file__).resolve().parents[2]


def stack_config(
    *, base_port: int, replicas: int, entrypoint: str, rollout: str = "", extra: str = ""
) -> str:
    """keel.yaml of a rehearsal stack; ``rollout`` is the body of its ``rollout:`` section."""
    memory_port, router_port = base_port, base_port + 1
    section = f"rollout:\n{rollout}" if rollout.strip() else ""
    return f"""\
models:
  - {{name: scripted, kind: scripted, latency_s: 0.0}}
agent:
  entrypoint: {entrypoint}
memory:
  port: {memory_port}
router:
  port: {router_port}
up:
  base_port: {base_port + 2}
  replicas: {replicas}
guardrails:
  max_turns_per_session: 1000000
  session_token_budget: 0
  tool_calls_per_minute: 0
quotas:
  user_daily_tokens: 0
server:
  drain_timeout_s: 30
{section}
{extra}"""


@dataclass
class Stack:
    """A running ``keel up``: its process, directories and the router's URL."""

    proc: subprocess.Popen[bytes]
    directory: Path
    config: Path
    router_url: str

    @property
    def data_dir(self) -> Path:
        return self.directory / "data"

    def admin_headers(self) -> dict[str, str]:
        token = (self.data_dir / "admin_token").read_text().strip()
        return {"Authorization": f"Bearer {token}"}

    def keel_command(self, *args: str) -> list[str]:
        return [
            sys.executable,
            "-m",
            "agentkeel.cli.main",
            "--config",
            str(self.config),
            "--data-dir",
            str(self.data_dir),
            *args,
        ]

    def keel(self, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
        """Run one ``keel`` command against this stack to the end."""
        return subprocess.run(
            self.keel_command(*args),
            capture_output=True,
            text=True,
            timeout=timeout_s,
            env=stack_env(),
            cwd=self.directory,
            check=False,
        )

    async def keel_async(self, *args: str) -> asyncio.subprocess.Process:
        """Start a ``keel`` command (``rollout start`` runs for minutes) without waiting."""
        log = (self.directory / f"keel-{args[0]}-{time.monotonic_ns()}.log").open("wb")
        try:
            return await asyncio.create_subprocess_exec(
                *self.keel_command(*args),
                stdout=asyncio.subprocess.PIPE,
                stderr=log,
                env=stack_env(),
                cwd=self.directory,
            )
        finally:
            log.close()

    async def replicas(self) -> list[dict[str, str]]:
        """The replicas keel up runs, from its control socket."""
        socket_path = self.data_dir / "control.sock"
        transport = httpx.AsyncHTTPTransport(uds=str(socket_path))
        async with httpx.AsyncClient(transport=transport, base_url="http://keel") as client:
            answer = await client.get("/replicas")
            answer.raise_for_status()
            replicas: list[dict[str, str]] = answer.json()["replicas"]
            return replicas

    def replica_pid(self, url: str) -> int:
        """The pid of the process listening on a replica's port (Linux /proc)."""
        return listening_pid(int(url.rsplit(":", 1)[1]))

    def logs(self, lines: int = 15) -> str:
        parts: list[str] = []
        for log in sorted((self.data_dir / "logs").glob("*.log")):
            parts += [f"--- {log.name}", *log.read_text(errors="replace").splitlines()[-lines:]]
        return "\n".join(parts)


def listening_pid(port: int) -> int:
    """The process with a listening TCP socket on loopback ``port``, from /proc."""
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":
                inodes.add(fields[9])
    wanted = {f"socket:[{inode}]" for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            for fd in (proc / "fd").iterdir():
                if os.readlink(fd) in wanted:
                    return int(proc.name)
        except OSError:
            continue
    raise RuntimeError(f"no process listens on port {port}")


def stack_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    python_path = os.pathsep.join(
        p for p in (str(REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p
    )
    return clean_env({"PYTHONPATH": python_path, "COLUMNS": "200", **(extra or {})})


@contextmanager
def keel_up(
    *,
    replicas: int,
    entrypoint: str = "examples.rehearsal_agent:stable",
    rollout: str = "",
    extra: str = "",
    env: Mapping[str, str] | None = None,
) -> Iterator[Stack]:
    """Start ``keel up`` in a temp directory; Ctrl-C (SIGINT) it at the end of the block.

    The ports are free when chosen, but another process on the machine can take one
    before a replica binds it; then the stack is started again on other ports.
    """
    with tempfile.TemporaryDirectory(prefix="keel-rehearsal-") as tmp:
        directory = Path(tmp)
        for attempt in range(START_ATTEMPTS):
            stack = _start(directory / f"run-{attempt}", replicas, entrypoint, rollout, extra, env)
            try:
                _wait_running(stack, stack.directory / "keel-up.out")
            except RuntimeError as exc:
                _stop(stack.proc)
                if "address already in use" not in str(exc) or attempt == START_ATTEMPTS - 1:
                    raise
                continue
            try:
                yield stack
            finally:
                _stop(stack.proc)
            return


def _start(
    directory: Path,
    replicas: int,
    entrypoint: str,
    rollout: str,
    extra: str,
    env: Mapping[str, str] | None,
) -> Stack:
    directory.mkdir(parents=True)
    base_port = free_port_run(replicas + 2)
    config = directory / "keel.yaml"
    config.write_text(
        stack_config(
            base_port=base_port,
            replicas=replicas,
            entrypoint=entrypoint,
            rollout=rollout,
            extra=extra,
        )
    )
    with (directory / "keel-up.out").open("wb") as sink:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agentkeel.cli.main",
                "--config",
                str(config),
                "up",
                "--data-dir",
                str(directory / "data"),
                "--no-local-model",
                "--no-tools",
            ],
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=stack_env(env),
            cwd=directory,
        )
    return Stack(proc, directory, config, f"http://127.0.0.1:{base_port + 1}")


def _wait_running(stack: Stack, out: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if RUNNING_LINE in out.read_text(errors="replace"):
            return
        if stack.proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"keel up did not start:\n{out.read_text(errors='replace')}\n{stack.logs()}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()

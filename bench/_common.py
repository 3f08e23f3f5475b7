"""Shared pieces of the benchmarks: server processes, the agent server in process,
percentiles, RSS, printing.

Servers always run in their own process, so the load generator (this process)
and the server do not share one event loop or one GIL. Both still share the
machine's cores; every report says how many there are.
"""

from __future__ import annotations

import argparse
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
from prometheus_client import CollectorRegistry
from rich.console import Console
from rich.table import Table
from starlette.applications import Starlette

from agentkeel.config.settings import KeelSettings
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import ScriptedProvider, StepLike
from agentkeel.resilience.clock import Clock
from agentkeel.runtime.app import create_app
from agentkeel.runtime.stores import open_store
from agentkeel.telemetry.metrics import ModelMetrics
from agentkeel.telemetry.tracing import Tracing

READY_TIMEOUT_S = 120.0


@dataclass(frozen=True, slots=True)
class Figure:
    """One measured number, as the summary table prints it."""

    name: str
    value: float
    unit: str
    note: str = ""

    def shown(self) -> str:
        if self.unit in {"%", "ratio"}:
            return f"{self.value:.1f} {self.unit}" if self.unit == "%" else f"{self.value:.3f}"
        if abs(self.value) >= 100:
            return f"{self.value:,.0f} {self.unit}"
        return f"{self.value:.2f} {self.unit}"


def parse_bench_args(
    module: str,
    doc: str | None,
    argv: Sequence[str] | None = None,
    *,
    options: Callable[[argparse.ArgumentParser], None] | None = None,
    example: str = "",
) -> argparse.Namespace:
    """``--help`` for a benchmark: its docstring and an example; ``options`` adds its own."""
    prog = f"python -m {module}"
    other = "python -m bench.overhead for one" if module == "bench" else "python -m bench for all"
    parser = argparse.ArgumentParser(
        prog=prog,
        description=doc,
        epilog=f"Example: {prog}{' ' + example if example else ''}   (or {other})",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if options is not None:
        options(parser)
    return parser.parse_args(argv)


def console() -> Console:
    return Console(highlight=False)


IN_PROCESS = "the service and its load in one process"
OVER_LOOPBACK = (
    "load generator and server are separate processes on the same machine, over loopback"
)


def machine_note(setup: str = OVER_LOOPBACK) -> str:
    """Cores, CPU model and Python, and how the bench was set up: the context every
    figure needs."""
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cores} cores ({cpu}), Python {platform.python_version()}; {setup}"


def print_figures(title: str, figures: Sequence[Figure], *, setup: str = OVER_LOOPBACK) -> None:
    table = Table(title=title, title_justify="left")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("note", overflow="fold")
    for figure in figures:
        table.add_row(figure.name, figure.shown(), figure.note)
    out = console()
    out.print(table)
    out.print(f"[dim]{machine_note(setup)}[/]")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


@contextmanager
def postgres_schema(base_url: str) -> Iterator[str]:
    """A fresh schema of ``base_url``'s database for one run (its URL), dropped afterwards."""
    schema = f"keel_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{base_url}?options=-csearch_path%3D{schema}"
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc (Linux)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far, from /proc (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    return ticks / os.sysconf("SC_CLK_TCK")


def clean_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This environment without KEEL_* settings (the bench sets its own)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEEL_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def agent_config(directory: Path, *, latency_s: float = 0.0, log_level: str = "info") -> Path:
    """A keel.yaml for a replica over the scripted model, with limits out of the way.

    Guardrails that would cut a benchmark short (turns per session, token
    budgets, tool rate limit) are lifted; everything else is the default.
    """
    path = directory / "keel.yaml"
    path.write_text(
        f"data_dir: {directory / 'data'}\n"
        f"log_level: {log_level}\n"
        "models:\n"
        "  - name: scripted\n"
        "    kind: scripted\n"
        f"    latency_s: {latency_s}\n"
        "agent:\n"
        "  tools: []\n"
        "guardrails:\n"
        "  max_turns_per_session: 1000000\n"
        "  session_token_budget: 0\n"
        "  tool_calls_per_minute: 0\n"
        "quotas:\n"
        "  user_daily_tokens: 0\n"
    )
    return path


def replica_command(port: int) -> list[str]:
    return [sys.executable, "-m", "agentkeel.cli.main", "serve", "agent", "--port", str(port)]


@dataclass(frozen=True, slots=True)
class Running:
    pid: int
    url: str
    log: Path


def wait_ready(url: str, proc: subprocess.Popen[bytes], *, timeout_s: float) -> float:
    """Poll ``url`` until 200; returns seconds waited. Raises if the process dies."""
    start = time.perf_counter()
    with httpx.Client(timeout=2.0, trust_env=False) as client:
        while time.perf_counter() - start < timeout_s:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
            try:
                if client.get(url).status_code == 200:
                    return time.perf_counter() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    raise RuntimeError(f"{url} was not ready within {timeout_s:.0f}s")


@contextmanager
def server_process(
    command: Sequence[str],
    *,
    ready_url: str,
    base_url: str,
    env: Mapping[str, str] | None = None,
    log_dir: Path | None = None,
) -> Iterator[Running]:
    """Run a server until the block ends (SIGTERM, then SIGKILL after 15 s)."""
    directory = log_dir or Path(tempfile.mkdtemp(prefix="keel-bench-"))
    log = directory / "server.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            list(command),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=clean_env(env),
        )
    try:
        try:
            wait_ready(ready_url, proc, timeout_s=READY_TIMEOUT_S)
        except RuntimeError as exc:
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"{exc}; log {log}:\n{tail}") from exc
        yield Running(pid=proc.pid, url=base_url, log=log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextmanager
def agent_replica(*, latency_s: float = 0.0) -> Iterator[Running]:
    """One agent replica over the scripted model in a fresh data directory."""
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        directory = Path(tmp)
        config = agent_config(directory, latency_s=latency_s)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        with server_process(
            replica_command(port),
            ready_url=f"{url}/ready",
            base_url=url,
            env={"KEEL_CONFIG": str(config)},
            log_dir=directory,
        ) as running:
            yield running


def scripted_gateway(
    script: Sequence[StepLike],
    *,
    settings: KeelSettings,
    clock: Clock,
    registry: CollectorRegistry,
    tracing: Tracing | None = None,
) -> ModelGateway:
    """A model gateway over one scripted model: no breakers, the settings' retries."""
    return ModelGateway(
        providers=[ScriptedProvider(script=script, clock=clock)],
        breakers={},
        retry=settings.retry,
        metrics=ModelMetrics(registry),
        clock=clock,
        tracing=tracing,
    )


@asynccontextmanager
async def agent_app(
    settings: KeelSettings,
    *,
    gateway: ModelGateway | None,
    store_url: str | None = None,
    clock: Clock | None = None,
    registry: CollectorRegistry | None = None,
    tracing: Tracing | None = None,
    run_sweeper: bool = True,
) -> AsyncIterator[Starlette]:
    """The agent server in this process, its lifespan entered for the block. What is
    ``None`` the app builds from ``settings`` (the gateway, the store, the clock...); a
    store at ``store_url`` is opened here and closed after the app."""
    async with AsyncExitStack() as stack:
        store = None
        if store_url is not None:
            store = open_store(store_url)
            await store.open()
            stack.push_async_callback(store.aclose)
        app = create_app(
            settings,
            gateway=gateway,
            store=store,
            clock=clock,
            registry=registry,
            run_sweeper=run_sweeper,
            tracing=tracing,
        )
        await stack.enter_async_context(app.router.lifespan_context(app))
        yield app

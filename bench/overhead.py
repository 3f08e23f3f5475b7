"""The runtime's own cost per turn: a replica with a zero-latency scripted model,
next to a bare Starlette endpoint under the same uvicorn settings (the floor).

Figures: round-trip p50 and p99 of one client sending turns one after another,
and turns/s with 32 concurrent clients. Each is the median of several runs.
Everything a real turn does is included: session lock, guardrails, token
accounting, the SQLite commit, metrics, the JSON log line. Only the model is
free. Sessions are 20 turns long, then a client starts a new one.

    python -m bench.overhead
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

from bench._common import (
    Figure,
    agent_replica,
    cpu_seconds,
    free_port,
    median,
    parse_bench_args,
    percentile,
    print_figures,
    server_process,
)
from bench._http import HttpConnection

RUNS = 3
SEQUENTIAL_TURNS = 1000
WARMUP_TURNS = 200
CONCURRENCY = 32
THROUGHPUT_TURNS = 4000
THROUGHPUT_CAP_S = 15.0
TURNS_PER_SESSION = 20

T = TypeVar("T")
Send = Callable[[HttpConnection, str], Awaitable[None]]
NewSession = Callable[[HttpConnection], Awaitable[str]]
TURN_BODY = b'{"content": "What is the weather like?"}'


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run with uvloop when installed, as the servers do, so the client is not the floor."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvicorn[standard] installs it
        return asyncio.run(coro)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coro)


async def connect(url: str) -> HttpConnection:
    """A keep-alive connection to ``http://host:port``."""
    parts = urlsplit(url)
    return await HttpConnection.open(parts.hostname or "127.0.0.1", parts.port or 80)


async def _agent_session(client: HttpConnection) -> str:
    response = await client.post_json("/v1/sessions", {"user_id": "bench"})
    if response.status != 201:
        raise RuntimeError(f"session not created: {response.status} {response.body[:200]!r}")
    return str(response.json()["session_id"])


async def _agent_turn(client: HttpConnection, session_id: str) -> None:
    response = await client.request("POST", f"/v1/sessions/{session_id}/messages", TURN_BODY)
    if response.status != 200:
        raise RuntimeError(f"turn failed: {response.status} {response.body[:200]!r}")


async def _bare_session(client: HttpConnection) -> str:
    return "bare"


async def _bare_turn(client: HttpConnection, session_id: str) -> None:
    response = await client.request("POST", "/echo", TURN_BODY)
    if response.status != 200:
        raise RuntimeError(f"echo failed: {response.status}")


async def sequential(url: str, new_session: NewSession, send: Send, turns: int) -> list[float]:
    """Round-trip seconds of ``turns`` turns sent one after another."""
    latencies: list[float] = []
    client = await connect(url)
    try:
        session = await new_session(client)
        for index in range(turns):
            if index and index % TURNS_PER_SESSION == 0:
                session = await new_session(client)
            start = time.perf_counter()
            await send(client, session)
            latencies.append(time.perf_counter() - start)
    finally:
        client.close()
    return latencies


async def throughput(
    url: str, new_session: NewSession, send: Send, *, clients: int, turns: int, cap_s: float
) -> float:
    """Turns per second with ``clients`` concurrent clients, each on its own sessions.

    Each client has its own keep-alive connection, as separate users would
    (see ``bench._http`` for why not ``httpx``).
    """
    remaining = turns
    done = 0
    ready = asyncio.Event()
    started = 0

    async def worker() -> None:
        nonlocal remaining, done, started
        client = await connect(url)
        try:
            session = await new_session(client)
            started += 1
            if started == clients:
                ready.set()
            await ready.wait()
            sent = 0
            while remaining > 0 and time.perf_counter() < deadline:
                remaining -= 1
                if sent and sent % TURNS_PER_SESSION == 0:
                    session = await new_session(client)
                await send(client, session)
                sent += 1
                done += 1
        finally:
            client.close()

    deadline = float("inf")
    tasks = [asyncio.create_task(worker()) for _ in range(clients)]
    await ready.wait()
    start = time.perf_counter()
    deadline = start + cap_s
    await asyncio.gather(*tasks)
    return done / (time.perf_counter() - start)


async def measure(
    url: str, pid: int, new_session: NewSession, send: Send
) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {
        "p50": [],
        "p99": [],
        "tps": [],
        "cpu_ms": [],
        "client_cpu_ms": [],
    }
    await sequential(url, new_session, send, WARMUP_TURNS)
    for _ in range(RUNS):
        latencies = await sequential(url, new_session, send, SEQUENTIAL_TURNS)
        results["p50"].append(percentile(latencies, 50) * 1000)
        results["p99"].append(percentile(latencies, 99) * 1000)
        cpu_before = cpu_seconds(pid)
        client_before = time.process_time()
        started = time.perf_counter()
        rate = await throughput(
            url,
            new_session,
            send,
            clients=CONCURRENCY,
            turns=THROUGHPUT_TURNS,
            cap_s=THROUGHPUT_CAP_S,
        )
        turns = rate * (time.perf_counter() - started)
        results["tps"].append(rate)
        # Session creation is part of the load too; it is small beside the turns.
        results["cpu_ms"].append((cpu_seconds(pid) - cpu_before) * 1000 / max(turns, 1))
        client_cpu = time.process_time() - client_before
        results["client_cpu_ms"].append(client_cpu * 1000 / max(turns, 1))
    return results


def run() -> list[Figure]:
    with agent_replica(latency_s=0.0) as replica:
        agent = run_async(measure(replica.url, replica.pid, _agent_session, _agent_turn))
    port = free_port()
    bare_url = f"http://127.0.0.1:{port}"
    with server_process(
        [sys.executable, "-m", "bench._bare_server", str(port)],
        ready_url=f"{bare_url}/ready",
        base_url=bare_url,
    ) as bare_server:
        bare = run_async(measure(bare_url, bare_server.pid, _bare_session, _bare_turn))
    runs = f"median of {RUNS} runs"
    overhead_p50 = median(agent["p50"]) - median(bare["p50"])
    return [
        Figure("turn round trip p50 (runtime)", median(agent["p50"]), "ms", runs),
        Figure("turn round trip p99 (runtime)", median(agent["p99"]), "ms", runs),
        Figure("bare Starlette round trip p50", median(bare["p50"]), "ms", "the floor"),
        Figure("bare Starlette round trip p99", median(bare["p99"]), "ms", "the floor"),
        Figure("runtime overhead per turn (p50)", overhead_p50, "ms", "runtime p50 - floor p50"),
        Figure(
            "runtime overhead per turn (p99)",
            median(agent["p99"]) - median(bare["p99"]),
            "ms",
            "runtime p99 - floor p99",
        ),
        Figure(
            f"turns/s, {CONCURRENCY} clients (runtime)",
            median(agent["tps"]),
            "turns/s",
            f"one replica; target >= 1,000; {runs}",
        ),
        Figure(
            "replica CPU per turn (under load)",
            median(agent["cpu_ms"]),
            "ms",
            f"server process only; 1 core = {1000 / median(agent['cpu_ms']):,.0f} turns/s",
        ),
        Figure(
            "load generator CPU per turn",
            median(agent["client_cpu_ms"]),
            "ms",
            "client process, against the replica; shares the cores",
        ),
        Figure(
            "bare Starlette CPU per request",
            median(bare["cpu_ms"]),
            "ms",
            "server process only",
        ),
        Figure(
            f"requests/s, {CONCURRENCY} clients (bare)",
            median(bare["tps"]),
            "req/s",
            "the floor, incl. the load generator's own cost",
        ),
    ]


def main() -> None:
    print_figures("runtime overhead per turn (scripted model, zero latency)", run())


if __name__ == "__main__":
    parse_bench_args(__spec__.name, __doc__)
    main()

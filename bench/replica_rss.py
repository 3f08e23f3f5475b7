"""Memory: what an idle session costs a replica, and a replica's RSS under load.

An idle session is one that has had a turn and now waits for the next: it
lives in the session store (SQLite), so a replica should hold nothing per
session in memory. The figure is the replica's RSS growth over ``SESSIONS``
new sessions divided by their number (median of several batches), after a
warm-up so that lazy imports and caches are already in the baseline.

    python -m bench.replica_rss
"""

from __future__ import annotations

import asyncio
import threading
import time

from bench._common import Figure, agent_replica, median, parse_bench_args, print_figures, rss_bytes
from bench.overhead import (
    CONCURRENCY,
    _agent_session,
    _agent_turn,
    connect,
    run_async,
    throughput,
)

SESSIONS = 2000
BATCHES = 3
WARMUP_SESSIONS = 300
CLIENTS = 8
LOAD_TURNS = 4000
LOAD_CAP_S = 10.0
MIB = 1024 * 1024


async def idle_sessions(url: str, count: int) -> None:
    """``count`` sessions with one turn each, from CLIENTS clients."""
    remaining = count

    async def worker() -> None:
        nonlocal remaining
        client = await connect(url)
        try:
            while remaining > 0:
                remaining -= 1
                session = await _agent_session(client)
                await _agent_turn(client, session)
        finally:
            client.close()

    await asyncio.gather(*(worker() for _ in range(CLIENTS)))


def peak_rss_during(pid: int, work: threading.Event) -> list[int]:
    samples: list[int] = []

    def sample() -> None:
        while not work.is_set():
            samples.append(rss_bytes(pid))
            time.sleep(0.1)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    return samples


def run() -> list[Figure]:
    with agent_replica(latency_s=0.0) as replica:
        run_async(idle_sessions(replica.url, WARMUP_SESSIONS))
        idle_rss = rss_bytes(replica.pid)
        per_session: list[float] = []
        for _ in range(BATCHES):
            before = rss_bytes(replica.pid)
            run_async(idle_sessions(replica.url, SESSIONS))
            per_session.append((rss_bytes(replica.pid) - before) / SESSIONS)
        done = threading.Event()
        samples = peak_rss_during(replica.pid, done)
        rate = run_async(
            throughput(
                replica.url,
                _agent_session,
                _agent_turn,
                clients=CONCURRENCY,
                turns=LOAD_TURNS,
                cap_s=LOAD_CAP_S,
            )
        )
        done.set()
        loaded_rss = max(samples) if samples else rss_bytes(replica.pid)
    return [
        Figure(
            "memory per idle session",
            median(per_session),
            "bytes",
            f"RSS growth / {SESSIONS} sessions with one turn; median of {BATCHES} batches",
        ),
        Figure(
            "replica RSS, idle", idle_rss / MIB, "MiB", f"after {WARMUP_SESSIONS} warm-up turns"
        ),
        Figure(
            "replica RSS, under load (peak)",
            loaded_rss / MIB,
            "MiB",
            f"{CONCURRENCY} clients, {rate:,.0f} turns/s; {BATCHES * SESSIONS:,} sessions stored",
        ),
    ]


def main() -> None:
    print_figures("memory (scripted model)", run())


if __name__ == "__main__":
    parse_bench_args(__spec__.name, __doc__)
    main()

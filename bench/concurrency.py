"""1,000 concurrent sessions against a scripted model that takes 1 s per reply.

Every session sends one turn at a time, ``ROUNDS`` times. With a 1 s model the
ideal is 1,000 turns/s: the runtime should add waiting, not work. The figure is
the achieved rate as a share of that ideal (the median of several runs).

    python -m bench.concurrency
"""

from __future__ import annotations

import asyncio
import ssl
import time

import httpx

from bench._common import Figure, agent_replica, median, percentile, print_figures
from bench.overhead import run_async

SESSIONS = 1000
LATENCY_S = 1.0
ROUNDS = 3
RUNS = 3
# Connections open at once while creating sessions (creation is not measured).
CREATE_CONCURRENCY = 50


async def one_run(url: str) -> tuple[float, int, list[float]]:
    """(turns/s, failed turns, turn latencies) for SESSIONS sessions doing ROUNDS turns each.

    Each session has its own client and connection, as separate users would;
    one shared ``httpx`` pool of 1,000 connections costs more than the server.
    """
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)
    # One TLS context for all clients: httpx would build one per client (slow),
    # and these loopback requests never use it anyway.
    tls = ssl.create_default_context()
    all_created = asyncio.Event()
    created = 0
    failures = 0
    start = 0.0
    latencies: list[float] = []

    async def converse() -> int:
        nonlocal created, failures, start
        timeout = httpx.Timeout(60.0)
        async with httpx.AsyncClient(
            base_url=url, timeout=timeout, trust_env=False, verify=tls
        ) as client:
            async with gate:
                response = await client.post("/v1/sessions", json={"user_id": "bench"})
                response.raise_for_status()
                session_id = response.json()["session_id"]
            created += 1
            if created == SESSIONS:
                start = time.perf_counter()
                all_created.set()
            await all_created.wait()
            ok = 0
            for _ in range(ROUNDS):
                sent = time.perf_counter()
                try:
                    response = await client.post(
                        f"/v1/sessions/{session_id}/messages", json={"content": "hello"}
                    )
                except httpx.TransportError:
                    failures += 1
                    continue
                if response.status_code == 200:
                    ok += 1
                    latencies.append(time.perf_counter() - sent)
                else:
                    failures += 1
            return ok

    completed = sum(await asyncio.gather(*(converse() for _ in range(SESSIONS))))
    elapsed = time.perf_counter() - start
    return completed / elapsed, failures, latencies


def run() -> list[Figure]:
    rates: list[float] = []
    p50s: list[float] = []
    p99s: list[float] = []
    failed = 0
    with agent_replica(latency_s=LATENCY_S) as replica:
        for _ in range(RUNS):
            rate, failures, latencies = run_async(one_run(replica.url))
            rates.append(rate)
            p50s.append(percentile(latencies, 50))
            p99s.append(percentile(latencies, 99))
            failed += failures
    ideal = SESSIONS / LATENCY_S
    achieved = median(rates)
    return [
        Figure(
            f"turns/s, {SESSIONS} sessions, {LATENCY_S:g} s model",
            achieved,
            "turns/s",
            f"ideal {ideal:,.0f}; median of {RUNS} runs; {failed} failed turns",
        ),
        Figure("share of the ideal", achieved / ideal * 100, "%", "1,000 concurrent sessions"),
        Figure("turn latency p50", median(p50s), "s", f"model alone: {LATENCY_S:g} s"),
        Figure("turn latency p99", median(p99s), "s", f"model alone: {LATENCY_S:g} s"),
    ]


def main() -> None:
    print_figures("concurrency: 1,000 sessions, 1 s scripted model", run())


if __name__ == "__main__":
    main()

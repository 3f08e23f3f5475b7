"""1,000 concurrent sessions against a scripted model that takes 1 s per reply.

Every session sends one turn at a time, ``ROUNDS`` times. With a 1 s model the
ideal is 1,000 turns/s: the runtime should add waiting, not work. The figure is
the achieved rate as a share of that ideal (the median of several runs).

Sessions start their first turn spread evenly over the first model latency, as
users arriving independently would, instead of all in the same millisecond
(a burst of 1,000 turns that every later round would inherit). The rate counts
the turns completed in the steady window, from the second to the last round's
ideal end, when every session is in its loop.

    python -m bench.concurrency
"""

from __future__ import annotations

import asyncio
import time

from bench._common import (
    Figure,
    agent_replica,
    cpu_seconds,
    median,
    parse_bench_args,
    percentile,
    print_figures,
)
from bench._http import HttpConnection
from bench.overhead import TURN_BODY, _agent_session, connect, run_async

SESSIONS = 1000
LATENCY_S = 1.0
ROUNDS = 5
RUNS = 3
# Connections opened and sessions created at once before the clock starts
# (creation is not measured).
CREATE_CONCURRENCY = 50
# The steady window opens once every session is in its second turn.
WINDOW_START_S = 2 * LATENCY_S


async def one_run(url: str, pid: int) -> tuple[float, int, list[float], float, float]:
    """(turns/s, failed turns, turn latencies, replica CPU s, client CPU s) for
    SESSIONS sessions doing ROUNDS turns each.

    Each session has its own keep-alive connection, as separate users would.
    The CPU figures cover the whole run, not only the window.
    """
    gate = asyncio.Semaphore(CREATE_CONCURRENCY)
    all_created = asyncio.Event()
    created = 0
    failures = 0
    start = 0.0
    cpu_start = 0.0
    client_start = 0.0
    latencies: list[float] = []

    finished: list[float] = []

    async def converse(index: int) -> int:
        nonlocal created, failures, start, cpu_start, client_start
        async with gate:
            client: HttpConnection = await connect(url)
            session_id = await _agent_session(client)
        try:
            created += 1
            if created == SESSIONS:
                start = time.perf_counter()
                cpu_start = cpu_seconds(pid)
                client_start = time.process_time()
                all_created.set()
            await all_created.wait()
            await asyncio.sleep(index * LATENCY_S / SESSIONS)
            ok = 0
            path = f"/v1/sessions/{session_id}/messages"
            for _ in range(ROUNDS):
                sent = time.perf_counter()
                try:
                    response = await client.request("POST", path, TURN_BODY)
                except ConnectionError:
                    failures += 1
                    client.close()
                    client = await connect(url)
                    continue
                if response.status == 200:
                    ok += 1
                    done = time.perf_counter()
                    latencies.append(done - sent)
                    finished.append(done)
                else:
                    failures += 1
            return ok
        finally:
            client.close()

    await asyncio.gather(*(converse(index) for index in range(SESSIONS)))
    window_start = start + WINDOW_START_S
    window_end = start + ROUNDS * LATENCY_S
    in_window = sum(1 for done in finished if window_start <= done < window_end)
    return (
        in_window / (window_end - window_start),
        failures,
        latencies,
        cpu_seconds(pid) - cpu_start,
        time.process_time() - client_start,
    )


def run() -> list[Figure]:
    rates: list[float] = []
    p50s: list[float] = []
    p99s: list[float] = []
    server_ms: list[float] = []
    client_ms: list[float] = []
    failed = 0
    with agent_replica(latency_s=LATENCY_S) as replica:
        for _ in range(RUNS):
            rate, failures, latencies, server_cpu, client_cpu = run_async(
                one_run(replica.url, replica.pid)
            )
            rates.append(rate)
            p50s.append(percentile(latencies, 50))
            p99s.append(percentile(latencies, 99))
            turns = max(len(latencies), 1)
            server_ms.append(server_cpu * 1000 / turns)
            client_ms.append(client_cpu * 1000 / turns)
            failed += failures
    ideal = SESSIONS / LATENCY_S
    achieved = median(rates)
    return [
        Figure(
            f"turns/s, {SESSIONS} sessions, {LATENCY_S:g} s model",
            achieved,
            "turns/s",
            f"ideal {ideal:,.0f}; steady window of each run; median of {RUNS} runs; "
            f"{failed} failed turns",
        ),
        Figure("share of the ideal", achieved / ideal * 100, "%", "1,000 concurrent sessions"),
        Figure("turn latency p50", median(p50s), "s", f"model alone: {LATENCY_S:g} s"),
        Figure("turn latency p99", median(p99s), "s", f"model alone: {LATENCY_S:g} s"),
        Figure("replica CPU per turn", median(server_ms), "ms", "server process only"),
        Figure("load generator CPU per turn", median(client_ms), "ms", "client process"),
    ]


def main() -> None:
    print_figures("concurrency: 1,000 sessions, 1 s scripted model", run())


if __name__ == "__main__":
    parse_bench_args(__spec__.name, __doc__)
    main()

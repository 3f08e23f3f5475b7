"""What tracing costs a turn: the same in-process turn with tracing off and with the
OpenTelemetry SDK on, exporting over OTLP/HTTP to a receiver in another process.

The agent server is built in this process (real SQLite store, real gateway over a
zero-latency scripted model, the built-in calculator) and turns are run through its
service, one fresh session per turn; each turn is two model calls and one tool call, so
four spans with tracing on (``invoke_agent``, two ``chat``, ``execute_tool``). Off is
the default without ``tracing.otlp_endpoint``: no SDK provider, no exporter, the API's
no-op tracer. On is what ``keel serve`` installs with an endpoint: the SDK provider,
its batch processor and the OTLP/HTTP exporter, here to the OTLP receiver stand-in
(``agentkeel.testing.otlp_receiver``) in its own process on loopback; every run checks
that all the spans arrived. Figures are p50 and p99 of the turn's wall time in
microseconds, each the median over ``--runs`` runs (off and on alternate which goes
first), and the difference; and the process's CPU time per turn, all threads, from the
end of the warm-up to the last span exported (the exporter's background thread
included): on a shared machine the wall times drift with the load of other work, the
CPU time much less. What tracing off leaves in a turn is its four no-op spans: their
cost is timed alone too (``NOOP_SPANS`` spans, as the instrumentation opens them).

    python -m bench.tracing_overhead --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from agentkeel.config.layers import load_settings
from agentkeel.config.tracing import TracingSettings
from agentkeel.models.scripted import CallTools, Say, StepLike
from agentkeel.resilience.clock import SystemClock
from agentkeel.runtime.service import AgentService
from agentkeel.telemetry.tracing import Tracing, build_tracing, tracing_off
from bench._common import (
    Figure,
    agent_app,
    free_port,
    median,
    parse_bench_args,
    percentile,
    print_figures,
    scripted_gateway,
    server_process,
)

SCRIPT: list[StepLike] = [CallTools.one("calculator", expression="6 * 7"), Say("It is 42.")]
SPANS_PER_TURN = 4
WARMUP_TURNS = 20
NOOP_SPANS = 100_000


@dataclass(frozen=True, slots=True)
class Options:
    runs: int = 5
    turns: int = 400


@asynccontextmanager
async def service_for(tracing: Tracing, directory: Path) -> AsyncIterator[AgentService]:
    """The agent server's service, its lifespan entered, tracing through ``tracing``."""
    settings = load_settings(
        layers=[],
        overrides={
            "secrets_dir": None,
            "data_dir": str(directory),
            "models": [{"name": "scripted", "kind": "scripted"}],
            "agent": {"tools": ["calculator"], "history_turns": 0},
            "guardrails": {
                "session_token_budget": 0,
                "tool_calls_per_minute": 0,
                "redact_secrets": False,
            },
            "quotas": {"user_daily_tokens": 0},
            "pricing": {"scripted": {"input_per_million": 1.0, "output_per_million": 2.0}},
        },
    ).settings
    clock = SystemClock()
    registry = CollectorRegistry()
    gateway = scripted_gateway(
        SCRIPT, settings=settings, clock=clock, registry=registry, tracing=tracing
    )
    async with agent_app(
        settings,
        gateway=gateway,
        store_url=f"sqlite:///{directory / 'sessions.db'}",
        clock=clock,
        registry=registry,
        tracing=tracing,
        run_sweeper=False,
    ) as app:
        yield app.state.service


@dataclass(frozen=True, slots=True)
class Samples:
    wall_us: list[float]
    """Each timed turn's wall time (the service's run_turn)."""
    cpu_us_per_turn: float
    """This process's CPU time (every thread) over the timed turns and the export of
    their spans, divided by the turns."""


async def turn_samples(tracing: Tracing, *, turns: int) -> Samples:
    """One fresh session per turn; every turn opens differently, so the scripted model
    plays the whole script for each. The warm-up's spans are exported before timing."""
    with tempfile.TemporaryDirectory(prefix="keel-bench-tracing-") as tmp:
        async with service_for(tracing, Path(tmp)) as service:
            sessions = [
                (await service.create_session("ana")).session_id
                for _ in range(turns + WARMUP_TURNS)
            ]
            wall: list[float] = []
            cpu_started = 0.0
            for n, session_id in enumerate(sessions):
                if n == WARMUP_TURNS:
                    tracing.force_flush()
                    cpu_started = time.process_time()
                started = time.perf_counter()
                outcome = await service.run_turn(session_id, f"turn {n}: what is 6 * 7?")
                elapsed = (time.perf_counter() - started) * 1e6
                if len(outcome.tool_calls) != 1:
                    raise RuntimeError(f"the bench turn made {len(outcome.tool_calls)} tool calls")
                if n >= WARMUP_TURNS:
                    wall.append(elapsed)
            tracing.force_flush()
            cpu = time.process_time() - cpu_started
    return Samples(wall_us=wall, cpu_us_per_turn=cpu / turns * 1e6)


@contextmanager
def receiver_process() -> Iterator[str]:
    """The OTLP receiver stand-in in a process of its own; yields its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [
        sys.executable,
        "-m",
        "agentkeel.testing.otlp_receiver",
        "--port",
        str(port),
        "--count-only",
    ]
    with server_process(command, ready_url=f"{url}/stats", base_url=url):
        yield url


def received_spans(url: str) -> int:
    with httpx.Client(trust_env=False, timeout=5) as client:
        return int(client.get(f"{url}/stats").json()["spans"])


def traced(endpoint: str) -> Tracing:
    """What ``keel serve`` builds with an endpoint: SDK provider, batch processor, OTLP."""
    return build_tracing(TracingSettings(otlp_endpoint=endpoint), service="agent")


def noop_span_us() -> float:
    """Microseconds one span costs with tracing off, opened as the instrumentation does
    (current span, no exception recording, attributes only when recording)."""
    tracer = tracing_off().tracer("agentkeel.bench")
    started = time.perf_counter()
    for _ in range(NOOP_SPANS):
        with tracer.start_as_current_span(
            "chat scripted",
            kind=SpanKind.CLIENT,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            if span.is_recording():
                raise RuntimeError("the no-op tracer recorded a span")
    return (time.perf_counter() - started) / NOOP_SPANS * 1e6


def _p50_p99(runs: list[list[float]]) -> tuple[float, float]:
    """The median over runs of each run's p50 and p99."""
    return median([median(r) for r in runs]), median([percentile(r, 99) for r in runs])


def run(options: Options | None = None) -> list[Figure]:
    options = options or Options()
    off: list[Samples] = []
    on: list[Samples] = []
    with receiver_process() as url:

        def run_off() -> None:
            off.append(asyncio.run(turn_samples(tracing_off(), turns=options.turns)))

        def run_on() -> None:
            before = received_spans(url)
            tracing = traced(url)
            try:
                on.append(asyncio.run(turn_samples(tracing, turns=options.turns)))
            finally:
                tracing.shutdown()
            got = received_spans(url) - before
            expected = (options.turns + WARMUP_TURNS) * SPANS_PER_TURN
            if got != expected:
                raise RuntimeError(f"the receiver got {got} spans of {expected} exported")

        for n in range(options.runs):
            for case in (run_off, run_on) if n % 2 == 0 else (run_on, run_off):
                case()
    off50, off99 = _p50_p99([s.wall_us for s in off])
    on50, on99 = _p50_p99([s.wall_us for s in on])
    noop = median([noop_span_us() for _ in range(options.runs)])
    off_cpu = median([s.cpu_us_per_turn for s in off])
    on_cpu = median([s.cpu_us_per_turn for s in on])
    note = f"median of {options.runs} runs, {options.turns} turns each"
    return [
        Figure("tracing off: turn p50", off50, "µs", "no SDK, no exporter: the no-op tracer"),
        Figure("tracing off: turn p99", off99, "µs", note),
        Figure(
            "tracing off: its spans per turn",
            noop * SPANS_PER_TURN,
            "µs",
            f"{SPANS_PER_TURN} no-op spans, timed alone",
        ),
        Figure(
            "tracing on: turn p50",
            on50,
            "µs",
            f"SDK + batch OTLP/HTTP export, {SPANS_PER_TURN} spans a turn, all received",
        ),
        Figure("tracing on: turn p99", on99, "µs", note),
        Figure("added per turn p50", on50 - off50, "µs", "on minus off (wall time)"),
        Figure("added per turn p99", on99 - off99, "µs", "on minus off (wall time)"),
        Figure("tracing off: CPU per turn", off_cpu, "µs", "all threads of this process"),
        Figure("tracing on: CPU per turn", on_cpu, "µs", "export thread included"),
        Figure("added CPU per turn", on_cpu - off_cpu, "µs", "on minus off"),
    ]


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=5, help="Runs; figures are their median.")
    parser.add_argument("--turns", type=int, default=400, help="Timed turns per run and case.")


def main(argv: list[str] | None = None) -> None:
    args: Any = parse_bench_args(
        "bench.tracing_overhead", __doc__, argv, options=_options, example="--runs 5"
    )
    print_figures(
        "tracing overhead per turn",
        run(Options(runs=args.runs, turns=args.turns)),
        setup="the service and its load in one process; the OTLP receiver in another, "
        "over loopback",
    )


if __name__ == "__main__":
    main()

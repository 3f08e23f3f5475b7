"""What the quota reservation costs a turn, per ledger: the SQLite store, PostgreSQL, Redis.

For each ledger the agent server is built in this process (real store, real
gateway over a zero-latency scripted model, no tools) and turns are run through
its service, one fresh session per turn, twice: once with every limit 0 (the
turn without quotas: nothing is reserved; usage is still recorded) and once
with the session budget and the user's and organization's daily and monthly
quotas on (five keys reserved before the model call, settled after). The
reservation alone (``TokenBudget.reserve`` + ``settle``, five keys) is timed
too. Figures are p50 and p99 in microseconds, each the median over ``--runs``
runs. PostgreSQL and Redis are skipped with a note when unreachable.

    python -m bench.quota --runs 3 --turns 400
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import psycopg
import redis.asyncio as aioredis
from prometheus_client import CollectorRegistry

from agentkeel.config.layers import load_settings
from agentkeel.resilience.budget import BudgetLimits, TokenBudget
from agentkeel.resilience.clock import SystemClock
from agentkeel.runtime.service import AgentService
from bench._common import (
    Figure,
    agent_app,
    median,
    parse_bench_args,
    percentile,
    postgres_schema,
    print_figures,
    scripted_gateway,
)

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
REDIS_URL = "redis://127.0.0.1:6379/0"
BIG = 10**12
QUOTAS_ON = {
    "user_daily_tokens": BIG,
    "user_monthly_tokens": BIG,
    "org_daily_tokens": BIG,
    "org_monthly_tokens": BIG,
}
QUOTAS_OFF = {key: 0 for key in QUOTAS_ON}


@dataclass(frozen=True, slots=True)
class Options:
    runs: int = 3
    turns: int = 400
    postgres_url: str = POSTGRES_URL
    redis_url: str = REDIS_URL


@dataclass(frozen=True, slots=True)
class Ledger:
    """One way of running the replica: its store and, for Redis, the ledger's URL."""

    name: str
    store_url: str
    redis_url: str | None = None


@asynccontextmanager
async def service_for(ledger: Ledger, *, quotas_on: bool) -> AsyncIterator[AgentService]:
    """The agent server's service, its lifespan entered, on ``ledger``."""
    settings = load_settings(
        layers=[],
        overrides={
            "secrets_dir": None,
            "models": [{"name": "scripted", "kind": "scripted"}],
            "agent": {"tools": [], "history_turns": 0},
            "redis_url": ledger.redis_url,
            "guardrails": {
                "session_token_budget": BIG if quotas_on else 0,
                "tool_calls_per_minute": 0,
                "redact_secrets": False,
            },
            # A price, so the spend path is part of every turn.
            "pricing": {"scripted": {"input_per_million": 1.0, "output_per_million": 2.0}},
            "quotas": {
                **(QUOTAS_ON if quotas_on else QUOTAS_OFF),
                "ledger": "redis" if ledger.redis_url else "store",
                "redis_prefix": f"keelbench:{uuid.uuid4().hex[:10]}:",
            },
        },
    ).settings
    clock = SystemClock()
    registry = CollectorRegistry()
    gateway = scripted_gateway((), settings=settings, clock=clock, registry=registry)
    async with agent_app(
        settings,
        gateway=gateway,
        store_url=ledger.store_url,
        clock=clock,
        registry=registry,
        run_sweeper=False,
    ) as app:
        service: AgentService = app.state.service
        yield service
        if ledger.redis_url:
            await _drop_redis_keys(ledger.redis_url, settings.quotas.redis_prefix)


async def turn_samples(ledger: Ledger, *, quotas_on: bool, turns: int) -> list[float]:
    """Microseconds per turn (the service's run_turn), one fresh session each."""
    async with service_for(ledger, quotas_on=quotas_on) as service:
        sessions = [
            (await service.create_session("ana", organization="acme")).session_id
            for _ in range(turns + 20)
        ]
        for session_id in sessions[:20]:  # warm-up: statements prepared, caches filled
            await service.run_turn(session_id, "hello")
        samples = []
        for session_id in sessions[20:]:
            started = time.perf_counter()
            await service.run_turn(session_id, "hello")
            samples.append((time.perf_counter() - started) * 1e6)
    return samples


async def reservation_samples(ledger: Ledger, *, calls: int) -> list[float]:
    """Microseconds per reserve + settle of one call's five keys, on the ledger alone."""
    async with service_for(ledger, quotas_on=True) as service:
        budget = service.budget
        assert isinstance(budget, TokenBudget)
        limits = BudgetLimits(
            session=BIG,
            user_daily_tokens=BIG,
            user_monthly_tokens=BIG,
            org_daily_tokens=BIG,
            org_monthly_tokens=BIG,
        )
        samples = []
        for n in range(calls + 20):
            started = time.perf_counter()
            reservation = await budget.reserve(
                f"s{n}", "ana", 600, organization="acme", limits=limits
            )
            await budget.settle(reservation, used=120)
            if n >= 20:
                samples.append((time.perf_counter() - started) * 1e6)
    return samples


async def _drop_redis_keys(url: str, prefix: str) -> None:
    client = aioredis.Redis.from_url(url)
    try:
        async for key in client.scan_iter(match=f"{prefix}*"):
            await client.delete(key)
    finally:
        await client.aclose()


def _reachable_postgres(url: str) -> str | None:
    try:
        with psycopg.connect(url, connect_timeout=2):
            return None
    except psycopg.Error as exc:
        return f"PostgreSQL not reachable at {url} ({type(exc).__name__})"


def _reachable_redis(url: str) -> str | None:
    async def ping() -> None:
        client = aioredis.Redis.from_url(url, socket_connect_timeout=2)
        try:
            await client.ping()
        finally:
            await client.aclose()

    try:
        asyncio.run(ping())
    except Exception as exc:
        return f"Redis not reachable at {url} ({type(exc).__name__})"
    return None


def _p50_p99(runs: list[list[float]]) -> tuple[float, float]:
    """The median over runs of each run's p50 and p99."""
    return median([median(r) for r in runs]), median([percentile(r, 99) for r in runs])


def measure(ledger: Ledger, options: Options) -> list[Figure]:
    note = f"median of {options.runs} runs, {options.turns} turns each"
    off: list[list[float]] = []
    on: list[list[float]] = []
    alone: list[list[float]] = []
    for _ in range(options.runs):
        off.append(asyncio.run(turn_samples(ledger, quotas_on=False, turns=options.turns)))
        on.append(asyncio.run(turn_samples(ledger, quotas_on=True, turns=options.turns)))
        alone.append(asyncio.run(reservation_samples(ledger, calls=options.turns)))
    off50, off99 = _p50_p99(off)
    on50, on99 = _p50_p99(on)
    res50, res99 = _p50_p99(alone)
    name = ledger.name
    return [
        Figure(f"{name}: turn without quotas p50", off50, "µs", note),
        Figure(f"{name}: turn without quotas p99", off99, "µs", note),
        Figure(
            f"{name}: turn with quotas p50", on50, "µs", "5 keys: session, user and org day/month"
        ),
        Figure(f"{name}: turn with quotas p99", on99, "µs", note),
        Figure(f"{name}: added per turn p50", on50 - off50, "µs", "with minus without"),
        Figure(f"{name}: reserve + settle p50", res50, "µs", "the ledger alone, 5 keys"),
        Figure(f"{name}: reserve + settle p99", res99, "µs", "the ledger alone, 5 keys"),
    ]


def run(options: Options | None = None) -> list[Figure]:
    options = options or Options()
    figures: list[Figure] = []
    with TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite:///{Path(tmp) / 'sessions.db'}"
        figures += measure(Ledger("SQLite store", sqlite_url), options)
        missing = _reachable_postgres(options.postgres_url)
        if missing is None:
            with postgres_schema(options.postgres_url) as url:
                figures += measure(Ledger("PostgreSQL store", url), options)
        else:
            figures.append(Figure("PostgreSQL store: skipped", 0, "", missing))
        missing = _reachable_redis(options.redis_url)
        if missing is None:
            redis_store = f"sqlite:///{Path(tmp) / 'sessions-redis.db'}"
            figures += measure(Ledger("Redis ledger", redis_store, options.redis_url), options)
        else:
            figures.append(Figure("Redis ledger: skipped", 0, "", missing))
    return figures


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=3, help="Runs; figures are their median.")
    parser.add_argument("--turns", type=int, default=400, help="Timed turns per run and case.")
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--redis-url", default=REDIS_URL)


def main(argv: list[str] | None = None) -> None:
    args: Any = parse_bench_args(
        "bench.quota", __doc__, argv, options=_options, example="--runs 3 --turns 400"
    )
    options = Options(
        runs=args.runs, turns=args.turns, postgres_url=args.postgres_url, redis_url=args.redis_url
    )
    print_figures(
        "quota reservation cost per turn",
        run(options),
        setup="the service and its load in one process; PostgreSQL and Redis on loopback",
    )


if __name__ == "__main__":
    main()

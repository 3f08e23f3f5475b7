"""What one Prometheus scrape of a replica's ``/metrics`` costs after many sessions.

A replica is built in this process (SQLite store in a temporary directory, a
zero-latency scripted model, the built-in tools, a price for the model so spend is
counted) and ``--sessions`` sessions are created, given one turn each (unless
``--no-turns``) and ended, through its ASGI app. Then ``GET /metrics`` is timed through
the app, every scrape recounting the live sessions as one every 15 s does
(``sessions.live_refresh_s`` is 5 s), and ``generate_latest`` alone on the same
registry. Figures: p50 and p99 in ms (medians over ``--runs`` batches of ``--scrapes``
scrapes, all on the one filled replica), the body's size in bytes and its series
(samples) count, the latter also after the first session: labels are bounded, so the
count does not grow with the sessions. Never asserts timing.

    python -m bench.scrape --sessions 10000 --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from agentkeel.config.settings import KeelSettings
from agentkeel.runtime.app import create_app
from bench._common import IN_PROCESS, Figure, median, parse_bench_args, percentile, print_figures

SESSIONS = 10_000
RUNS = 5
SCRAPES = 100
WARMUP_SCRAPES = 10
USERS = 100
MODEL = "scripted-bench"


@dataclass(frozen=True, slots=True)
class Options:
    sessions: int = SESSIONS
    runs: int = RUNS
    scrapes: int = SCRAPES
    turns: bool = True


@dataclass(frozen=True, slots=True)
class Measured:
    """One filled replica's figures."""

    fill_s: float
    scrape_ms: list[tuple[float, float]]
    """(p50, p99) of each batch of scrapes through the app."""
    render_ms: list[tuple[float, float]]
    """(p50, p99) of each batch of ``generate_latest`` calls."""
    body_bytes: int
    series: int
    series_after_one: int


def bench_settings(data_dir: Path) -> KeelSettings:
    return KeelSettings.model_validate(
        {
            "data_dir": str(data_dir),
            "secrets_dir": None,
            "log_level": "warning",
            "models": [{"name": "scripted", "kind": "scripted", "model": MODEL}],
            "pricing": {MODEL: {"input_per_million": 3.0, "output_per_million": 15.0}},
            # Every scrape recounts the live sessions, as a 15 s scrape interval does.
            "sessions": {"live_refresh_s": 0},
        }
    )


def series_count(body: bytes) -> int:
    """Samples in an exposition body: one per series."""
    return sum(len(family.samples) for family in text_string_to_metric_families(body.decode()))


async def fill_and_measure(data_dir: Path, options: Options) -> Measured:
    """Fill a replica with ``options.sessions`` ended sessions, then time its scrapes."""
    registry = CollectorRegistry()
    app = create_app(bench_settings(data_dir), registry=registry, run_sweeper=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            series_after_one = 0
            started = time.perf_counter()
            for number in range(options.sessions):
                created = await client.post("/v1/sessions", json={"user_id": f"u{number % USERS}"})
                assert created.status_code == 201, created.text
                session = created.json()["session_id"]
                if options.turns:
                    turn = await client.post(
                        f"/v1/sessions/{session}/messages", json={"content": "hello"}
                    )
                    assert turn.status_code == 200, turn.text
                ended = await client.delete(f"/v1/sessions/{session}")
                assert ended.status_code == 200, ended.text
                if number == 0:
                    series_after_one = series_count((await client.get("/metrics")).content)
            fill_s = time.perf_counter() - started

            scrape_ms: list[tuple[float, float]] = []
            render_ms: list[tuple[float, float]] = []
            body = b""
            for _ in range(options.runs):
                samples = []
                for index in range(WARMUP_SCRAPES + options.scrapes):
                    began = time.perf_counter()
                    response = await client.get("/metrics")
                    elapsed = (time.perf_counter() - began) * 1000
                    assert response.status_code == 200, response.text
                    body = response.content
                    if index >= WARMUP_SCRAPES:
                        samples.append(elapsed)
                scrape_ms.append((median(samples), percentile(samples, 99)))
                renders = []
                for index in range(WARMUP_SCRAPES + options.scrapes):
                    began = time.perf_counter()
                    generate_latest(registry)
                    if index >= WARMUP_SCRAPES:
                        renders.append((time.perf_counter() - began) * 1000)
                render_ms.append((median(renders), percentile(renders, 99)))
    return Measured(
        fill_s=fill_s,
        scrape_ms=scrape_ms,
        render_ms=render_ms,
        body_bytes=len(body),
        series=series_count(body),
        series_after_one=series_after_one,
    )


def run(options: Options | None = None) -> list[Figure]:
    chosen = options or Options()
    with tempfile.TemporaryDirectory(prefix="keel-bench-scrape-") as scratch:
        measured = asyncio.run(fill_and_measure(Path(scratch), chosen))
    what = f"after {chosen.sessions:,} sessions"
    note = (
        f"median of {chosen.runs} batches of {chosen.scrapes} scrapes; "
        f"{'one turn each' if chosen.turns else 'no turns'}"
    )
    figures = [
        Figure(
            f"GET /metrics through the app {what}, p50",
            median_of(measured.scrape_ms, 0),
            "ms",
            note,
        ),
        Figure(
            f"GET /metrics through the app {what}, p99",
            median_of(measured.scrape_ms, 1),
            "ms",
            note,
        ),
        Figure(f"generate_latest alone {what}, p50", median_of(measured.render_ms, 0), "ms", note),
        Figure(f"generate_latest alone {what}, p99", median_of(measured.render_ms, 1), "ms", note),
        Figure(f"/metrics body {what}", measured.body_bytes, "bytes"),
        Figure(f"series {what}", measured.series, "series"),
        Figure("series after the first session", measured.series_after_one, "series"),
        Figure(
            f"filling: {chosen.sessions:,} sessions created, "
            f"{'given a turn, ' if chosen.turns else ''}ended",
            measured.fill_s,
            "s",
        ),
    ]
    return figures


def median_of(pairs: Sequence[tuple[float, float]], index: int) -> float:
    return median([pair[index] for pair in pairs])


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sessions", type=int, default=SESSIONS, help="Sessions to fill with.")
    parser.add_argument("--runs", type=int, default=RUNS, help="Batches of scrapes.")
    parser.add_argument("--scrapes", type=int, default=SCRAPES, help="Scrapes per batch.")
    parser.add_argument(
        "--no-turns", action="store_true", help="Create and end sessions without a turn."
    )


def options_from(args: argparse.Namespace) -> Options:
    for name in ("sessions", "runs", "scrapes"):
        if getattr(args, name) < 1:
            raise SystemExit(f"--{name} must be at least 1, got {getattr(args, name)}")
    return Options(
        sessions=args.sessions, runs=args.runs, scrapes=args.scrapes, turns=not args.no_turns
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_bench_args(
        "bench.scrape", __doc__, argv, options=add_options, example="--sessions 10000 --runs 5"
    )
    figures = run(options_from(args))
    print_figures("one scrape of a replica's /metrics", figures, setup=IN_PROCESS)


if __name__ == "__main__":
    main()

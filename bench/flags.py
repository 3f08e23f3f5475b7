"""What evaluating the feature flags costs a turn, in process.

Times ``LiveSettings.for_turn`` (what a replica calls once at the start of every turn)
with the flag layer evaluating 0, 1, 5 and every live flag through OpenFeature and
the flagd provider's in-process evaluator, each flag with targeting (a rule on the
organization, then a 50/50 ``fractional`` rollout), for a rotation of 1,000 users in
two organizations, counted in the metrics as a replica counts them.

Next to it: the turn overhead without flags, one in-process app turn (ASGI, the whole
turn path with a zero-latency scripted provider and SQLite), and the same turn with
every flag in force. Figures are medians over ``--runs`` runs of each run's p50 and
p99, in microseconds. Never asserts timing.

    python -m bench.flags --runs 3
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
from prometheus_client import CollectorRegistry

from agentkeel.config.flag_file import FlagDocument, setting_kind, validate_flag_document
from agentkeel.config.flag_layer import FlagLayer, open_flag_layer
from agentkeel.config.live import LiveSettings, TurnContext, live_keys
from agentkeel.config.settings import KeelSettings
from agentkeel.runtime.app import create_app
from agentkeel.telemetry.metrics import FlagMetrics
from bench._common import (
    IN_PROCESS,
    Figure,
    median,
    parse_bench_args,
    percentile,
    print_figures,
)

EVALUATIONS = 5_000
WARMUP = 500
TURNS = 1_000
TURN_WARMUP = 100
USERS = 1_000
FLAG_COUNTS = (0, 1, 5, len(live_keys()))

_VARIANTS: dict[str, tuple[Any, Any]] = {
    "agent.model_chain": ("a", "b"),
    "agent.tools": (["calculator"], []),
    "guardrails.context_trim_ratio": (0.8, 0.9),
    # The reply cap is part of every reservation: a real size, not a never-met limit.
    "guardrails.max_output_tokens": (256, 512),
    "pricing": (
        {"m": {"input_per_million": 1.0, "output_per_million": 2.0}},
        {"m": {"input_per_million": 2.0, "output_per_million": 4.0}},
    ),
}


def bench_settings(data_dir: Path, *, flags: bool = True) -> KeelSettings:
    return KeelSettings.model_validate(
        {
            "data_dir": str(data_dir),
            "secrets_dir": None,
            "agent": {"tools": [], "system_prompt": None},
            "models": [{"name": "a", "kind": "scripted"}, {"name": "b", "kind": "scripted"}],
            "guardrails": {
                "max_turns_per_session": 1_000_000,
                "tool_calls_per_minute": 0,
                "session_token_budget": 0,
            },
            "quotas": {"user_daily_tokens": 0},
            "flags": {"source": "file" if flags else "none"},
            "log_level": "warning",
        }
    )


def flag_document(count: int, settings: KeelSettings) -> FlagDocument:
    """``count`` live keys as flags, each targeted (organization, then a 50/50 rollout)."""
    flags: dict[str, Any] = {}
    for key in live_keys()[:count]:
        kind = setting_kind(key)
        # Limits high enough that no bench turn ever meets one.
        generic = (True, False) if kind == "boolean" else (1_000_000_000, 2_000_000_000)
        one, two = _VARIANTS.get(key, generic)
        flags[key] = {
            "state": "ENABLED",
            "variants": {"one": one, "two": two},
            "defaultVariant": "one",
            "targeting": {
                "if": [
                    {"==": [{"var": "organization"}, "acme"]},
                    "two",
                    {"fractional": [["one", 50], ["two", 50]]},
                ]
            },
        }
    return validate_flag_document({"flags": flags}, origin="bench", settings=settings)


def contexts() -> list[TurnContext]:
    return [
        TurnContext(
            user_id=f"user-{i}",
            organization="acme" if i % 2 else "globex",
            agent_id="default",
            version="v1",
            session_id=f"s-{i}",
        )
        for i in range(USERS)
    ]


def time_evaluations(count: int, settings: KeelSettings) -> tuple[float, float]:
    """p50 and p99 (µs) of ``for_turn`` with ``count`` flags in force."""
    document = flag_document(count, settings)
    users = contexts()
    with open_flag_layer(settings, document=document) as opened:
        assert opened is not None
        layer = FlagLayer(
            client=opened.client,
            settings=settings,
            flags=lambda: document.flags,
            metrics=FlagMetrics(CollectorRegistry()),
            lock=threading.Lock(),  # as a replica's gate lock: held for the turn's flags
        )
        live = LiveSettings(settings, layers=[layer])
        for i in range(WARMUP):
            live.for_turn(users[i % USERS])
        samples = []
        for i in range(EVALUATIONS):
            context = users[i % USERS]
            started = time.perf_counter()
            live.for_turn(context)
            samples.append((time.perf_counter() - started) * 1e6)
    return median(samples), percentile(samples, 99)


def write_flag_file(data_dir: Path, count: int) -> None:
    settings = bench_settings(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "flags.json").write_bytes(flag_document(count, settings).content)


async def time_turns(data_dir: Path, *, flags: int) -> tuple[float, float]:
    """p50 and p99 (µs) of one in-process app turn, with ``flags`` flags in force (their
    file written by ``write_flag_file`` first)."""
    settings = bench_settings(data_dir, flags=flags > 0)
    app = create_app(settings, registry=CollectorRegistry(), run_sweeper=False)
    samples = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
            created = await client.post("/v1/sessions", json={"user_id": "user-1"})
            session = created.json()["session_id"]
            url = f"/v1/sessions/{session}/messages"
            for i in range(TURN_WARMUP + TURNS):
                started = time.perf_counter()
                response = await client.post(url, json={"content": "What is the weather like?"})
                elapsed = (time.perf_counter() - started) * 1e6
                assert response.status_code == 200, response.text
                if i >= TURN_WARMUP:
                    samples.append(elapsed)
    return median(samples), percentile(samples, 99)


def run(runs: int = 3) -> list[Figure]:
    per_count: dict[int, list[tuple[float, float]]] = {count: [] for count in FLAG_COUNTS}
    turns: dict[int, list[tuple[float, float]]] = {0: [], len(live_keys()): []}
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="keel-bench-flags-") as scratch:
            root = Path(scratch)
            settings = bench_settings(root / "eval")
            for count in FLAG_COUNTS:
                per_count[count].append(time_evaluations(count, settings))
            for flags in turns:
                data_dir = root / f"turns-{flags}"
                if flags:
                    write_flag_file(data_dir, flags)
                turns[flags].append(asyncio.run(time_turns(data_dir, flags=flags)))
    note = f"median of {runs} runs"
    figures: list[Figure] = []
    for count, samples in per_count.items():
        label = f"all {count} flags" if count == len(live_keys()) else f"{count} flags"
        what = f"flag evaluation per turn, {label.replace('1 flags', '1 flag')}"
        figures.append(Figure(f"{what} p50", median([s[0] for s in samples]), "µs", note))
        figures.append(Figure(f"{what} p99", median([s[1] for s in samples]), "µs", note))
    for flags, samples in turns.items():
        what = "in-process turn, no flags" if not flags else f"in-process turn, {flags} flags"
        figures.append(Figure(f"{what} p50", median([s[0] for s in samples]), "µs", note))
        figures.append(Figure(f"{what} p99", median([s[1] for s in samples]), "µs", note))
    return figures


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=3, help="Runs to take the median of.")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_bench_args("bench.flags", __doc__, argv, options=add_options, example="--runs 3")
    print_figures("feature flags: cost per turn", run(runs=args.runs), setup=IN_PROCESS)


if __name__ == "__main__":
    main()

"""What logging costs a turn, in process: the per-category JSON files against nothing.

The agent server is built in this process (real SQLite store, real gateway over a
zero-latency scripted model that calls the in-process calculator once, then
answers) and driven through ASGI; every timed turn is the first turn of a fresh
session (made before the clock starts), so each one makes a model call, a tool
call and a second model call. Three ways of logging, at ``log_level: info``,
taking turns one turn at a time on the same app (so a busy machine slows each
alike; the root logger is set up once and switched by handler levels):

- ``nothing``: logging disabled, no line is even made (the floor);
- ``stdout``: every line as JSON on a stream that goes to ``/dev/null`` (a pod
  without a log directory, minus the pipe);
- ``files``: what ``keel up`` gives its children: ``logging.dir`` set, every
  category written through the queue to ``<dir>/<category>/<service>.jsonl``,
  warnings also on stdout (``/dev/null``). The writer thread is there in all
  three ways; it only works in this one.

Figures are p50 and p99 in microseconds per turn (each the median over ``--runs``
runs), the time ``files`` adds to a turn over ``nothing``, and the lines and
bytes ``files`` wrote per turn (counted in the files). Never asserts timing.

    python -m bench.logging_overhead --runs 5
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from prometheus_client import CollectorRegistry

from agentkeel.config.logs import LoggingSettings
from agentkeel.config.settings import KeelSettings
from agentkeel.runtime.app import create_app
from agentkeel.telemetry.log_categories import CATEGORIES
from agentkeel.telemetry.logging import configure_logging
from bench._common import IN_PROCESS, Figure, median, parse_bench_args, percentile, print_figures

TURNS = 400
WARMUP = 50
MODES = ("nothing", "stdout", "files")
TURN_ID = "bench-turn-"
FILE_TURNS = f"{TURN_ID}files-"
"""The correlation ids of the turns logged to files: the lines counted per turn are theirs."""
SCRIPT = """
on_end: echo
steps:
  - tool_calls:
      - {tool: calculator, arguments: {expression: "6 * 7"}}
  - say: "It is 42."
"""


@dataclass
class Written:
    """Lines (per category) and bytes the turns wrote into the log files."""

    lines: dict[str, int] = field(default_factory=dict)
    bytes: int = 0


def bench_settings(data_dir: Path) -> KeelSettings:
    script = data_dir / "script.yaml"
    data_dir.mkdir(parents=True, exist_ok=True)
    script.write_text(SCRIPT)
    return KeelSettings.model_validate(
        {
            "data_dir": str(data_dir),
            "secrets_dir": None,
            "log_level": "info",
            "agent": {"tools": ["calculator"], "system_prompt": None},
            "models": [{"name": "scripted", "kind": "scripted", "script": str(script)}],
            "guardrails": {
                "max_turns_per_session": 1_000_000,
                "tool_calls_per_minute": 0,
                "session_token_budget": 0,
            },
            "quotas": {"user_daily_tokens": 0},
            "flags": {"source": "none"},
        }
    )


def count_written(directory: Path) -> Written:
    written = Written(lines=dict.fromkeys(CATEGORIES, 0))
    for category in CATEGORIES:
        folder = directory / category
        if not folder.is_dir():
            continue
        for path in folder.iterdir():
            for raw in path.read_bytes().splitlines():
                if str(json.loads(raw).get("correlation_id") or "").startswith(FILE_TURNS):
                    written.lines[category] += 1
                    written.bytes += len(raw) + 1
    return written


class LoggingModes:
    """The root logger set up once, as ``keel up`` sets a child up (stdout on
    ``/dev/null``, the files in ``log_dir``), then switched between the three ways by
    handler levels: switching costs nothing, so the ways can take turns turn by turn."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir

    @contextmanager
    def installed(self) -> Iterator[LoggingModes]:
        """Set up for the block; afterwards drained, closed and put back as it was."""
        root = logging.getLogger()
        handlers, level = list(root.handlers), root.level
        with open(os.devnull, "w", encoding="utf-8") as devnull:
            self._sinks = configure_logging(
                service="agent",
                level="info",
                stream=devnull,
                settings=LoggingSettings(dir=self.log_dir),
            )
            self._stdout = next(h for h in root.handlers if h is not self._sinks.files)
            try:
                yield self
            finally:
                logging.disable(logging.NOTSET)
                self._sinks.close()
                for handler in list(root.handlers):
                    root.removeHandler(handler)
                for handler in handlers:
                    root.addHandler(handler)
                root.setLevel(level)

    def use(self, mode: str) -> None:
        files = self._sinks.files
        assert files is not None
        logging.disable(logging.CRITICAL if mode == "nothing" else logging.NOTSET)
        self._stdout.setLevel(logging.INFO if mode == "stdout" else logging.WARNING)
        files.setLevel(logging.NOTSET if mode == "files" else logging.CRITICAL + 1)


async def time_turns(
    data_dir: Path, log_dir: Path, *, turns: int, warmup: int
) -> dict[str, list[float]]:
    """Microseconds of each timed turn, per way of logging. The ways take turns one turn
    at a time, in a rotating order, on one app: a busy machine slows each of them alike."""
    settings = bench_settings(data_dir)
    app = create_app(settings, registry=CollectorRegistry(), run_sweeper=False)
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    with LoggingModes(log_dir).installed() as modes:
        modes.use("nothing")
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://agent") as client:
                sessions = []
                for _ in range(warmup + turns * len(MODES)):
                    created = await client.post("/v1/sessions", json={"user_id": "bench"})
                    sessions.append(created.json()["session_id"])
                for index in range(warmup):
                    await _turn(client, sessions.pop(), f"warmup-{index}")
                for index in range(turns):
                    for step in range(len(MODES)):
                        mode = MODES[(index + step) % len(MODES)]
                        modes.use(mode)
                        turn_id = f"{TURN_ID}{mode}-{index}"
                        samples[mode].append(await _turn(client, sessions.pop(), turn_id))
                modes.use("nothing")
    return samples


async def _turn(client: httpx.AsyncClient, session: str, turn_id: str) -> float:
    started = time.perf_counter()
    response = await client.post(
        f"/v1/sessions/{session}/messages",
        json={"content": f"question {turn_id}"},
        headers={"X-Correlation-ID": turn_id},
    )
    elapsed = (time.perf_counter() - started) * 1e6
    assert response.status_code == 200, response.text
    assert response.json()["tool_calls"], response.text
    return elapsed


def one_run(root: Path, *, turns: int, warmup: int) -> tuple[dict[str, list[float]], Written]:
    """One run's samples per way of logging, and what the ``files`` turns wrote."""
    log_dir = root / "logs"
    samples = asyncio.run(time_turns(root / "data", log_dir, turns=turns, warmup=warmup))
    return samples, count_written(log_dir)


def run(runs: int = 3, turns: int = TURNS, warmup: int = WARMUP) -> list[Figure]:
    results: dict[str, list[tuple[float, float]]] = {mode: [] for mode in MODES}
    written: list[Written] = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="keel-bench-logs-") as scratch:
            samples, files = one_run(Path(scratch), turns=turns, warmup=warmup)
        for mode in MODES:
            results[mode].append((median(samples[mode]), percentile(samples[mode], 99)))
        written.append(files)
    note = f"median of {runs} runs, {turns} turns each"
    figures: list[Figure] = []
    for mode in MODES:
        p50 = median([r[0] for r in results[mode]])
        p99 = median([r[1] for r in results[mode]])
        figures.append(Figure(f"turn, logging to {mode}, p50", p50, "µs", note))
        figures.append(Figure(f"turn, logging to {mode}, p99", p99, "µs", note))
    for index, name in ((0, "p50"), (1, "p99")):
        pairs = zip(results["files"], results["nothing"], strict=True)
        added = median([files[index] - nothing[index] for files, nothing in pairs])
        figures.append(Figure(f"added by file logging per turn, {name}", added, "µs", note))
    per_turn = {
        category: median([w.lines[category] / turns for w in written]) for category in CATEGORIES
    }
    lines = sum(per_turn.values())
    shown = ", ".join(f"{c} {n:.1f}" for c, n in per_turn.items() if n)
    figures.append(Figure("lines written per turn", lines, "lines", shown))
    figures.append(
        Figure("bytes written per turn", median([w.bytes / turns for w in written]), "B")
    )
    return figures


def add_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--runs", type=int, default=3, help="Runs to take the median of.")
    parser.add_argument("--turns", type=int, default=TURNS, help="Timed turns per run and mode.")


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_bench_args(
        "bench.logging_overhead", __doc__, argv, options=add_options, example="--runs 5"
    )
    print_figures("logging: cost per turn", run(runs=args.runs, turns=args.turns), setup=IN_PROCESS)


if __name__ == "__main__":
    main()

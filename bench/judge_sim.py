"""Canary judge simulation: false rollbacks of healthy canaries, detection of a bad one.

A canary rollout as the rollout controller runs it by default: 5 % of new
traffic for 30 min, 25 % for 2 h, 50 % for 4 h, then 100 % (the end of the
comparison); 10 turns/s in total, each turn making ``--tool-calls-per-turn``
tool calls; the judge is asked once a minute with cumulative counts; the
stable version's tool success is 95 %.

- A/A: the canary is as good as the stable version (``--rollouts`` of them);
  every rollback is a false one.
- A/B: the canary's tool success is ``--drop`` lower (5 points) from the start;
  the figures are the share detected (rolled back) and the time to detection.

Both the judge's default method (``sequential``) and the operations guide's
two-sigma rule (``method: two-sigma``) judge the same simulated data. Each is
the real ``agentkeel.deploy.judge.Judge`` with the default ``JudgeSettings``
(every other metric has no data here, so only tool success decides, with its
default third of ``alpha``; the other metrics keep their shares unspent).
``--all-rates`` also feeds A/A data to the other default rates (model errors
1 %, memory write errors 0.1 %, guardrail trips 2 %, turn errors 1 %) for the
false-rollback rate of the whole judge.

Traffic per minute splits between the versions binomially (normal
approximation); failures are exact binomial draws. Seeded: the same
``--seed`` gives the same figures.
"""

from __future__ import annotations

import argparse
import functools
import math
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass

from rich.table import Table

from agentkeel.config.judge import JudgeSettings
from agentkeel.deploy.judge import Judge
from agentkeel.deploy.types import Proportion, VersionWindow
from bench._common import Figure, console, parse_bench_args

STEPS: tuple[tuple[float, int], ...] = ((0.05, 30), (0.25, 120), (0.50, 240))
"""(canary share of traffic, minutes) of each step before 100 %."""

OTHER_RATES = {
    "model_errors": 0.01,
    "memory_write_errors": 0.001,
    "guardrail_trips": 0.02,
    "turn_errors": 0.01,
}
"""A/A failure rates of the other default rates (per turn) for ``--all-rates``."""

_CHUNK_MEAN = 20.0


def binomial(rng: random.Random, n: int, p: float) -> int:
    """An exact Binomial(n, p) draw by inversion, in chunks whose mean stays small."""
    if n <= 0 or p <= 0.0:
        return 0
    if p >= 1.0:
        return n
    if p > 0.5:
        return n - binomial(rng, n, 1.0 - p)
    chunk = max(1, int(_CHUNK_MEAN / p))
    total = 0
    while n > 0:
        size = min(n, chunk)
        total += _inversion(rng, size, p)
        n -= size
    return total


def _inversion(rng: random.Random, n: int, p: float) -> int:
    q = 1.0 - p
    ratio = p / q
    step = (n + 1) * ratio
    r = q**n
    u = rng.random()
    x = 0
    while u > r:
        u -= r
        x += 1
        if x > n:
            return n
        r *= step / x - ratio
    return x


def split(rng: random.Random, n: int, share: float) -> int:
    """How many of ``n`` go to the canary (normal approximation of the binomial)."""
    mean = n * share
    sd = math.sqrt(n * share * (1.0 - share))
    return min(n, max(0, round(rng.gauss(mean, sd))))


@dataclass(frozen=True, slots=True)
class Outcome:
    """When each method rolled back, in minutes from the start (None: never)."""

    sequential: int | None
    two_sigma: int | None


def simulate(
    rng: random.Random,
    *,
    stable_failure: float,
    canary_failure: float,
    turns_per_minute: int,
    calls_per_turn: int,
    all_rates: bool,
    stop_early: bool,
    settings: JudgeSettings,
    two_sigma: JudgeSettings,
) -> Outcome:
    """One rollout; both judges see the same counts."""
    judges = {"sequential": Judge(settings), "two_sigma": Judge(two_sigma)}
    rolled_back: dict[str, int | None] = {"sequential": None, "two_sigma": None}
    names = ["tool_success", *(OTHER_RATES if all_rates else ())]
    counts = {(name, side): [0, 0] for name in names for side in ("stable", "canary")}
    minute = 0
    for share, minutes in STEPS:
        for _ in range(minutes):
            minute += 1
            canary_turns = split(rng, turns_per_minute, share)
            stable_turns = turns_per_minute - canary_turns
            for side, turns, failure in (
                ("stable", stable_turns, stable_failure),
                ("canary", canary_turns, canary_failure),
            ):
                calls = turns * calls_per_turn
                tally = counts[("tool_success", side)]
                tally[0] += binomial(rng, calls, failure)
                tally[1] += calls
                if all_rates:
                    for name, rate in OTHER_RATES.items():
                        other = counts[(name, side)]
                        other[0] += binomial(rng, turns, rate)
                        other[1] += turns
            windows = {
                side: VersionWindow(
                    version=side,
                    rates={name: Proportion(*counts[(name, side)]) for name in names},
                    distributions={},
                )
                for side in ("stable", "canary")
            }
            for method, judge in judges.items():
                if rolled_back[method] is not None:
                    continue
                if judge.evaluate(windows["stable"], windows["canary"]).rollback:
                    rolled_back[method] = minute
            if stop_early and all(v is not None for v in rolled_back.values()):
                return Outcome(rolled_back["sequential"], rolled_back["two_sigma"])
    return Outcome(rolled_back["sequential"], rolled_back["two_sigma"])


@dataclass(frozen=True, slots=True)
class Figures:
    """One method's figures over the A/A and the A/B rollouts."""

    method: str
    false_rollbacks: int
    aa_rollouts: int
    detected: int
    ab_rollouts: int
    median_minutes: float | None
    p90_minutes: float | None


def run_scenarios(
    *,
    rollouts: int,
    seed: int,
    calls_per_turn: int,
    drop: float,
    baseline: float = 0.95,
    turns_per_s: float = 10.0,
    all_rates: bool = False,
    settings: JudgeSettings | None = None,
) -> list[Figures]:
    """The A/A and A/B runs for one number of tool calls per turn."""
    settings = settings or JudgeSettings()
    two_sigma = settings.model_copy(update={"method": "two-sigma"})
    rng = random.Random(seed)
    turns_per_minute = round(turns_per_s * 60)
    failure = 1.0 - baseline
    one = functools.partial(
        simulate,
        rng,
        stable_failure=failure,
        turns_per_minute=turns_per_minute,
        calls_per_turn=calls_per_turn,
        all_rates=all_rates,
        stop_early=True,
        settings=settings,
        two_sigma=two_sigma,
    )
    aa = [one(canary_failure=failure) for _ in range(rollouts)]
    ab = [one(canary_failure=failure + drop) for _ in range(rollouts)]
    figures = []
    for method in ("sequential", "two_sigma"):
        false = sum(getattr(o, method) is not None for o in aa)
        times = sorted(t for o in ab if (t := getattr(o, method)) is not None)
        figures.append(
            Figures(
                method="two-sigma" if method == "two_sigma" else method,
                false_rollbacks=false,
                aa_rollouts=rollouts,
                detected=len(times),
                ab_rollouts=rollouts,
                median_minutes=statistics.median(times) if times else None,
                p90_minutes=times[min(len(times) - 1, int(0.9 * len(times)))] if times else None,
            )
        )
    return figures


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rollouts", type=int, default=1000, help="rollouts per scenario")
    parser.add_argument("--seed", type=int, default=8, help="random seed")
    parser.add_argument(
        "--tool-calls-per-turn",
        default="1,2",
        help="comma-separated: one table row pair per value (default 1,2)",
    )
    parser.add_argument("--drop", type=float, default=0.05, help="tool success drop of the A/B")
    parser.add_argument(
        "--all-rates", action="store_true", help="feed A/A data to every default rate too"
    )


def run(argv: Sequence[str] | None = None) -> list[Figure]:
    """The figures for ``python -m bench``, one row per method and calls per turn."""
    return _figures(*_measure(argv))


def _measure(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[tuple[int, Figures]]]:
    args = parse_bench_args("bench.judge_sim", __doc__, argv, options=_options)
    out = console()
    rows: list[tuple[int, Figures]] = []
    for calls in (int(x) for x in str(args.tool_calls_per_turn).split(",") if x.strip()):
        started = time.perf_counter()
        with out.status(f"{2 * args.rollouts} rollouts, {calls} tool call(s) per turn..."):
            results = run_scenarios(
                rollouts=args.rollouts,
                seed=args.seed,
                calls_per_turn=calls,
                drop=args.drop,
                all_rates=args.all_rates,
            )
        out.print(
            f"{calls} tool call(s) per turn: {2 * args.rollouts} rollouts "
            f"in {time.perf_counter() - started:.0f}s"
        )
        rows += [(calls, f) for f in results]
    return args, rows


def _figures(args: argparse.Namespace, rows: Sequence[tuple[int, Figures]]) -> list[Figure]:
    figures: list[Figure] = []
    for calls, f in rows:
        label = f"judge {f.method}, {calls} tool call(s)/turn"
        figures.append(
            Figure(
                f"{label}: false rollbacks (A/A)",
                100.0 * f.false_rollbacks / f.aa_rollouts,
                "%",
                f"{f.false_rollbacks} of {f.aa_rollouts}; target <= 0.5 %",
            )
        )
        figures.append(
            Figure(
                f"{label}: detected (-{args.drop * 100:g} points)",
                100.0 * f.detected / f.ab_rollouts,
                "%",
                f"{f.detected} of {f.ab_rollouts}; target >= 99 %",
            )
        )
        if f.median_minutes is not None:
            figures.append(
                Figure(
                    f"{label}: median time to detection",
                    f.median_minutes,
                    "min",
                    f"p90 {f.p90_minutes} min; target <= 8 min",
                )
            )
    return figures


def main(argv: Sequence[str] | None = None) -> None:
    args, rows = _measure(argv)
    table = Table(title="canary judge simulation", title_justify="left")
    columns = ("method", "tool calls/turn", "false rollbacks (A/A)", "detected (A/B)",
               "median detection", "p90 detection")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "method" else "right")
    for calls, f in rows:
        false = 100.0 * f.false_rollbacks / f.aa_rollouts
        table.add_row(
            f.method,
            str(calls),
            f"{false:.1f} % ({f.false_rollbacks}/{f.aa_rollouts})",
            f"{100.0 * f.detected / f.ab_rollouts:.1f} %",
            "-" if f.median_minutes is None else f"{f.median_minutes:g} min",
            "-" if f.p90_minutes is None else f"{f.p90_minutes:g} min",
        )
    out = console()
    out.print(table)
    scope = "every default rate fed A/A data" if args.all_rates else "tool success only"
    out.print(
        f"[dim]{args.rollouts} A/A and {args.rollouts} A/B rollouts (tool success "
        f"-{args.drop * 100:g} points), seed {args.seed}, {scope}; targets: false rollbacks "
        "<= 0.5 %, detected >= 99 %, median detection <= 8 min[/]"
    )


if __name__ == "__main__":
    main()

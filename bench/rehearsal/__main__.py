"""Release rehearsals on a real ``keel up`` with live sessions, checked from the stored turns.

Scenarios (all by default, in this order):

  canary    v2 with tool success 5 points worse is rolled back by the judge; a healthy v2
            is promoted
  kill      SIGKILL of a canary replica in the middle of a canary step
  bluegreen switch to green, then `keel rollout abort` within the switch-back window
  rolling   4 replicas replaced one at a time; the version skew sampled during it
  rollback  `keel rollback` SIGKILLed half-way, then run again

Each prints its figures: failed turns, sessions checked, acknowledged turns missing,
sessions that changed version more than once, moves, and the scenario's timings.
Exit 1 when a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from bench._common import console, parse_bench_args, print_figures
from bench.rehearsal.scenarios import SCENARIOS, Options


def _options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("scenario", nargs="*", help=f"any of: {', '.join(SCENARIOS)}")
    parser.add_argument(
        "--sessions", type=int, default=None, help="live sessions (default per scenario)"
    )
    parser.add_argument("--time-scale", type=float, default=30.0, help="rollout time divisor (30)")


def main(argv: list[str] | None = None) -> int:
    args = parse_bench_args(
        "bench.rehearsal", __doc__, argv, options=_options, example="canary --time-scale 30"
    )
    names = args.scenario or list(SCENARIOS)
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown:
        console().print(
            f"[red]unknown scenario {', '.join(unknown)}; pick from {', '.join(SCENARIOS)}[/]"
        )
        return 2
    failed = False
    out = console()
    for name in names:
        options = Options(time_scale=args.time_scale)
        if args.sessions is not None:
            options.sessions = args.sessions
        elif name == "bluegreen":
            options.sessions = 100
        outcome = asyncio.run(SCENARIOS[name](options))
        print_figures(f"rehearsal: {name}", outcome.figures)
        if outcome.skew:
            out.print("version skew during the rollout:")
            for line in outcome.skew:
                out.print(f"  {line}")
        for verdict in outcome.verdicts.values():
            for problem in verdict.problems():
                out.print(f"[red]{problem}[/]")
        for note in outcome.notes:
            out.print(f"[red]{note}[/]")
        out.print(f"{name}: {'[green]ok[/]' if outcome.ok else '[red]FAILED[/]'}")
        failed |= not outcome.ok
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m bench``: every benchmark in turn, then one summary table.

Each benchmark is its own module (``python -m bench.overhead`` runs one). A
module with ``run() -> list[Figure]`` joins the summary; one with only
``main()`` prints its own table when its turn comes. A benchmark that fails
is reported and the others still run.
"""

from __future__ import annotations

import importlib
import time
import traceback

from bench._common import Figure, console, parse_bench_args, print_figures

BENCHMARKS = [
    "overhead",
    "concurrency",
    "replica_rss",
    "local_model",
    "startup",
    "tool_call",
    "memory_store",
    "judge_sim",
    "router",
    "auth_cost",
    "frontdoor",
    "flags",
    "quota",
    "scrape",
    "logging_overhead",
    "tracing_overhead",
]
# The full memory benchmark (up to 1M memories) takes many minutes; the summary
# run uses smaller sizes. Run `python -m bench.memory_store` alone for the rest.
QUICK_ARGS = {"memory_store": ["--sizes", "10000,100000"]}


def main() -> None:
    out = console()
    figures: list[Figure] = []
    for name in BENCHMARKS:
        started = time.perf_counter()
        try:
            module = importlib.import_module(f"bench.{name}")
            run = getattr(module, "run", None)
            if run is None:
                if name in QUICK_ARGS:
                    module.main(QUICK_ARGS[name])
                else:
                    module.main()
                results: list[Figure] = []
            else:
                with out.status(f"bench.{name}..."):
                    results = run()
        except Exception:
            out.print(f"[red]bench.{name} failed:[/]\n{traceback.format_exc()}")
            continue
        out.print(f"[green]bench.{name}[/] done in {time.perf_counter() - started:.0f}s")
        figures += [Figure(f"{name}: {f.name}", f.value, f.unit, f.note) for f in results]
    print_figures("agentkeel benchmarks", figures)


if __name__ == "__main__":
    parse_bench_args("bench", __doc__)
    main()

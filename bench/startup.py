"""A replica's start-to-ready time: spawn ``keel serve agent`` until ``/ready`` says 200.

Includes the interpreter start, imports, settings, opening the SQLite store
and the model gateway. Median of several starts, each in a fresh data dir.

    python -m bench.startup
"""

from __future__ import annotations

import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench._common import (
    Figure,
    agent_config,
    clean_env,
    free_port,
    median,
    parse_bench_args,
    print_figures,
    replica_command,
    wait_ready,
)

STARTS = 5
READY_TIMEOUT_S = 60.0


def one_start() -> float:
    with tempfile.TemporaryDirectory(prefix="keel-bench-") as tmp:
        config = agent_config(Path(tmp))
        port = free_port()
        with (Path(tmp) / "server.log").open("wb") as log:
            started = time.perf_counter()
            proc = subprocess.Popen(
                replica_command(port),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=clean_env({"KEEL_CONFIG": str(config)}),
            )
        try:
            wait_ready(f"http://127.0.0.1:{port}/ready", proc, timeout_s=READY_TIMEOUT_S)
            return time.perf_counter() - started
        finally:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run() -> list[Figure]:
    times = [one_start() for _ in range(STARTS)]
    return [
        Figure(
            "replica start to ready",
            median(times) * 1000,
            "ms",
            f"median of {STARTS}; min {min(times) * 1000:,.0f}, max {max(times) * 1000:,.0f} ms",
        )
    ]


def main() -> None:
    print_figures("startup: keel serve agent until /ready", run())


if __name__ == "__main__":
    parse_bench_args(__spec__.name, __doc__)
    main()

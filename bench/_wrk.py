"""Load with ``wrk``: a Lua script that rotates turns over a list of sessions, and
the figures read back from ``wrk --latency``.

``wrk`` is a C load generator on epoll; one of its threads drives tens of
thousands of requests per second on one core, so at the rates a proxy reaches
here it measures the proxy, not itself.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

TURN_BODY = '{"content": "What is the weather like?"}'

# Built once per wrk thread in init(), so request() only picks the next one.
_SCRIPT = """\
local ids = {ids}
local body = {body}
local headers = {headers}
local requests = {{}}
local next_index = 0

function init(args)
  for i, id in ipairs(ids) do
    requests[i] = wrk.format("POST", "/v1/sessions/" .. id .. "/messages", headers, body)
  end
end

function request()
  next_index = next_index % #requests + 1
  return requests[next_index]
end
"""

_UNITS_US = {"us": 1.0, "ms": 1_000.0, "s": 1_000_000.0, "m": 60_000_000.0}
_PERCENTILE = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.M)
_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m)", re.M)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_SOCKET = re.compile(
    r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
)


def lua_quote(text: str) -> str:
    """``text`` as a Lua string literal (JSON's escapes are a subset Lua reads)."""
    return json.dumps(text)


def write_script(
    path: Path, session_ids: Sequence[str], *, headers: Mapping[str, str] | None = None
) -> Path:
    """A wrk script sending one turn after another, each to the next session in turn,
    with ``headers`` (e.g. ``Authorization``) besides the JSON content type."""
    if not session_ids:
        raise ValueError("wrk needs at least one session id to send turns to")
    ids = "{" + ", ".join(lua_quote(sid) for sid in session_ids) + "}"
    every = {"Content-Type": "application/json", **(headers or {})}
    table = "{" + ", ".join(f"[{lua_quote(k)}] = {lua_quote(v)}" for k, v in every.items()) + "}"
    path.write_text(_SCRIPT.format(ids=ids, body=lua_quote(TURN_BODY), headers=table))
    return path


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured; latencies in microseconds."""

    p50_us: float
    p99_us: float
    requests_per_s: float
    requests: int
    errors: int  # non-2xx responses plus socket errors

    @property
    def clean(self) -> bool:
        return self.errors == 0 and self.requests > 0


def parse_output(text: str) -> WrkResult:
    """Read ``wrk --latency`` output; raises ValueError naming what is missing."""
    percentiles = {
        int(q): float(value) * _UNITS_US[unit] for q, value, unit in _PERCENTILE.findall(text)
    }
    rate = _RATE.search(text)
    total = _TOTAL.search(text)
    if 50 not in percentiles or 99 not in percentiles or rate is None or total is None:
        head = text.strip().splitlines()[:3]
        raise ValueError(
            f"wrk output has no latency distribution or rate (ran with --latency?): {head}"
        )
    socket = _SOCKET.search(text)
    errors = sum(int(n) for n in socket.groups()) if socket else 0
    non_2xx = _NON_2XX.search(text)
    errors += int(non_2xx.group(1)) if non_2xx else 0
    return WrkResult(
        p50_us=percentiles[50],
        p99_us=percentiles[99],
        requests_per_s=float(rate.group(1)),
        requests=int(total.group(1)),
        errors=errors,
    )


def run_wrk(
    url: str,
    script: Path,
    *,
    connections: int,
    duration_s: float,
    prefix: Sequence[str] = (),
    timeout_s: float = 5.0,
) -> WrkResult:
    """One wrk run with one thread and ``connections`` keep-alive connections."""
    command = [
        *prefix,
        "wrk",
        "--threads",
        "1",
        "--connections",
        str(connections),
        "--duration",
        f"{max(1, round(duration_s))}s",
        "--timeout",
        f"{max(1, round(timeout_s))}s",
        "--latency",
        "--script",
        str(script),
        url,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=duration_s + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()[:300]}")
    return parse_output(done.stdout)


def add_load_options(
    parser: argparse.ArgumentParser,
    *,
    runs: int,
    duration_s: int,
    warmup_s: int,
    sessions: int,
    connections: Sequence[int],
) -> None:
    """The options every wrk-driven bench takes: --runs, --duration, --warmup, --sessions,
    --connections (read the last back with ``parse_connections``)."""
    parser.add_argument("--runs", type=int, default=runs, help="Repeat the load N times.")
    parser.add_argument("--duration", type=int, default=duration_s, help="Seconds per wrk run.")
    parser.add_argument("--warmup", type=int, default=warmup_s, help="Warm-up seconds.")
    parser.add_argument("--sessions", type=int, default=sessions, help="Sessions per path.")
    parser.add_argument(
        "--connections",
        default=",".join(str(c) for c in connections),
        help="Concurrent connections, comma-separated.",
    )


def parse_connections(text: str) -> tuple[int, ...]:
    """``1,32`` as (1, 32); exits with a one-line message for anything else."""
    try:
        return tuple(int(c) for c in text.split(","))
    except ValueError:
        raise SystemExit(f"--connections takes numbers like 1,32; got {text!r}") from None

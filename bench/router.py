"""The router's added latency and throughput, beside HAProxy doing the same sticky
routing to the same backends in the same run.

Three paths, measured one after another in every run:

  direct   wrk -> one backend
  router   wrk -> keel serve router (pins in SQLite) -> the backends
  haproxy  wrk -> HAProxy (a stick table keyed on the session id) -> the backends

Backends: stand-in replicas (bench/_replica_standin.py, the v1 shape at a few
microseconds a request, so the figures measure the proxy, not a model), each
its own version with equal weights; `--backend agent` uses real `keel serve
agent` replicas on the scripted model instead. A stand-in answers 404 for a
session it did not create, so a turn routed to the wrong backend is counted.

Sessions are created through each path first (POST /v1/sessions), each checked
with one turn; then wrk sends turns (POST /v1/sessions/{id}/messages, a small
JSON body) rotating over those sessions: 1 connection, then 32, each after a
short warm-up. Figures are medians over --runs runs: p50/p99 per path, the
added p50/p99 (proxy minus direct, paired within a run), requests/s, and the
proxy's CPU use during the 32-connection load. The processes float over the
cores by default: --pin puts the proxy on the last core and wrk with the
backends on the others (taskset), but on a small virtual machine every hop
then wakes an idle core, which added 100-250 µs per request to HAProxy and to
the router alike, so unpinned figures were both lower and steadier.

With --backend agent the direct path has one replica and the proxies have all
of them, so read the 1-connection rows (or pass --backends 1).

Needs haproxy and wrk: apt-get install -y haproxy wrk (or make bench-deps).
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import secrets
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path

import httpx
from rich.table import Table

from bench._common import (
    Figure,
    Running,
    agent_config,
    console,
    cpu_seconds,
    free_port,
    median,
    parse_bench_args,
    print_figures,
    server_process,
)
from bench._haproxy import Server, haproxy_command, render_config
from bench._wrk import (
    TURN_BODY,
    WrkResult,
    add_load_options,
    parse_connections,
    run_wrk,
    write_script,
)

INSTALL_COMMAND = "apt-get install -y haproxy wrk"
PATHS = ("direct", "router", "haproxy")
PROXIES = ("router", "haproxy")
TARGET_ADDED_P50_US = 150.0
TARGET_THROUGHPUT_SHARE = 50.0
SETUP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 15


@dataclass(frozen=True, slots=True)
class Options:
    """What one benchmark run does (the command line's options)."""

    runs: int = 3
    duration_s: int = 5
    warmup_s: int = 1
    sessions: int = 64
    backends: int = 2
    backend: str = "standin"
    connections: tuple[int, ...] = (1, 32)
    pin: bool = False
    paths: tuple[str, ...] = PATHS
    profile: Path | None = None  # run the router under cProfile, stats written here


@dataclass(frozen=True, slots=True)
class Backend:
    version: str
    url: str


@dataclass(frozen=True, slots=True)
class Target:
    """One path under load: where wrk sends turns and which process is the proxy."""

    name: str
    url: str
    proxy_pid: int | None
    session_ids: tuple[str, ...]
    by_version: Mapping[str, int]
    log: Path | None = None


@dataclass(frozen=True, slots=True)
class Sample:
    """One wrk run on one path, and the proxy's share of a core meanwhile."""

    result: WrkResult
    proxy_cpu: float | None

    @property
    def cpu_us_per_request(self) -> float | None:
        """The proxy's CPU time per request: its cost, whatever else held the cores."""
        if self.proxy_cpu is None or self.result.requests_per_s <= 0:
            return None
        return self.proxy_cpu / self.result.requests_per_s * 1_000_000


@dataclass
class Measurements:
    options: Options
    cpus: str
    load_average: float
    targets: dict[str, Target] = field(default_factory=dict)
    samples: dict[tuple[str, int], list[Sample]] = field(default_factory=dict)
    # The end of a proxy's log, kept when some of its requests failed.
    log_tails: dict[str, str] = field(default_factory=dict)

    def of(self, path: str, connections: int) -> list[Sample]:
        return self.samples.get((path, connections), [])


# -- processes ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CpuPlan:
    """taskset prefixes: the proxy on its own core, the rest (wrk, backends) elsewhere."""

    proxy: tuple[str, ...] = ()
    rest: tuple[str, ...] = ()
    described: str = "not pinned"


def plan_cpus(pin: bool) -> CpuPlan:
    cores = sorted(os.sched_getaffinity(0))
    if not pin or len(cores) < 2 or shutil.which("taskset") is None:
        return CpuPlan(described=f"not pinned ({len(cores)} cores)")
    proxy, rest = cores[-1], ",".join(str(core) for core in cores[:-1])
    return CpuPlan(
        proxy=("taskset", "-c", str(proxy)),
        rest=("taskset", "-c", rest),
        described=f"proxy on CPU {proxy}; wrk and backends on CPU {rest} (taskset)",
    )


def missing_tools() -> list[str]:
    return [tool for tool in ("haproxy", "wrk") if shutil.which(tool) is None]


@contextmanager
def standin_backends(count: int, cpus: CpuPlan, directory: Path) -> Iterator[list[Backend]]:
    """``count`` stand-in replicas, versions v1..vN, each in its own process."""
    with ExitStack() as stack:
        backends = []
        for index in range(count):
            version, port = f"v{index + 1}", free_port()
            url = f"http://127.0.0.1:{port}"
            log_dir = directory / f"standin-{version}"
            log_dir.mkdir()
            stack.enter_context(
                server_process(
                    [
                        *cpus.rest,
                        sys.executable,
                        "-m",
                        "bench._replica_standin",
                        str(port),
                        version,
                    ],
                    ready_url=f"{url}/ready",
                    base_url=url,
                    log_dir=log_dir,
                )
            )
            backends.append(Backend(version, url))
        yield backends


@contextmanager
def agent_backends(count: int, cpus: CpuPlan, directory: Path) -> Iterator[list[Backend]]:
    """``count`` real agent replicas on the scripted model, versions v1..vN."""
    with ExitStack() as stack:
        backends = []
        for index in range(count):
            version, port = f"v{index + 1}", free_port()
            url = f"http://127.0.0.1:{port}"
            replica_dir = directory / f"agent-{version}"
            replica_dir.mkdir()
            config = agent_config(replica_dir, log_level="warning")
            command = [sys.executable, "-m", "agentkeel.cli.main", "serve", "agent"]
            stack.enter_context(
                server_process(
                    [*cpus.rest, *command, "--port", str(port)],
                    ready_url=f"{url}/ready",
                    base_url=url,
                    env={"KEEL_CONFIG": str(config), "KEEL_AGENT__VERSION": version},
                    log_dir=replica_dir,
                )
            )
            backends.append(Backend(version, url))
        yield backends


def equal_weights(backends: Sequence[Backend]) -> dict[str, int]:
    return {backend.version: max(1, 100 // len(backends)) for backend in backends}


@contextmanager
def haproxy_proxy(backends: Sequence[Backend], cpus: CpuPlan, directory: Path) -> Iterator[Running]:
    port = free_port()
    weights = equal_weights(backends)
    servers = [Server(b.version, b.url, weights[b.version]) for b in backends]
    config = directory / "haproxy.cfg"
    config.write_text(render_config(port=port, servers=servers))
    url = f"http://127.0.0.1:{port}"
    with server_process(
        [*cpus.proxy, *haproxy_command(config)],
        ready_url=f"{url}/ready",
        base_url=url,
        log_dir=directory,
    ) as running:
        yield running


@contextmanager
def router_proxy(
    backends: Sequence[Backend],
    cpus: CpuPlan,
    directory: Path,
    *,
    profile: Path | None = None,
    config: str = "",
) -> Iterator[Running]:
    """``keel serve router`` in front of ``backends``, weights set through its admin API;
    under cProfile, writing its stats to ``profile`` when it stops, if given; ``config``
    is more keel.yaml (e.g. an ``auth:`` section)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    token = secrets.token_hex(16)
    token_file = directory / "admin_token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    config_file = directory / "keel.yaml"
    config_file.write_text(f"data_dir: {directory / 'data'}\n{config}")
    command = [sys.executable, "-m"]
    if profile is not None:
        command += ["cProfile", "-o", str(profile), "-m"]
    command += ["agentkeel.cli.main", "serve", "router"]
    command += ["--host", "127.0.0.1", "--port", str(port)]
    for backend in backends:
        command += ["--backend", f"{backend.version}={backend.url}"]
    command += ["--pins", f"sqlite:///{directory / 'router.db'}"]
    command += ["--admin-token-file", str(token_file)]
    with server_process(
        [*cpus.proxy, *command],
        ready_url=f"{url}/ready",
        base_url=url,
        env={"KEEL_CONFIG": str(config_file)},
        log_dir=directory,
    ) as running:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, trust_env=False
        ) as admin:
            set_router_weights(admin, equal_weights(backends))
        yield running


def set_router_weights(admin: httpx.Client, weights: Mapping[str, int]) -> None:
    """Set the weights and wait until every weighted version has a ready replica."""
    response = admin.post("/admin/weights", json={"weights": dict(weights)})
    if response.status_code != 200:
        raise RuntimeError(f"router refused the weights: {response.status_code} {response.text}")
    deadline = time.monotonic() + SETUP_TIMEOUT_S
    while time.monotonic() < deadline:
        table = admin.get("/admin/versions").json()
        ready = {
            entry["version"]
            for entry in table.get("versions", [])
            if entry.get("weight", 0) > 0 and any(r.get("ready") for r in entry.get("replicas", []))
        }
        if ready >= set(weights):
            return
        time.sleep(0.1)
    raise RuntimeError(f"router versions not all ready within {SETUP_TIMEOUT_S:.0f}s: {table}")


# -- sessions ----------------------------------------------------------------------


def open_sessions(
    name: str,
    url: str,
    count: int,
    proxy_pid: int | None,
    *,
    headers: Mapping[str, str] | None = None,
) -> Target:
    """Create ``count`` sessions through ``url`` (sending ``headers``, e.g. a credential)
    and check one turn of each goes through."""
    ids: list[str] = []
    by_version: dict[str, int] = {}
    with httpx.Client(
        base_url=url, timeout=10.0, trust_env=False, headers=dict(headers or {})
    ) as client:
        for _ in range(count):
            response = client.post("/v1/sessions", json={"user_id": "bench"})
            if response.status_code != 201:
                answer = f"{response.status_code}: {response.text[:200]}"
                raise RuntimeError(f"{name}: POST /v1/sessions answered {answer}")
            body = response.json()
            ids.append(str(body["session_id"]))
            version = str(body.get("version", "?"))
            by_version[version] = by_version.get(version, 0) + 1
        for sid in ids:
            turn = client.post(
                f"/v1/sessions/{sid}/messages",
                content=TURN_BODY,
                headers={"Content-Type": "application/json"},
            )
            if turn.status_code != 200:
                raise RuntimeError(
                    f"{name}: the first turn of session {sid} answered {turn.status_code} "
                    f"(not routed to the backend that created it?): {turn.text[:200]}"
                )
    return Target(name, url, proxy_pid, tuple(ids), by_version)


# -- load --------------------------------------------------------------------------


def load(target: Target, script: Path, connections: int, options: Options, cpus: CpuPlan) -> Sample:
    run_wrk(
        target.url, script, connections=connections, duration_s=options.warmup_s, prefix=cpus.rest
    )
    started = time.perf_counter()
    cpu_before = cpu_seconds(target.proxy_pid) if target.proxy_pid else 0.0
    result = run_wrk(
        target.url, script, connections=connections, duration_s=options.duration_s, prefix=cpus.rest
    )
    share = None
    if target.proxy_pid:
        share = (cpu_seconds(target.proxy_pid) - cpu_before) / (time.perf_counter() - started)
    return Sample(result, share)


def measure(options: Options) -> Measurements:
    """Start everything, open the sessions, and run the load ``options.runs`` times."""
    missing = missing_tools()
    if missing:
        raise ToolsMissing(missing)
    cpus = plan_cpus(options.pin)
    measurements = Measurements(options, cpus.described, os.getloadavg()[0])
    start_backends = agent_backends if options.backend == "agent" else standin_backends
    with tempfile.TemporaryDirectory(prefix="keel-bench-router-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        backends = stack.enter_context(start_backends(options.backends, cpus, directory))
        for name in options.paths:
            if name == "direct":
                url, pid, log = backends[0].url, None, None
            else:
                proxy_dir = directory / name
                proxy_dir.mkdir()
                if name == "router":
                    proxy = router_proxy(backends, cpus, proxy_dir, profile=options.profile)
                else:
                    proxy = haproxy_proxy(backends, cpus, proxy_dir)
                running = stack.enter_context(proxy)
                url, pid, log = running.url, running.pid, running.log
            target = open_sessions(name, url, options.sessions, pid)
            measurements.targets[name] = replace(target, log=log)
        scripts = {
            name: write_script(directory / f"{name}.lua", target.session_ids)
            for name, target in measurements.targets.items()
        }
        names = list(measurements.targets)
        for run in range(options.runs):
            # A different order each run, so drift over time does not favour one path.
            order = names[run % len(names) :] + names[: run % len(names)]
            for connections in options.connections:
                for name in order:
                    sample = load(
                        measurements.targets[name], scripts[name], connections, options, cpus
                    )
                    measurements.samples.setdefault((name, connections), []).append(sample)
        for name, target in measurements.targets.items():
            failed = any(
                not s.result.clean for c in options.connections for s in measurements.of(name, c)
            )
            if failed and target.log is not None:
                lines = target.log.read_text(errors="replace").splitlines()
                measurements.log_tails[name] = "\n".join(lines[-LOG_TAIL_LINES:])
    return measurements


class ToolsMissing(RuntimeError):
    def __init__(self, tools: Sequence[str]) -> None:
        super().__init__(f"{' and '.join(tools)} not installed; install with: {INSTALL_COMMAND}")
        self.tools = list(tools)


# -- figures -----------------------------------------------------------------------


def _median_of(samples: Sequence[Sample], pick: str) -> float:
    return median([getattr(s.result, pick) for s in samples])


def added(m: Measurements, proxy: str, connections: int, pick: str) -> float:
    """Median over runs of (proxy minus direct), each pair from the same run."""
    direct, through = m.of("direct", connections), m.of(proxy, connections)
    pairs = zip(direct, through, strict=False)
    return median([getattr(p.result, pick) - getattr(d.result, pick) for d, p in pairs])


def errors_note(samples: Sequence[Sample]) -> str:
    errors = sum(s.result.errors for s in samples)
    return f"; {errors} FAILED requests" if errors else ""


def comparison_table(m: Measurements) -> Table:
    runs = m.options.runs
    table = Table(
        title=(
            f"router vs HAProxy: turns over {m.options.sessions} sessions, median of {runs} runs "
            "(µs; + = minus direct; CPU = the proxy's share of a core)"
        ),
        title_justify="left",
    )
    for column in ("path", "conns", "p50", "p99", "+p50", "+p99", "req/s", "CPU", "CPU/req"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for connections in m.options.connections:
        for name in m.targets:
            samples = m.of(name, connections)
            if not samples:
                continue
            is_proxy = name != "direct" and m.of("direct", connections)
            cpu = [s.proxy_cpu for s in samples if s.proxy_cpu is not None]
            cost = cpu_cost(samples)
            table.add_row(
                name,
                str(connections),
                f"{_median_of(samples, 'p50_us'):,.0f}",
                f"{_median_of(samples, 'p99_us'):,.0f}",
                f"{added(m, name, connections, 'p50_us'):,.0f}" if is_proxy else "",
                f"{added(m, name, connections, 'p99_us'):,.0f}" if is_proxy else "",
                f"{_median_of(samples, 'requests_per_s'):,.0f}",
                f"{median(cpu) * 100:.0f}%" if cpu else "",
                f"{cost:.1f}" if cost is not None else "",
            )
    return table


def cpu_cost(samples: Sequence[Sample]) -> float | None:
    costs = [c for c in (s.cpu_us_per_request for s in samples) if c is not None]
    return median(costs) if costs else None


def headline_figures(m: Measurements) -> list[Figure]:
    """The issue's figures: added p50/p99 at 1 and N clients, max throughput, beside HAProxy."""
    figures: list[Figure] = []
    runs = f"median of {m.options.runs} runs"
    most = max(m.options.connections)
    for connections in m.options.connections:
        for proxy in PROXIES:
            samples = m.of(proxy, connections)
            if not samples or not m.of("direct", connections):
                continue
            p50 = added(m, proxy, connections, "p50_us")
            note = runs + errors_note(samples)
            if proxy == "router" and connections == 1:
                verdict = "met" if p50 <= TARGET_ADDED_P50_US else "MISSED"
                note = f"target <= {TARGET_ADDED_P50_US:.0f} µs: {verdict}; {note}"
            figures.append(Figure(f"{proxy} added p50, {connections} conn", p50, "µs", note))
            p99 = added(m, proxy, connections, "p99_us")
            figures.append(Figure(f"{proxy} added p99, {connections} conn", p99, "µs", runs))
    for name in m.targets:
        samples = m.of(name, most)
        if samples:
            cpu = [s.proxy_cpu for s in samples if s.proxy_cpu is not None]
            note = f"{runs}; proxy used {median(cpu) * 100:.0f} % of a core" if cpu else runs
            rate = _median_of(samples, "requests_per_s")
            figures.append(Figure(f"{name} req/s, {most} conn", rate, "req/s", note))
    router, haproxy = m.of("router", most), m.of("haproxy", most)
    if router and haproxy:
        shares = [
            100 * r.result.requests_per_s / h.result.requests_per_s
            for r, h in zip(router, haproxy, strict=False)
            if h.result.requests_per_s > 0
        ]
        share = median(shares)
        verdict = "met" if share >= TARGET_THROUGHPUT_SHARE else "MISSED"
        note = f"target >= {TARGET_THROUGHPUT_SHARE:.0f} %: {verdict}; paired per run"
        figures.append(Figure("router throughput / HAProxy's", share, "%", note))
    for proxy in PROXIES:
        cost = cpu_cost(m.of(proxy, most))
        if cost is not None:
            note = f"proxy CPU time / requests at {most} conn; 1 core = {1e6 / cost:,.0f} req/s"
            figures.append(Figure(f"{proxy} CPU per request", cost, "µs", note))
    router_cost, haproxy_cost = cpu_cost(router), cpu_cost(haproxy)
    if router_cost and haproxy_cost:
        note = "requests per CPU-second, router / HAProxy: the share a saturated core would give"
        figures.append(
            Figure(
                "router capacity per core / HAProxy's", 100 * haproxy_cost / router_cost, "%", note
            )
        )
    return figures


def describe(m: Measurements) -> str:
    spread = "; ".join(
        f"{name}: sessions by version {json.dumps(dict(sorted(t.by_version.items())))}"
        for name, t in m.targets.items()
    )
    options = m.options
    return (
        f"backends: {options.backends} x {options.backend}, one version each, equal weights; "
        f"{m.cpus}; {options.duration_s} s per load after {options.warmup_s} s warm-up; "
        f"load average {m.load_average:.1f} at the start\n{spread}"
    )


def print_profile(path: Path, top: int = 25) -> None:
    """The router's most expensive functions by own time (the stats are in ``path``)."""
    if not path.exists():
        console().print(f"[yellow]no profile at {path}: did the router stop cleanly?[/]")
        return
    console().print(f"router profile ({path}), top {top} by own time:")
    pstats.Stats(str(path)).sort_stats("tottime").print_stats(top)


def run() -> list[Figure]:
    """For ``python -m bench``: the default run's headline figures."""
    return headline_figures(measure(Options()))


# -- command line ------------------------------------------------------------------


def add_options(parser: argparse.ArgumentParser) -> None:
    defaults = Options()
    add_load_options(
        parser,
        runs=defaults.runs,
        duration_s=defaults.duration_s,
        warmup_s=defaults.warmup_s,
        sessions=defaults.sessions,
        connections=defaults.connections,
    )
    parser.add_argument(
        "--backends", type=int, default=defaults.backends, help="Backends (one version each)."
    )
    parser.add_argument(
        "--backend",
        choices=["standin", "agent"],
        default=defaults.backend,
        help="standin: a stand-in replica; agent: keel serve agent on the scripted model.",
    )
    parser.add_argument(
        "--paths", default=",".join(defaults.paths), help="Which of direct,router,haproxy to run."
    )
    parser.add_argument(
        "--profile-router",
        metavar="FILE",
        type=Path,
        help="Run the router under cProfile (slower) and write its stats to FILE.",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="Pin the proxy to its own core, wrk and the backends to the others (taskset).",
    )


def options_from(args: argparse.Namespace) -> Options:
    paths = tuple(p.strip() for p in args.paths.split(",") if p.strip())
    unknown = sorted(set(paths) - set(PATHS))
    if unknown or not paths:
        raise SystemExit(f"--paths takes some of {','.join(PATHS)}; got {args.paths!r}")
    if "direct" not in paths:
        paths = ("direct", *paths)  # the added latency needs it
    connections = parse_connections(args.connections)
    for name, value in (("--runs", args.runs), ("--duration", args.duration)):
        if value < 1:
            raise SystemExit(f"{name} must be at least 1; got {value}")
    if args.sessions < 1 or args.backends < 1 or min(connections) < 1:
        raise SystemExit("--sessions, --backends and --connections must be at least 1")
    return Options(
        runs=args.runs,
        duration_s=args.duration,
        warmup_s=max(1, args.warmup),
        sessions=args.sessions,
        backends=args.backends,
        backend=args.backend,
        connections=connections,
        pin=args.pin,
        profile=args.profile_router.resolve() if args.profile_router else None,
        paths=tuple(p for p in PATHS if p in paths),
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_bench_args(
        "bench.router", __doc__, argv, options=add_options, example="--runs 3 --duration 5"
    )
    options = options_from(args)
    out = console()
    try:
        with out.status("bench.router: starting backends and proxies, then the load..."):
            measurements = measure(options)
    except ToolsMissing as exc:
        out.print(f"[red]{exc}[/]")
        raise SystemExit(2) from None
    out.print(comparison_table(measurements))
    out.print(f"[dim]{describe(measurements)}[/]")
    for name, tail in measurements.log_tails.items():
        out.print(f"[yellow]{name} had failed requests; the end of its log:[/]\n{tail}")
    if options.profile is not None:
        print_profile(options.profile)
    print_figures(
        "router added latency and throughput, beside HAProxy", headline_figures(measurements)
    )


if __name__ == "__main__":
    main()

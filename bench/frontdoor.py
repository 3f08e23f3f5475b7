"""The front door's added latency per turn: the router with auth off, with API keys, and
with OIDC JWTs, in front of the same fast stand-in replica.

Paths, measured one after another in every run:

  direct   wrk -> the stand-in replica
  off      wrk -> keel serve router (auth off) -> the replica
  api_key  wrk -> keel serve router (auth on), Authorization: Bearer ak_... -> the replica
  jwt      wrk -> the same router, Authorization: Bearer <RS256 JWT> -> the replica

The bench makes everything it needs in a temporary directory: the identity
key pair the router signs front-door assertions with, an API keys file with
one key, and an RSA key pair with its JWKS file (the router's OIDC issuer).
With auth on, every turn is authenticated, counted against the per-key and
per-user request rates and takes a concurrent-turn slot (limits set far above
the load, so they are checked but never hit), and the replica gets a signed
assertion instead of the client's credential.

Sessions are created through each path first; then wrk sends turns rotating
over them (bench/router.py's pieces: stand-ins, the router process, wrk).
Figures are medians over --runs runs: p50/p99 per path, and the added p50/p99
of each auth mode over the router with auth off (paired within a run).

Needs wrk: apt-get install -y wrk.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm
from rich.table import Table

from bench._common import Figure, console, median, parse_bench_args, print_figures
from bench._wrk import add_load_options, parse_connections, write_script
from bench.router import (
    Options,
    Sample,
    Target,
    load,
    open_sessions,
    plan_cpus,
    router_proxy,
    standin_backends,
)

PATHS = ("direct", "off", "api_key", "jwt")
AUTH_MODES = ("api_key", "jwt")
ISSUER = "https://bench.invalid/"
AUDIENCE = "agentkeel-bench"
KID = "bench-rsa"
# Far above what one wrk thread sends: every limit is checked, none is reached.
UNREACHED = 1_000_000_000


@dataclass(frozen=True, slots=True)
class BenchOptions:
    runs: int = 3
    duration_s: int = 5
    warmup_s: int = 1
    sessions: int = 16
    connections: tuple[int, ...] = (1, 32)


@dataclass
class Results:
    options: BenchOptions
    samples: dict[tuple[str, int], list[Sample]] = field(default_factory=dict)

    def of(self, path: str, connections: int) -> list[Sample]:
        return self.samples.get((path, connections), [])


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the auth router accepts, and the config that makes it accept them."""

    api_key: str
    token: str
    config: str


def make_credentials(directory: Path) -> Credentials:
    """An identity key pair, an API key, an RSA issuer with its JWKS and one JWT."""
    from agentkeel.identity.apikeys import ApiKeyStore
    from agentkeel.identity.keys import generate_key_pair

    directory.mkdir(parents=True, exist_ok=True)
    signing = directory / "caller_signing_key"
    signing.write_text(generate_key_pair().private_pem)
    signing.chmod(0o600)
    keys_file = directory / "api_keys.yaml"
    api_key = (
        ApiKeyStore(keys_file)
        .create(name="bench", organization="bench", user="bench", scopes=["chat"])
        .key
    )
    issuer_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = RSAAlgorithm.to_jwk(issuer_key.public_key(), as_dict=True)
    jwks_file = directory / "jwks.json"
    jwks_file.write_text(json.dumps({"keys": [{**public, "kid": KID, "alg": "RS256"}]}))
    now = int(time.time())
    claims = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "bench",
        "org": "bench",
        "scope": "chat",
        "iat": now,
        "exp": now + 6 * 3600,
    }
    token = jwt.encode(claims, issuer_key, algorithm="RS256", headers={"kid": KID})
    config = (
        "identity:\n"
        f"  signing_key_file: {signing}\n"
        "auth:\n"
        "  enabled: true\n"
        f"  api_keys_file: {keys_file}\n"
        "  oidc:\n"
        f"    issuer: {ISSUER}\n"
        f"    audience: {AUDIENCE}\n"
        f"    jwks_file: {jwks_file}\n"
        "  limits:\n"
        f"    requests_per_minute_per_key: {UNREACHED}\n"
        f"    requests_per_minute_per_user: {UNREACHED}\n"
        f"    concurrent_turns_per_key: {UNREACHED}\n"
        f"    concurrent_turns_per_user: {UNREACHED}\n"
    )
    return Credentials(api_key=api_key, token=token, config=config)


def measure(options: BenchOptions) -> Results:
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed; install with: apt-get install -y wrk")
    cpus = plan_cpus(False)
    load_options = Options(duration_s=options.duration_s, warmup_s=options.warmup_s)
    results = Results(options)
    with tempfile.TemporaryDirectory(prefix="keel-bench-frontdoor-") as tmp, ExitStack() as stack:
        directory = Path(tmp)
        credentials = make_credentials(directory / "identity")
        (backend,) = stack.enter_context(standin_backends(1, cpus, directory))
        (directory / "off").mkdir()
        (directory / "auth").mkdir()
        off = stack.enter_context(router_proxy([backend], cpus, directory / "off"))
        auth = stack.enter_context(
            router_proxy([backend], cpus, directory / "auth", config=credentials.config)
        )
        headers = {
            "direct": {},
            "off": {},
            "api_key": {"Authorization": f"Bearer {credentials.api_key}"},
            "jwt": {"Authorization": f"Bearer {credentials.token}"},
        }
        urls = {"direct": backend.url, "off": off.url, "api_key": auth.url, "jwt": auth.url}
        pids = {"direct": None, "off": off.pid, "api_key": auth.pid, "jwt": auth.pid}
        targets: dict[str, Target] = {}
        scripts: dict[str, Path] = {}
        for name in PATHS:
            targets[name] = open_sessions(
                name, urls[name], options.sessions, pids[name], headers=headers[name]
            )
            scripts[name] = write_script(
                directory / f"{name}.lua", targets[name].session_ids, headers=headers[name]
            )
        for run in range(options.runs):
            order = list(PATHS[run % len(PATHS) :] + PATHS[: run % len(PATHS)])
            for connections in options.connections:
                for name in order:
                    sample = load(targets[name], scripts[name], connections, load_options, cpus)
                    results.samples.setdefault((name, connections), []).append(sample)
    return results


def _median(samples: Sequence[Sample], pick: str) -> float:
    return median([getattr(s.result, pick) for s in samples])


def added(results: Results, path: str, over: str, connections: int, pick: str) -> float:
    """Median over runs of (``path`` minus ``over``), each pair from the same run."""
    pairs = zip(results.of(over, connections), results.of(path, connections), strict=False)
    return median([getattr(p.result, pick) - getattr(o.result, pick) for o, p in pairs])


def table(results: Results) -> Table:
    shown = Table(
        title=(
            f"front door: turns over {results.options.sessions} sessions, median of "
            f"{results.options.runs} runs (µs; + = minus the router with auth off)"
        ),
        title_justify="left",
    )
    for column in ("path", "conns", "p50", "p99", "+p50", "+p99", "req/s", "errors"):
        shown.add_column(column, justify="left" if column == "path" else "right")
    for connections in results.options.connections:
        for name in PATHS:
            samples = results.of(name, connections)
            if not samples:
                continue
            auth = name in AUTH_MODES
            shown.add_row(
                name,
                str(connections),
                f"{_median(samples, 'p50_us'):,.0f}",
                f"{_median(samples, 'p99_us'):,.0f}",
                f"{added(results, name, 'off', connections, 'p50_us'):,.0f}" if auth else "",
                f"{added(results, name, 'off', connections, 'p99_us'):,.0f}" if auth else "",
                f"{_median(samples, 'requests_per_s'):,.0f}",
                str(sum(s.result.errors for s in samples)),
            )
    return shown


def headline_figures(results: Results) -> list[Figure]:
    """Added p50/p99 of auth off over direct, and of each auth mode over auth off."""
    figures: list[Figure] = []
    note = f"median of {results.options.runs} runs, paired per run"
    for connections in results.options.connections:
        for name, over in (("off", "direct"), ("api_key", "off"), ("jwt", "off")):
            if not results.of(name, connections) or not results.of(over, connections):
                continue
            errors = sum(s.result.errors for s in results.of(name, connections))
            suffix = f"; {errors} FAILED requests" if errors else ""
            for pick, label in (("p50_us", "p50"), ("p99_us", "p99")):
                figures.append(
                    Figure(
                        f"{name} added {label} over {over}, {connections} conn",
                        added(results, name, over, connections, pick),
                        "µs",
                        note + suffix,
                    )
                )
    return figures


def run() -> list[Figure]:
    """For ``python -m bench``: the default run's figures."""
    return headline_figures(measure(BenchOptions()))


def add_options(parser: argparse.ArgumentParser) -> None:
    defaults = BenchOptions()
    add_load_options(
        parser,
        runs=defaults.runs,
        duration_s=defaults.duration_s,
        warmup_s=defaults.warmup_s,
        sessions=defaults.sessions,
        connections=defaults.connections,
    )


def options_from(args: argparse.Namespace) -> BenchOptions:
    connections = parse_connections(args.connections)
    if min(args.runs, args.duration, args.sessions, *connections) < 1:
        raise SystemExit("--runs, --duration, --sessions and --connections must be at least 1")
    return BenchOptions(
        runs=args.runs,
        duration_s=args.duration,
        warmup_s=max(1, args.warmup),
        sessions=args.sessions,
        connections=connections,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_bench_args(
        "bench.frontdoor", __doc__, argv, options=add_options, example="--runs 3 --duration 5"
    )
    options = options_from(args)
    out = console()
    with out.status("bench.frontdoor: starting the stand-in and two routers, then the load..."):
        results = measure(options)
    out.print(table(results))
    print_figures("front door added latency per turn", headline_figures(results))


if __name__ == "__main__":
    main()

"""The memory server at scale: writes/s, search latency, snapshot, verify and restore.

For each backend (SQLite, PostgreSQL) the memory server runs in its own process
(``python -m agentkeel.memory.serve``) on a fresh store, and for each size:

1. the store is bulk-loaded up to the size through the store API (batches of
   500 ops, in this process; the server is idle meanwhile);
2. writes/s over HTTP: 8 clients, each posting one memory at a time for a fixed
   time; only acknowledged (201) writes count;
3. search over HTTP: one client, sequential, p50/p95 of full-text queries made of
   two words of a memory already in the namespace (so most queries hit); then
   of filtered searches for the most frequent word (in about three memories of
   four): with ``since`` at the moment the newest tenth of the memories began,
   and with a tag (the second most frequent word, a tag on about one memory in
   thirty). The share of those answers that say ``complete`` is printed too.

At the largest size: snapshot (``POST /v1/snapshots``), verify, restore to a
point in time (``POST /v1/restore {seq}``, 1,000 events back) and restore from
the snapshot, each timed as the client sees it, plus the server's peak RSS.

Content is 8-16 words drawn from a 5,000-word vocabulary with a Zipf (s=1)
distribution, across 1,000 namespaces (``agent:bench/user:N``). Seeded, so
every run loads the same data. Figures are printed, never asserted.

    python -m bench.memory_store --sizes 10000,100000,1000000
    python -m bench.memory_store --sizes 10000,100000 --backends postgres
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import math
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from rich.console import Console
from rich.table import Table

from agentkeel.memory.backends import MemoryBackend, open_memory_store
from agentkeel.memory.planner import MAX_BATCH_OPS
from agentkeel.memory.store import CreateMemory, SearchQuery
from bench._common import (
    console,
    free_port,
    machine_note,
    percentile,
    postgres_schema,
    server_process,
)

POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
NAMESPACES = 1000
VOCABULARY = 5000
WRITERS = 8
TOKEN = "bench-token-" + "b" * 32
ADMIN = "bench-admin-" + "a" * 32
RESTORE_BACK = 1000
SEARCH_WARMUP = 30
KIB = 1024


# -- the data ---------------------------------------------------------------------------


class Corpus:
    """Deterministic memories: Zipf-distributed words over fixed namespaces."""

    def __init__(self, *, seed: int = 7) -> None:
        self._rng = random.Random(seed)
        syllables = [a + b for a in "bcdfghjklmnprstvz" for b in "aeiou"]
        words: set[str] = set()
        while len(words) < VOCABULARY:
            words.add("".join(self._rng.choices(syllables, k=self._rng.randint(2, 4))))
        self.words = sorted(words)
        self._rng.shuffle(self.words)
        weights = [1.0 / rank for rank in range(1, VOCABULARY + 1)]
        self._cumulative = list(itertools.accumulate(weights))
        self.generated = 0
        self.samples: list[tuple[str, str]] = []
        """Every 97th memory made: (namespace, content), to build queries from."""
        self.marks: list[tuple[int, float]] = []
        """(memories made, wall time) after each batch, to place ``since`` filters."""

    def batch(self, count: int) -> list[CreateMemory]:
        ops = []
        total = self._cumulative[-1]
        for _ in range(count):
            length = self._rng.randint(8, 16)
            picks = [
                bisect.bisect_left(self._cumulative, self._rng.random() * total)
                for _ in range(length)
            ]
            content = " ".join(self.words[i] for i in picks)
            namespace = f"agent:bench/user:{self.generated % NAMESPACES}"
            tags = [self.words[picks[0]]] if self.generated % 3 == 0 else []
            ops.append(CreateMemory(namespace=namespace, content=content, tags=tags))
            if self.generated % 97 == 0:
                self.samples.append((namespace, content))
            self.generated += 1
        return ops

    def mark(self) -> None:
        self.marks.append((self.generated, time.time()))

    def since_newest(self, fraction: float) -> float:
        """A wall time before which all but about ``fraction`` of the memories were made."""
        target = self.generated * (1.0 - fraction)
        return next(at for made, at in self.marks if made >= target)

    def filtered_queries(self, count: int, *, seed: int) -> list[dict[str, Any]]:
        """Searches for the most frequent word, half within the newest tenth, half with
        a tag; as GET /v1/memories parameters."""
        rng = random.Random(seed)
        since = self.since_newest(0.1)
        out: list[dict[str, Any]] = []
        for index in range(count):
            namespace, _ = rng.choice(self.samples)
            params: dict[str, Any] = {"namespace": namespace, "q": self.words[0], "limit": 10}
            if index % 2 == 0:
                params["since"] = f"{since:.6f}"
            else:
                params["tags"] = self.words[1]
            out.append(params)
        return out

    def queries(self, count: int, *, seed: int) -> list[tuple[str, str]]:
        """(namespace, two words from a memory in it)."""
        rng = random.Random(seed)
        out = []
        for _ in range(count):
            namespace, content = rng.choice(self.samples)
            words = content.split()
            out.append((namespace, " ".join(rng.sample(words, 2))))
        return out


# -- the server -------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    url: str


@contextmanager
def memory_server(directory: Path, store_url: str) -> Iterator[tuple[str, int]]:
    """The memory server process on ``store_url``; yields (base URL, pid)."""
    (directory / "tokens.yaml").write_text(
        yaml.safe_dump({"tokens": {TOKEN: {"name": "bench", "read": ["*"], "write": ["*"]}}})
    )
    (directory / "admin_token").write_text(ADMIN)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        "KEEL_DATA_DIR": str(directory),
        "KEEL_MEMORY__PORT": str(port),
        "KEEL_MEMORY__STORE_URL": store_url,
        "KEEL_MEMORY__DATA_DIR": str(directory / "memory"),
        "KEEL_MEMORY__TOKENS_FILE": str(directory / "tokens.yaml"),
        "KEEL_MEMORY__ADMIN_TOKEN_FILE": str(directory / "admin_token"),
        "KEEL_MEMORY__INTEGRITY_INTERVAL_S": "0",
        "KEEL_MEMORY__SNAPSHOT_INTERVAL_S": "0",
        "KEEL_MEMORY__VERIFY_INTERVAL_S": "0",
        "KEEL_MEMORY__LOG_LEVEL": "warning",
        "KEEL_MEMORY__POOL_SIZE": "16",
    }
    with server_process(
        [sys.executable, "-m", "agentkeel.memory.serve"],
        ready_url=f"{url}/ready",
        base_url=url,
        env=env,
        log_dir=directory,
    ) as running:
        yield url, running.pid


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / KIB
    return float("nan")


# -- measurements -----------------------------------------------------------------------


@dataclass
class SizeResult:
    size: int
    load_s: float
    writes_per_s: float
    write_errors: int
    search_p50_ms: float
    search_p95_ms: float
    store_search_p50_ms: float
    store_search_p95_ms: float
    hit_rate: float
    since_p50_ms: float = math.nan
    since_p95_ms: float = math.nan
    tag_p50_ms: float = math.nan
    tag_p95_ms: float = math.nan
    filtered_complete: float = math.nan


@dataclass
class BackendResult:
    name: str
    sizes: list[SizeResult] = field(default_factory=list)
    snapshot_s: float = math.nan
    snapshot_mib: float = math.nan
    verify_s: float = math.nan
    verify_ok: bool | None = None
    restore_seq_s: float = math.nan
    restore_snapshot_s: float = math.nan
    peak_rss_mib: float = math.nan
    note: str = ""


async def bulk_load(store: MemoryBackend, corpus: Corpus, count: int) -> float:
    started = time.perf_counter()
    remaining = count
    while remaining > 0:
        take = min(MAX_BATCH_OPS, remaining)
        await store.write(corpus.batch(take))
        corpus.mark()
        remaining -= take
    return time.perf_counter() - started


class RawHttpConnection:
    """A bare HTTP/1.1 keep-alive connection: one request at a time, bytes prebuilt.

    The load generator shares the machine's cores with the server; httpx spends
    about 0.7 ms of CPU per request, more than the server's whole write path,
    and would decide the figure. This spends a few microseconds.
    """

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, url: str) -> RawHttpConnection:
        host, port = url.removeprefix("http://").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        return cls(reader, writer)

    async def post_json(self, path: str, body: bytes, headers: str) -> int:
        self._writer.write(
            f"POST {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n{headers}\r\n".encode()
            + body
        )
        head = await self._reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        await self._reader.readexactly(length)
        return status

    async def aclose(self) -> None:
        self._writer.close()
        await self._writer.wait_closed()


async def http_writes(url: str, seconds: float) -> tuple[float, int]:
    """Acknowledged writes per second from WRITERS connections; and the errors seen."""
    deadline = time.perf_counter() + seconds
    counts = [0] * WRITERS
    errors = [0] * WRITERS
    headers = f"Authorization: Bearer {TOKEN}\r\n"

    async def writer(index: int) -> None:
        connection = await RawHttpConnection.open(url)
        try:
            number = 0
            while time.perf_counter() < deadline:
                body = (
                    f'{{"namespace": "agent:bench/writer:{index}", "content": "writer {index} '
                    f'remembers item {number} of the run", "tags": ["bench"]}}'
                ).encode()
                status = await connection.post_json("/v1/memories", body, headers)
                number += 1
                if status == 201:
                    counts[index] += 1
                else:
                    errors[index] += 1
        finally:
            await connection.aclose()

    started = time.perf_counter()
    await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    return sum(counts) / (time.perf_counter() - started), sum(errors)


async def http_searches(url: str, queries: Sequence[tuple[str, str]]) -> tuple[list[float], int]:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    samples: list[float] = []
    hits = 0
    async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as client:
        for index, (namespace, text) in enumerate(queries):
            started = time.perf_counter()
            response = await client.get(
                "/v1/memories",
                params={"namespace": namespace, "q": text, "limit": 10},
                headers=headers,
            )
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if index >= SEARCH_WARMUP:
                samples.append(elapsed)
                hits += response.json()["count"] > 0
    return samples, hits


async def http_filtered_searches(
    url: str, queries: Sequence[dict[str, Any]]
) -> tuple[list[float], list[float], float]:
    """Latencies of the ``since`` and the tag searches; the share that said complete."""
    headers = {"Authorization": f"Bearer {TOKEN}"}
    since: list[float] = []
    tagged: list[float] = []
    complete = 0
    async with httpx.AsyncClient(base_url=url, timeout=30, trust_env=False) as client:
        for index, params in enumerate(queries):
            started = time.perf_counter()
            response = await client.get("/v1/memories", params=params, headers=headers)
            elapsed = time.perf_counter() - started
            response.raise_for_status()
            if index >= SEARCH_WARMUP:
                (since if "since" in params else tagged).append(elapsed)
                complete += bool(response.json().get("complete", True))
    return since, tagged, complete / max(1, len(since) + len(tagged))


async def store_searches(store: MemoryBackend, queries: Sequence[tuple[str, str]]) -> list[float]:
    samples = []
    for index, (namespace, text) in enumerate(queries):
        started = time.perf_counter()
        await store.search(SearchQuery(namespace=namespace, text=text, limit=10))
        if index >= SEARCH_WARMUP:
            samples.append(time.perf_counter() - started)
    return samples


async def admin(client: httpx.AsyncClient, method: str, path: str, **kwargs: Any) -> Any:
    response = await client.request(method, path, **kwargs)
    if response.status_code >= 400:
        raise RuntimeError(f"{method} {path}: {response.status_code} {response.text[:300]}")
    return response.json()


async def run_backend(
    backend: Backend, sizes: Sequence[int], *, write_s: float, searches: int
) -> BackendResult:
    out = console()
    result = BackendResult(name=backend.name)
    corpus = Corpus()
    with tempfile.TemporaryDirectory(prefix="keel-bench-memory-") as tmp:
        directory = Path(tmp)
        store_url = backend.url.replace("{dir}", str(directory))
        store = open_memory_store(store_url, pool_size=4)
        await store.open()
        try:
            with memory_server(directory, store_url) as (url, pid):
                loaded = 0
                for size in sizes:
                    with out.status(f"{backend.name}: loading to {size:,} memories…"):
                        load_s = await bulk_load(store, corpus, size - loaded)
                    loaded = size
                    out.print(f"{backend.name}: {size:,} loaded in {load_s:.1f}s")
                    with out.status(f"{backend.name} @ {size:,}: writes over HTTP…"):
                        writes, errors = await http_writes(url, write_s)
                    queries = corpus.queries(searches + SEARCH_WARMUP, seed=size)
                    with out.status(f"{backend.name} @ {size:,}: searches…"):
                        samples, hits = await http_searches(url, queries)
                        local = await store_searches(store, queries)
                        since, tagged, complete = await http_filtered_searches(
                            url, corpus.filtered_queries(searches + SEARCH_WARMUP, seed=size)
                        )
                    result.sizes.append(
                        SizeResult(
                            size=size,
                            load_s=load_s,
                            writes_per_s=writes,
                            write_errors=errors,
                            search_p50_ms=percentile(samples, 50) * 1e3,
                            search_p95_ms=percentile(samples, 95) * 1e3,
                            store_search_p50_ms=percentile(local, 50) * 1e3,
                            store_search_p95_ms=percentile(local, 95) * 1e3,
                            hit_rate=hits / max(1, len(samples)),
                            since_p50_ms=percentile(since, 50) * 1e3,
                            since_p95_ms=percentile(since, 95) * 1e3,
                            tag_p50_ms=percentile(tagged, 50) * 1e3,
                            tag_p95_ms=percentile(tagged, 95) * 1e3,
                            filtered_complete=complete,
                        )
                    )
                    out.print(
                        f"{backend.name} @ {size:,}: {writes:,.0f} writes/s, search p50 "
                        f"{result.sizes[-1].search_p50_ms:.1f} ms p95 "
                        f"{result.sizes[-1].search_p95_ms:.1f} ms; frequent word + since p95 "
                        f"{result.sizes[-1].since_p95_ms:.1f} ms, + tag p95 "
                        f"{result.sizes[-1].tag_p95_ms:.1f} ms"
                    )
                await large_operations(url, store, result)
                result.peak_rss_mib = peak_rss_mib(pid)
        finally:
            await store.aclose()
    return result


async def large_operations(url: str, store: MemoryBackend, result: BackendResult) -> None:
    out = console()
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(
        base_url=url, timeout=3600, headers=headers, trust_env=False
    ) as client:
        with out.status(f"{result.name}: snapshot…"):
            started = time.perf_counter()
            snapshot = await admin(client, "POST", "/v1/snapshots", json={"label": "bench"})
            result.snapshot_s = time.perf_counter() - started
            result.snapshot_mib = snapshot["size_bytes"] / KIB / KIB
        out.print(f"{result.name}: snapshot in {result.snapshot_s:.1f}s")
        with out.status(f"{result.name}: verify…"):
            started = time.perf_counter()
            outcome = await admin(client, "POST", f"/v1/snapshots/{snapshot['id']}/verify")
            result.verify_s = time.perf_counter() - started
            result.verify_ok = bool(outcome["ok"])
        out.print(f"{result.name}: verify in {result.verify_s:.1f}s (ok={result.verify_ok})")
        with out.status(f"{result.name}: restore from the snapshot…"):
            started = time.perf_counter()
            await admin(client, "POST", "/v1/restore", json={"snapshot_id": snapshot["id"]})
            result.restore_snapshot_s = time.perf_counter() - started
        out.print(f"{result.name}: restore from snapshot in {result.restore_snapshot_s:.1f}s")
        head = (await store.stats()).head.seq
        with out.status(f"{result.name}: point-in-time restore…"):
            started = time.perf_counter()
            await admin(
                client, "POST", "/v1/restore", json={"seq": head - RESTORE_BACK, "reason": "bench"}
            )
            result.restore_seq_s = time.perf_counter() - started
        out.print(f"{result.name}: restore to seq in {result.restore_seq_s:.1f}s")


# -- the report -------------------------------------------------------------------------


def _short(size: int) -> str:
    if size >= 1_000_000 and size % 1_000_000 == 0:
        return f"{size // 1_000_000}M"
    if size >= 1_000 and size % 1_000 == 0:
        return f"{size // 1_000}k"
    return str(size)


def print_report(results: Sequence[BackendResult], sizes: Sequence[int]) -> None:
    out = Console(highlight=False, width=max(120, console().width))
    table = Table(title="memory store: SQLite and PostgreSQL", title_justify="left")
    table.add_column("figure", no_wrap=True)
    for result in results:
        table.add_column(result.name, justify="right", no_wrap=True)
    table.add_column("target", style="dim", no_wrap=True)

    def at(result: BackendResult, size: int) -> SizeResult | None:
        return next((s for s in result.sizes if s.size == size), None)

    def cell(value: float | None, fmt: str, unit: str = "") -> str:
        if value is None or math.isnan(value):
            return "-"
        return format(value, fmt) + unit

    largest = max(sizes)
    for size in sizes:
        table.add_row(
            f"writes/s, HTTP, {WRITERS} clients @{_short(size)}",
            *[cell(s.writes_per_s if (s := at(r, size)) else None, ",.0f") for r in results],
            "≥ 1,000" if size == largest else "",
        )
    for size in sizes:
        table.add_row(
            f"search p50 / p95 ms, HTTP @{_short(size)}",
            *[
                f"{s.search_p50_ms:.1f} / {s.search_p95_ms:.1f}" if (s := at(r, size)) else "-"
                for r in results
            ],
            "p95 ≤ 10 ms" if size == largest else "",
        )
    for size in sizes:
        table.add_row(
            f"search p50 / p95 ms, store @{_short(size)}",
            *[
                f"{s.store_search_p50_ms:.1f} / {s.store_search_p95_ms:.1f}"
                if (s := at(r, size))
                else "-"
                for r in results
            ],
            "",
        )
    for label, low, high in (
        ("frequent word + since", "since_p50_ms", "since_p95_ms"),
        ("frequent word + tag", "tag_p50_ms", "tag_p95_ms"),
    ):
        for size in sizes:
            table.add_row(
                f"{label} p50 / p95 ms @{_short(size)}",
                *[
                    f"{getattr(s, low):.1f} / {getattr(s, high):.1f}" if (s := at(r, size)) else "-"
                    for r in results
                ],
                "p95 ≤ 10 ms" if size == largest else "",
            )
    table.add_row(
        "filtered searches complete",
        *[f"{min(s.filtered_complete for s in r.sizes):.0%}" if r.sizes else "-" for r in results],
        "",
    )
    for size in sizes:
        table.add_row(
            f"bulk load to {_short(size)} (store API)",
            *[cell(s.load_s if (s := at(r, size)) else None, ".1f", " s") for r in results],
            "",
        )
    biggest = {r.name: _short(r.sizes[-1].size) if r.sizes else "-" for r in results}
    for name, attr, target in (
        ("snapshot create", "snapshot_s", ""),
        ("snapshot verify", "verify_s", "create+verify ≤ 30 s"),
        ("point-in-time restore (seq)", "restore_seq_s", "≤ 30 s"),
        ("restore from snapshot", "restore_snapshot_s", ""),
    ):
        table.add_row(
            f"{name} @largest",
            *[cell(getattr(r, attr), ".1f", f" s @{biggest[r.name]}") for r in results],
            target,
        )
    table.add_row("snapshot file", *[cell(r.snapshot_mib, ".0f", " MiB") for r in results], "")
    table.add_row("verification passed", *["yes" if r.verify_ok else "NO" for r in results], "")
    table.add_row("server peak RSS", *[cell(r.peak_rss_mib, ",.0f", " MiB") for r in results], "")
    table.add_row(
        "search hit rate",
        *[f"{min(s.hit_rate for s in r.sizes):.0%}" if r.sizes else "-" for r in results],
        "",
    )
    out.print(table)
    for result in results:
        if result.note:
            out.print(f"[dim]{result.name}: {result.note}[/]")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    out.print(f"[dim]{machine_note()}; load average at the end {load}[/]")


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bench.memory_store``: run and print the table."""
    parser = argparse.ArgumentParser(prog="python -m bench.memory_store", description=__doc__)
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument(
        "--postgres-max", type=int, default=1_000_000, help="Largest size run on PostgreSQL."
    )
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--write-seconds", type=float, default=5.0)
    parser.add_argument("--searches", type=int, default=300)
    args = parser.parse_args(argv)
    sizes = sorted(int(value) for value in args.sizes.split(","))
    results: list[BackendResult] = []
    for name in args.backends.split(","):
        if name == "sqlite":
            backend_sizes = sizes
            results.append(
                asyncio.run(
                    run_backend(
                        Backend("SQLite", "sqlite:///{dir}/memory.db"),
                        backend_sizes,
                        write_s=args.write_seconds,
                        searches=args.searches,
                    )
                )
            )
        elif name == "postgres":
            backend_sizes = [size for size in sizes if size <= args.postgres_max]
            with postgres_schema(args.postgres_url) as url:
                result = asyncio.run(
                    run_backend(
                        Backend("PostgreSQL", url),
                        backend_sizes,
                        write_s=args.write_seconds,
                        searches=args.searches,
                    )
                )
            if backend_sizes != sizes:
                result.note = f"run up to {max(backend_sizes):,} memories (--postgres-max)"
            results.append(result)
        else:
            parser.error(f"unknown backend {name!r}; use sqlite and/or postgres")
    print_report(results, sizes)


if __name__ == "__main__":
    main()

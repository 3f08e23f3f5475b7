"""A memory server in-process and a ``MemoryClient`` wired to it through a transport
that can go down, or lose responses after the server has acted on them."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette

from agentkeel.memory.api_client import MemoryApiClient
from agentkeel.memory.client import MemoryClient
from agentkeel.memory.metrics import MemoryClientMetrics
from agentkeel.memory.outbox import MemoryOutbox
from agentkeel.memory.sqlite_store import SqliteMemoryStore
from agentkeel.resilience.breaker import CircuitBreaker
from agentkeel.resilience.clock import ManualClock
from agentkeel.telemetry.tracing import Tracing
from tests.memory.apphelpers import ADMIN, TOKEN_A, running_app, write_tokens

Mode = Literal["up", "down", "lose_response"]


class FlakyTransport(httpx.AsyncBaseTransport):
    """Forwards to the app while ``mode`` is "up"; "down" refuses connections;
    "lose_response" lets the server act, then loses its answer (a read timeout)."""

    def __init__(self, inner: httpx.AsyncBaseTransport) -> None:
        self.inner = inner
        self.mode: Mode = "up"
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if self.mode == "down":
            raise httpx.ConnectError("connection refused", request=request)
        response = await self.inner.handle_async_request(request)
        if self.mode == "lose_response":
            await response.aread()
            raise httpx.ReadTimeout("the response was lost", request=request)
        return response


@dataclass
class Rig:
    """The server app, its admin HTTP client, the flaky transport and the client under test."""

    app: Starlette
    admin: httpx.AsyncClient
    transport: FlakyTransport
    client: MemoryClient
    metrics: MemoryClientMetrics
    registry: CollectorRegistry
    clock: ManualClock
    token_file: Path
    outbox_path: Path

    def gauge(self, name: str) -> float:
        value = self.registry.get_sample_value(name)
        assert value is not None, name
        return value


def make_client(
    *,
    transport: httpx.AsyncBaseTransport,
    token_file: Path,
    outbox_path: Path,
    clock: ManualClock,
    metrics: MemoryClientMetrics,
    deliver_in_background: bool = False,
    base_url: str = "http://memory",
    failure_threshold: int = 2,
    tracing: Tracing | None = None,
) -> MemoryClient:
    api = MemoryApiClient(base_url=base_url, token_file=token_file, transport=transport)
    breaker = CircuitBreaker(
        name="memory",
        clock=clock,
        failure_threshold=failure_threshold,
        failure_window_s=30,
        latency_threshold_s=5,
        latency_window=20,
        min_latency_samples=5,
        open_s=3,
    )
    return MemoryClient(
        api=api,
        outbox=MemoryOutbox(path=outbox_path, clock=clock),
        metrics=metrics,
        breaker=breaker,
        clock=clock,
        retry_initial_s=0.5,
        retry_max_s=4,
        deliver_in_background=deliver_in_background,
        tracing=tracing,
    )


@asynccontextmanager
async def memory_rig(
    tmp_path: Path, *, token: str = TOKEN_A, version: str | None = None
) -> AsyncIterator[Rig]:
    """A SQLite-backed server and an open client (token A: namespaces agent:a*);
    ``version`` labels the client's calls as a replica's would."""
    clock = ManualClock(start=0.0)
    store = SqliteMemoryStore(path=tmp_path / "memory.db", clock=clock)
    await store.open()
    token_file = tmp_path / "client_token"
    token_file.write_text(token + "\n")
    outbox_path = tmp_path / "outbox" / "client.db"
    registry = CollectorRegistry()
    metrics = MemoryClientMetrics(registry, version=version)
    try:
        async with running_app(write_tokens(tmp_path), store, clock) as (app, admin):
            admin.headers["Authorization"] = f"Bearer {ADMIN}"
            transport = FlakyTransport(httpx.ASGITransport(app=app))
            client = make_client(
                transport=transport,
                token_file=token_file,
                outbox_path=outbox_path,
                clock=clock,
                metrics=metrics,
            )
            await client.open()
            try:
                yield Rig(
                    app=app,
                    admin=admin,
                    transport=transport,
                    client=client,
                    metrics=metrics,
                    registry=registry,
                    clock=clock,
                    token_file=token_file,
                    outbox_path=outbox_path,
                )
            finally:
                await client.aclose()
    finally:
        await store.aclose()


async def contents(admin: httpx.AsyncClient, namespace: str) -> list[str]:
    """Every memory's content in ``namespace`` (as the admin sees it), sorted."""
    response = await admin.get("/v1/memories", params={"namespace": namespace, "limit": 100})
    assert response.status_code == 200, response.text
    return sorted(item["memory"]["content"] for item in response.json()["results"])

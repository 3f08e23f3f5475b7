"""The memory client's spans: one CLIENT span per call under the caller's span, with the
operation and its outcome (ok, stored, queued, or the error), and a ``traceparent`` on its
request naming that span, so the memory server's lines join the turn's trace."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from agentkeel.config.tracing import TracingSettings
from agentkeel.errors import MemoryUnavailable
from agentkeel.memory.client import MemoryClient
from agentkeel.memory.metrics import MemoryClientMetrics
from agentkeel.memory.sqlite_store import SqliteMemoryStore
from agentkeel.resilience.clock import ManualClock
from agentkeel.telemetry.tracing import Tracing, build_tracing
from tests.memory.apphelpers import TOKEN_A, running_app, write_tokens
from tests.memory.clienthelpers import FlakyTransport, make_client

NAMESPACE = "agent:a/user:1"


class Traced:
    def __init__(
        self, client: MemoryClient, transport: FlakyTransport, exporter: InMemorySpanExporter
    ) -> None:
        self.client = client
        self.transport = transport
        self.exporter = exporter

    def spans(self) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith("memory ")]


@pytest.fixture
async def traced(tmp_path: Path) -> AsyncIterator[tuple[Traced, Tracing]]:
    clock = ManualClock(start=0.0)
    store = SqliteMemoryStore(path=tmp_path / "memory.db", clock=clock)
    await store.open()
    token_file = tmp_path / "client_token"
    token_file.write_text(TOKEN_A + "\n")
    exporter = InMemorySpanExporter()
    tracing = build_tracing(
        TracingSettings(), service="agent", processor=SimpleSpanProcessor(exporter)
    )
    try:
        async with running_app(write_tokens(tmp_path), store, clock) as (app, _):
            transport = FlakyTransport(httpx.ASGITransport(app=app))
            client = make_client(
                transport=transport,
                token_file=token_file,
                outbox_path=tmp_path / "outbox.db",
                clock=clock,
                metrics=MemoryClientMetrics(CollectorRegistry()),
                failure_threshold=5,
                tracing=tracing,
            )
            await client.open()
            try:
                yield Traced(client, transport, exporter), tracing
            finally:
                await client.aclose()
    finally:
        tracing.shutdown()
        await store.aclose()


async def test_each_call_is_a_client_span_whose_request_carries_it(
    traced: tuple[Traced, Tracing],
) -> None:
    """A store and a search inside a turn's span: two CLIENT children with operation and
    outcome, each request's traceparent naming its own span."""
    rig, tracing = traced
    with tracing.tracer("test").start_as_current_span("invoke_agent a") as turn:
        stored = await rig.client.store(NAMESPACE, "likes green tea")
        hits = await rig.client.search(NAMESPACE, "tea")
    assert stored.stored and [h.memory.content for h in hits] == ["likes green tea"]
    spans = rig.spans()
    assert [s.name for s in spans] == ["memory create_memory", "memory search_memory"]
    outcomes = [dict(s.attributes or {})["keel.memory.outcome"] for s in spans]
    assert outcomes == ["stored", "ok"]
    for span, request in zip(spans, rig.transport.requests, strict=True):
        assert span.kind == SpanKind.CLIENT
        assert span.parent is not None
        assert span.parent.span_id == turn.get_span_context().span_id
        context = span.get_span_context()
        assert context is not None
        assert request.headers["traceparent"].startswith(
            f"00-{context.trace_id:032x}-{context.span_id:016x}-"
        )
        operation = dict(span.attributes or {})["keel.memory.operation"]
        assert span.name == f"memory {operation}"


async def test_a_queued_write_and_a_failed_read_say_so(traced: tuple[Traced, Tracing]) -> None:
    """With the server down, a write is queued (outcome queued, not an error) and a read
    fails (ERROR, error.type memory_unavailable); a miss is an answer, not a failure."""
    rig, _ = traced
    assert await rig.client.get("no-such-memory") is None
    rig.transport.mode = "down"
    queued = await rig.client.store(NAMESPACE, "likes coffee")
    assert queued.queued
    with pytest.raises(MemoryUnavailable):
        await rig.client.search(NAMESPACE, "coffee")
    miss, write, read = rig.spans()
    assert dict(miss.attributes or {})["keel.memory.outcome"] == "memory_not_found"
    assert miss.status.status_code == StatusCode.UNSET
    assert dict(write.attributes or {})["keel.memory.outcome"] == "queued"
    assert write.status.status_code == StatusCode.UNSET
    assert read.status.status_code == StatusCode.ERROR
    assert dict(read.attributes or {})["error.type"] == "memory_unavailable"

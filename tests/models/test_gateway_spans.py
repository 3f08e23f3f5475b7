"""The gateway's ``chat`` spans: one per attempt that reached a provider, so retries and
fallbacks show as siblings under the caller's span, each with its provider, models,
usage or error type; a provider skipped by its open breaker gets none."""

from __future__ import annotations

import random

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client import CollectorRegistry

from agentkeel.config.tracing import TracingSettings
from agentkeel.errors import ProviderError
from agentkeel.models.gateway import ModelGateway
from agentkeel.resilience.clock import ManualClock
from agentkeel.telemetry.metrics import ModelMetrics
from agentkeel.telemetry.tracing import Tracing, build_tracing
from tests.models.test_gateway import QUESTION, RETRY, Switchable, breaker, server_error


def traced_gateway(
    *providers: Switchable, clock: ManualClock, open_breaker: str | None = None
) -> tuple[ModelGateway, Tracing, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tracing = build_tracing(
        TracingSettings(), service="agent", processor=SimpleSpanProcessor(exporter)
    )
    # A threshold above the retries of one call: only open_breaker starts open.
    breakers = {p.name: breaker(p.name, clock, failure_threshold=10) for p in providers}
    if open_breaker is not None:
        for _ in range(10):
            breakers[open_breaker].record_failure()
    gateway = ModelGateway(
        providers=providers,
        breakers=breakers,
        retry=RETRY,
        metrics=ModelMetrics(CollectorRegistry()),
        clock=clock,
        rng=random.Random(1),
        tracing=tracing,
    )
    return gateway, tracing, exporter


def attrs(span: ReadableSpan) -> dict[str, object]:
    return dict(span.attributes or {})


async def test_retries_and_a_fallback_are_sibling_chat_spans() -> None:
    """The primary fails every attempt (server errors, retried), the backup answers: four
    chat spans under the caller's span, in order, the failed ones ERROR with error.type."""
    clock = ManualClock()
    primary, backup = Switchable("primary", clock=clock), Switchable("backup", clock=clock)
    primary.failing = server_error("primary")
    gateway, tracing, exporter = traced_gateway(primary, backup, clock=clock)
    with tracing.tracer("test").start_as_current_span("invoke_agent default") as parent:
        response = await gateway.complete(QUESTION)
    assert response.provider == "backup"
    spans = [s for s in exporter.get_finished_spans() if s.name.startswith("chat ")]
    parent_id = parent.get_span_context().span_id
    assert [attrs(s)["keel.provider"] for s in spans] == ["primary"] * 3 + ["backup"]
    assert {s.parent.span_id for s in spans if s.parent is not None} == {parent_id}
    assert all(s.kind == SpanKind.CLIENT for s in spans)
    for failed in spans[:3]:
        assert failed.name == "chat primary-model"
        assert failed.status.status_code == StatusCode.ERROR
        assert attrs(failed)["error.type"] == "server"
        assert "gen_ai.usage.input_tokens" not in attrs(failed)
    answered = attrs(spans[3])
    assert answered["gen_ai.provider.name"] == "test"
    assert answered["gen_ai.request.model"] == answered["gen_ai.response.model"] == "backup-model"
    assert (answered["gen_ai.usage.input_tokens"], answered["gen_ai.usage.output_tokens"]) == (
        10,
        3,
    )
    assert answered["gen_ai.response.finish_reasons"] == ("stop",)
    assert spans[3].status.status_code == StatusCode.UNSET
    tracing.shutdown()


async def test_a_provider_behind_an_open_breaker_gets_no_span() -> None:
    """Skipped without a call, the open provider leaves no span; the next one has one."""
    clock = ManualClock()
    primary, backup = Switchable("primary", clock=clock), Switchable("backup", clock=clock)
    gateway, tracing, exporter = traced_gateway(
        primary, backup, clock=clock, open_breaker="primary"
    )
    await gateway.complete(QUESTION)
    assert primary.calls == 0
    assert [attrs(s)["keel.provider"] for s in exporter.get_finished_spans()] == ["backup"]
    tracing.shutdown()


async def test_a_request_fault_is_one_failed_span_then_the_fallback() -> None:
    """A 400 is not retried: one failed span (error.type client), then the backup's."""
    clock = ManualClock()
    primary, backup = Switchable("primary", clock=clock), Switchable("backup", clock=clock)
    primary.failing = ProviderError("HTTP 400", provider="primary", status_code=400)
    gateway, tracing, exporter = traced_gateway(primary, backup, clock=clock)
    await gateway.complete(QUESTION)
    spans = exporter.get_finished_spans()
    assert [(attrs(s)["keel.provider"], attrs(s).get("error.type")) for s in spans] == [
        ("primary", "client"),
        ("backup", None),
    ]
    tracing.shutdown()

"""The tracing benchmark's pieces: the turn it times makes one tool call and, with the
SDK on, the spans it says (and none with tracing off)."""

from __future__ import annotations

from collections import Counter

from bench.tracing_overhead import SPANS_PER_TURN, WARMUP_TURNS, noop_span_us, turn_samples
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from agentkeel.config.tracing import TracingSettings
from agentkeel.telemetry.tracing import build_tracing, tracing_off


async def test_the_bench_turn_is_the_traced_turn_it_names() -> None:
    """Each timed turn is invoke_agent over two chat spans and one execute_tool; off,
    the same turns record nothing."""
    exporter = InMemorySpanExporter()
    tracing = build_tracing(
        TracingSettings(), service="agent", processor=SimpleSpanProcessor(exporter)
    )
    samples = await turn_samples(tracing, turns=3)
    tracing.shutdown()
    assert len(samples.wall_us) == 3 and samples.cpu_us_per_turn > 0
    turns = 3 + WARMUP_TURNS
    spans = exporter.get_finished_spans()
    assert len(spans) == turns * SPANS_PER_TURN
    kinds = Counter(span.name.split(" ")[0] for span in spans)
    assert kinds == {"invoke_agent": turns, "chat": 2 * turns, "execute_tool": turns}
    off = await turn_samples(tracing_off(), turns=2)
    assert len(off.wall_us) == 2
    assert noop_span_us() > 0

"""Tracing set-up from ``tracing:``: off without an endpoint, a resource and sampler when on,
an export over a real socket that shutdown flushes, headers from a file, and the process's
global provider set only by ``install_tracing``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from pydantic import ValidationError

from agentkeel import __version__
from agentkeel.config.tracing import TracingSettings
from agentkeel.errors import ConfigError, SecretError
from agentkeel.telemetry.semconv import SCHEMA_URL
from agentkeel.telemetry.tracing import (
    build_tracing,
    process_tracing,
    read_headers_file,
    tracing_off,
)
from agentkeel.testing.otlp_receiver import OtlpReceiver

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def receiver() -> Iterator[OtlpReceiver]:
    with OtlpReceiver().serving() as running:
        yield running


def test_no_endpoint_means_no_sdk_and_no_recording() -> None:
    """Without tracing.otlp_endpoint the provider is the API's no-op one: spans record
    nothing and carry no ids."""
    tracing = build_tracing(TracingSettings(), service="agent")
    assert not tracing.enabled
    assert not isinstance(tracing.provider, SdkTracerProvider)
    with tracing.tracer("t").start_as_current_span("turn") as span:
        assert not span.is_recording()
        assert not span.get_span_context().is_valid
    tracing.shutdown()  # nothing to flush, and no error


def test_the_resource_names_the_service_under_the_pinned_schema() -> None:
    """service.name, namespace, version and instance id; the schema URL of semconv."""
    exporter = InMemorySpanExporter()
    tracing = build_tracing(
        TracingSettings(),
        service="tools",
        instance_id="tools-1",
        processor=SimpleSpanProcessor(exporter),
    )
    assert tracing.enabled
    with tracing.tracer("agentkeel.test").start_as_current_span("call"):
        pass
    (span,) = exporter.get_finished_spans()
    resource = span.resource
    assert resource.attributes["service.name"] == "tools"
    assert resource.attributes["service.namespace"] == "agentkeel"
    assert resource.attributes["service.version"] == __version__
    assert resource.attributes["service.instance.id"] == "tools-1"
    assert resource.schema_url == SCHEMA_URL
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.schema_url == SCHEMA_URL
    tracing.shutdown()


def test_sampling_is_parent_based_over_the_ratio() -> None:
    """With sample_ratio 0 a new trace is not recorded, but the child of a sampled caller
    is (its trace is continued), and of an unsampled caller is not."""
    exporter = InMemorySpanExporter()
    tracing = build_tracing(
        TracingSettings(sample_ratio=0.0), service="agent", processor=SimpleSpanProcessor(exporter)
    )
    tracer = tracing.tracer("agentkeel.test")
    with tracer.start_as_current_span("root") as root:
        assert not root.is_recording()
    for flags, recorded in ((TraceFlags.SAMPLED, True), (TraceFlags.DEFAULT, False)):
        caller = SpanContext(
            trace_id=0x1234, span_id=0x99, is_remote=True, trace_flags=TraceFlags(flags)
        )
        parent = trace.set_span_in_context(NonRecordingSpan(caller))
        with tracer.start_as_current_span("child", context=parent) as child:
            assert child.is_recording() is recorded
    assert [s.name for s in exporter.get_finished_spans()] == ["child"]
    tracing.shutdown()


def test_spans_reach_a_real_otlp_receiver_and_shutdown_flushes(
    receiver: OtlpReceiver, tmp_path: Path
) -> None:
    """Spans batched for export arrive over the socket, with the resource and the headers
    of tracing.headers_file, once shutdown flushes them (nothing lost in the queue)."""
    headers = tmp_path / "otlp-headers"
    headers.write_text("# the collector's token\nAuthorization: Bearer collector-secret\n\n")
    tracing = build_tracing(
        TracingSettings(otlp_endpoint=receiver.endpoint, headers_file=headers),
        service="agent",
        instance_id="replica-7",
    )
    tracer = tracing.tracer("agentkeel.test")
    with tracer.start_as_current_span("outer") as outer, tracer.start_as_current_span("inner"):
        pass
    tracing.shutdown()
    spans = {s.name: s for s in receiver.spans}
    assert set(spans) == {"outer", "inner"}
    trace_id = format(outer.get_span_context().trace_id, "032x")
    assert {s.trace_id for s in spans.values()} == {trace_id}
    assert spans["inner"].parent_span_id == spans["outer"].span_id
    assert spans["outer"].parent_span_id is None
    assert spans["outer"].resource["service.instance.id"] == "replica-7"
    assert spans["outer"].schema_url == SCHEMA_URL
    assert {h["authorization"] for h in receiver.export_headers} == {"Bearer collector-secret"}


def test_headers_file_errors_name_the_file_and_line(tmp_path: Path) -> None:
    """A missing file is a SecretError; a line without 'name: value' a ConfigError that
    names its line; no file means no headers."""
    assert read_headers_file(None) == {}
    with pytest.raises(SecretError, match="cannot be read"):
        read_headers_file(tmp_path / "absent")
    bad = tmp_path / "headers"
    bad.write_text("x-ok: 1\nnot a header line\n")
    with pytest.raises(ConfigError, match=r"line 2: expected 'name: value'"):
        read_headers_file(bad)
    with pytest.raises(ConfigError, match="line 2"):
        build_tracing(
            TracingSettings(otlp_endpoint="http://127.0.0.1:4318", headers_file=bad),
            service="agent",
        )


def test_the_endpoint_must_be_an_http_url() -> None:
    """A typo in tracing.otlp_endpoint is refused with what to give; the traces URL is the
    endpoint's /v1/traces (an endpoint that already names it is kept)."""
    with pytest.raises(ValidationError, match="not an http"):
        TracingSettings(otlp_endpoint="127.0.0.1:4318")
    assert TracingSettings(otlp_endpoint="").otlp_endpoint is None
    base = TracingSettings(otlp_endpoint="http://collector:4318/")
    assert base.traces_url == "http://collector:4318/v1/traces"
    full = TracingSettings(otlp_endpoint="https://otel.example/v1/traces")
    assert full.traces_url == "https://otel.example/v1/traces"


def test_without_install_the_process_has_no_tracing() -> None:
    """An app built without a Tracing in a process that installed none traces nothing;
    tracing_off is the same no-op."""
    assert not process_tracing().enabled
    assert not tracing_off().enabled


def test_install_tracing_sets_the_process_provider_and_flushes_at_exit(
    receiver: OtlpReceiver,
) -> None:
    """In a process of its own: install_tracing makes the provider global (an app without
    a Tracing and any library on the global API trace through it), and the spans still
    queued when the process exits are exported."""
    script = textwrap.dedent(
        """
        import sys
        from opentelemetry import trace
        from agentkeel.config.tracing import TracingSettings
        from agentkeel.telemetry.tracing import install_tracing, process_tracing

        install_tracing(TracingSettings(otlp_endpoint=sys.argv[1]), service="probe")
        assert process_tracing().enabled
        with process_tracing().tracer("probe").start_as_current_span("app-span"):
            with trace.get_tracer("some.library").start_as_current_span("library-span"):
                pass
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, receiver.endpoint],
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    spans = {s.name: s for s in receiver.wait_for(lambda spans: len(spans) >= 2)}
    assert spans["library-span"].parent_span_id == spans["app-span"].span_id
    assert spans["app-span"].resource["service.name"] == "probe"

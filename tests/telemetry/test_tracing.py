"""Tracing set-up from ``tracing:``: off without an endpoint, a resource and sampler when on,
an export over a real socket that shutdown flushes, headers from a file, the process's
global provider set only by ``install_tracing``, content only through ``set_content``
(redacted, JSON kept valid), and the one ``execute_tool`` span set-up."""

from __future__ import annotations

import ast
import json
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
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, StatusCode, TraceFlags
from pydantic import ValidationError

from agentkeel import __version__
from agentkeel.config.tracing import TracingSettings
from agentkeel.errors import ConfigError, SecretError
from agentkeel.secrets.known import KnownSecrets
from agentkeel.secrets.redact import SecretRedactor
from agentkeel.telemetry import semconv
from agentkeel.telemetry.semconv import SCHEMA_URL
from agentkeel.telemetry.tracing import (
    Tracing,
    build_tracing,
    process_tracing,
    read_headers_file,
    start_tool_span,
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


HELD_SECRET = "platform-key-0123456789"
SHAPED_SECRET = "ghp_" + "a" * 36


def recorded(*, capture_content: bool = True) -> tuple[Tracing, InMemorySpanExporter]:
    """Tracing into memory, with a redactor that knows HELD_SECRET."""
    exporter = InMemorySpanExporter()
    tracing = build_tracing(
        TracingSettings(capture_content=capture_content),
        service="agent",
        processor=SimpleSpanProcessor(exporter),
    )
    redactor = SecretRedactor(known=KnownSecrets([HELD_SECRET]))
    return tracing.redacting(lambda text: redactor.redact(text, where="span")), exporter


def test_content_is_redacted_before_it_goes_on_a_span() -> None:
    """set_content replaces secrets: in plain text, and in JSON attributes string by
    string, so a redacted value is still valid JSON (a quote in a held secret would break
    a redaction of the JSON text as a whole)."""
    tracing, exporter = recorded()
    quoted = 'pa"ss-' + HELD_SECRET
    messages = json.dumps([{"role": "user", "parts": [{"type": "text", "content": quoted}]}])
    with tracing.tracer("t").start_as_current_span("turn") as span:
        tracing.set_content(span, semconv.GEN_AI_TOOL_CALL_RESULT, f"token {SHAPED_SECRET}")
        tracing.set_content(span, semconv.GEN_AI_INPUT_MESSAGES, messages)
        tracing.set_content(span, semconv.GEN_AI_OUTPUT_MESSAGES, '[{"role":"assistant"}]')
    (done,) = exporter.get_finished_spans()
    attrs = dict(done.attributes or {})
    assert attrs[semconv.GEN_AI_TOOL_CALL_RESULT] == "token [REDACTED:github_token]"
    (sent,) = json.loads(str(attrs[semconv.GEN_AI_INPUT_MESSAGES]))
    assert sent["parts"][0]["content"] == 'pa"ss-[REDACTED:known_secret]'
    # Nothing to replace: the value is kept as it was given.
    assert attrs[semconv.GEN_AI_OUTPUT_MESSAGES] == '[{"role":"assistant"}]'
    assert HELD_SECRET not in json.dumps(attrs)


def test_content_needs_capture_content_and_a_recording_span() -> None:
    """Without capture_content, or on a span that does not record, set_content puts
    nothing and never calls the redactor."""
    calls: list[str] = []

    def redact(text: str) -> str:
        calls.append(text)
        return text

    tracing, exporter = recorded(capture_content=False)
    tracing = tracing.redacting(redact)
    with tracing.tracer("t").start_as_current_span("turn") as span:
        tracing.set_content(span, semconv.GEN_AI_TOOL_CALL_RESULT, "secret stuff")
    off = tracing_off().redacting(redact)
    off.capture_content = True
    with off.tracer("t").start_as_current_span("turn") as span:
        off.set_content(span, semconv.GEN_AI_TOOL_CALL_RESULT, "secret stuff")
    (done,) = exporter.get_finished_spans()
    assert semconv.GEN_AI_TOOL_CALL_RESULT not in (done.attributes or {})
    assert calls == []


def test_no_module_puts_content_on_a_span_but_set_content() -> None:
    """Every content attribute goes through Tracing.set_content (and so through the
    redactor): no module in src/ passes one to set_attribute or set_attributes."""
    names = {
        name
        for name, value in vars(semconv).items()
        if isinstance(value, str) and value in semconv.CONTENT_ATTRIBUTES
    }
    assert len(names) == len(semconv.CONTENT_ATTRIBUTES)
    offenders = []
    for path in ROOT.joinpath("src", "agentkeel").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in ("set_attribute", "set_attributes")
            ):
                continue
            used = {n.attr for n in ast.walk(node) if isinstance(n, ast.Attribute)}
            used |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}
            if used & names:
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_the_tool_span_records_the_call_and_its_outcome() -> None:
    """start_tool_span: execute_tool {tool} of the kind asked for, under the parent given,
    with the GenAI tool attributes, the correlation id, the arguments and result
    (redacted) and, for a failed call, error.type and the reason as description."""
    tracing, exporter = recorded()
    tracer = tracing.tracer("agentkeel.test")
    caller = SpanContext(
        trace_id=0xABC, span_id=0x12, is_remote=True, trace_flags=TraceFlags(TraceFlags.SAMPLED)
    )
    with start_tool_span(
        tracing,
        tracer,
        tool="lookup",
        arguments={"key": HELD_SECRET, "n": 2},
        kind=SpanKind.SERVER,
        call_id="call-1",
        correlation_id="corr-9",
        parent=trace.set_span_in_context(NonRecordingSpan(caller)),
    ) as span:
        span.finish(status="failure", result=f"no {HELD_SECRET}", error="KeyError")
    with start_tool_span(tracing, tracer, tool="ok", arguments={}) as span:
        span.finish(status="success", result="fine")
    failed, succeeded = exporter.get_finished_spans()
    assert (failed.name, failed.kind) == ("execute_tool lookup", SpanKind.SERVER)
    assert failed.parent is not None and failed.parent.span_id == 0x12
    attrs = dict(failed.attributes or {})
    assert attrs[semconv.GEN_AI_OPERATION_NAME] == semconv.OP_EXECUTE_TOOL
    assert (attrs[semconv.GEN_AI_TOOL_NAME], attrs[semconv.GEN_AI_TOOL_TYPE]) == (
        "lookup",
        "function",
    )
    assert (attrs[semconv.GEN_AI_TOOL_CALL_ID], attrs[semconv.KEEL_CORRELATION_ID]) == (
        "call-1",
        "corr-9",
    )
    assert json.loads(str(attrs[semconv.GEN_AI_TOOL_CALL_ARGUMENTS])) == {
        "key": "[REDACTED:known_secret]",
        "n": 2,
    }
    assert attrs[semconv.GEN_AI_TOOL_CALL_RESULT] == "no [REDACTED:known_secret]"
    assert (attrs[semconv.KEEL_TOOL_STATUS], attrs[semconv.ERROR_TYPE]) == ("failure", "failure")
    assert failed.status.status_code == StatusCode.ERROR
    assert failed.status.description == "KeyError"
    assert succeeded.kind == SpanKind.INTERNAL and succeeded.parent is None
    assert succeeded.status.status_code == StatusCode.UNSET
    assert semconv.GEN_AI_TOOL_CALL_ID not in (succeeded.attributes or {})


def test_a_tracing_block_shuts_it_down_at_its_end(receiver: OtlpReceiver) -> None:
    """``with tracing:`` exports what is queued when the block ends, even when it ends
    with an error (what a service's serve.py relies on to log the last export's errors
    before its log sinks close)."""
    with (
        pytest.raises(RuntimeError),
        build_tracing(TracingSettings(otlp_endpoint=receiver.endpoint), service="agent") as tracing,
    ):
        with tracing.tracer("t").start_as_current_span("queued"):
            pass
        raise RuntimeError("the service failed")
    assert [s.name for s in receiver.spans] == ["queued"]

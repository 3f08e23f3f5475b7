"""OpenTelemetry traces: the tracer provider of a service, built from ``tracing:``.

``build_tracing(settings, service=...)`` with ``tracing.otlp_endpoint`` set: an SDK
``TracerProvider`` whose ``Resource`` names the service (``service.name``,
``service.namespace`` ``agentkeel``, ``service.version``, ``service.instance.id``)
under the schema URL of the pinned conventions (``semconv.py``), sampling
``ParentBased(TraceIdRatioBased(sample_ratio))`` (a sampled caller's trace is always
continued), and a ``BatchSpanProcessor`` feeding the OTLP/HTTP exporter
(``<endpoint>/v1/traces``, with the headers of ``tracing.headers_file``).
``Tracing.shutdown()`` exports what is still queued. Without an endpoint there is
no SDK provider and no exporter: spans go to the API's no-op tracer, which records
nothing.

Content (``tracing.capture_content``) goes on a span only through
``Tracing.set_content``, which runs the process's secrets redactor over it first
(``Tracing.redacting``; the agent and tool servers pass theirs), string by string
for the attributes that hold JSON. ``start_tool_span`` is the one ``execute_tool``
span set-up, on the replica (INTERNAL) and on the tool server (SERVER).

How an app gets its tracer. The OpenTelemetry API keeps one global tracer provider
per process. keel sets it in one place only, and never at import:

- ``keel serve <service>`` runs one service per process and calls
  ``install_tracing(settings.tracing, service=...)`` once, right after configuring
  logging and inside the start-up's error handling (a bad ``headers_file`` is a
  "cannot start" line and exit code 1): the provider becomes the process's global
  one (so libraries that trace through the global API, such as the MCP SDK's client
  spans, join the same traces). The ``with`` block around the service flushes and
  shuts it down before the log sinks are closed, so the last exports' errors are
  logged;
- every app factory takes ``tracing: Tracing | None``; without one it uses
  ``process_tracing()``: the installed provider, or no tracing at all;
- tests and programs that run two apps in one process pass each app its own
  ``Tracing`` (``build_tracing(..., processor=...)``, or ``Tracing(provider=...)``)
  and leave the global alone, so the apps' spans never mix.

>>> tracing = build_tracing(settings.tracing, service="agent", instance_id="replica-1")
>>> app = create_app(settings, tracing=tracing)
>>> tracing.shutdown()   # after the app stopped: the last spans are exported
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import (
    SERVICE_INSTANCE_ID,
    SERVICE_NAME,
    SERVICE_NAMESPACE,
    SERVICE_VERSION,
    Resource,
)
from opentelemetry.sdk.trace import SpanProcessor
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from agentkeel.config.tracing import TracingSettings
from agentkeel.errors import ConfigError, SecretError
from agentkeel.telemetry import semconv
from agentkeel.telemetry.semconv import ERROR_TYPE, SCHEMA_URL

__all__ = [
    "SERVICE_NAMESPACE_VALUE",
    "Redact",
    "ToolCallSpan",
    "Tracing",
    "build_tracing",
    "install_tracing",
    "mark_failed",
    "process_tracing",
    "read_headers_file",
    "service_resource",
    "start_tool_span",
    "tracing_off",
]

logger = logging.getLogger("agentkeel.telemetry.tracing")

SERVICE_NAMESPACE_VALUE = "agentkeel"
EXPORT_TIMEOUT_S = 5.0
"""How long one export may take: bounds how long a process waits at exit for a
collector that is down."""

Redact = Callable[[str], str]
"""Text with its secrets replaced (``SecretRedactor.redact`` bound to ``where="span"``)."""


class Tracing:
    """The tracer provider of one app, whether its spans carry content, and what cleans
    that content.

    ``capture_content`` (``tracing.capture_content``) puts prompts, replies and tool
    arguments and results on spans; off by default, since they may hold personal data.
    ``redact`` runs over every piece of content before it goes on a span (``None``:
    put as it is). Used as a context manager, it is shut down when the block ends.
    """

    def __init__(
        self,
        *,
        provider: trace.TracerProvider,
        capture_content: bool = False,
        redact: Redact | None = None,
    ) -> None:
        self.provider = provider
        self.capture_content = capture_content
        self.redact = redact

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.shutdown()

    def redacting(self, redact: Redact) -> Tracing:
        """The same provider and content setting, with ``redact`` over every content
        attribute (what an app factory does with its process's secrets redactor)."""
        return Tracing(provider=self.provider, capture_content=self.capture_content, redact=redact)

    def set_content(self, span: Span, attribute: str, text: str) -> None:
        """Put content on ``span`` when ``capture_content`` is on and the span records,
        with secrets replaced. ``attribute`` is one of ``semconv.CONTENT_ATTRIBUTES``; in
        those that hold JSON each string is redacted, so the value stays valid JSON."""
        if not self.capture_content or not span.is_recording():
            return
        if self.redact is not None:
            text = _redacted(text, self.redact, json_text=attribute in semconv.JSON_CONTENT)
        span.set_attribute(attribute, text)

    @property
    def enabled(self) -> bool:
        """True when spans are recorded (an SDK or other real provider), False for the
        API's no-op provider."""
        return not isinstance(self.provider, trace.NoOpTracerProvider | trace.ProxyTracerProvider)

    def tracer(self, name: str) -> trace.Tracer:
        """A tracer named for the instrumenting module (``agentkeel.runtime``, ...)."""
        return self.provider.get_tracer(name, _version(), schema_url=SCHEMA_URL)

    def force_flush(self, timeout_s: float = 30.0) -> bool:
        """Export every finished span now; False when that did not finish in time."""
        if isinstance(self.provider, SdkTracerProvider):
            return self.provider.force_flush(int(timeout_s * 1000))
        return True

    def shutdown(self) -> None:
        """Export what is queued and stop the exporter (the provider records no more)."""
        if isinstance(self.provider, SdkTracerProvider):
            self.provider.shutdown()


def tracing_off() -> Tracing:
    """No tracing: the API's no-op provider (no SDK, no exporter)."""
    return Tracing(provider=trace.NoOpTracerProvider())


def service_resource(service: str, *, instance_id: str | None = None) -> Resource:
    """The ``Resource`` of a service's spans; ``instance_id`` defaults to host and pid."""
    return Resource.create(
        {
            SERVICE_NAME: service,
            SERVICE_NAMESPACE: SERVICE_NAMESPACE_VALUE,
            SERVICE_VERSION: _version(),
            SERVICE_INSTANCE_ID: instance_id or f"{socket.gethostname()}-{os.getpid()}",
        },
        schema_url=SCHEMA_URL,
    )


def build_tracing(
    settings: TracingSettings,
    *,
    service: str,
    instance_id: str | None = None,
    processor: SpanProcessor | None = None,
    shutdown_on_exit: bool = False,
) -> Tracing:
    """The tracing of one service from ``settings``; off without ``otlp_endpoint``.

    ``processor`` replaces the batch processor and OTLP exporter (tests pass a
    ``SimpleSpanProcessor`` over an in-memory exporter), and turns tracing on even
    without an endpoint. ``shutdown_on_exit`` flushes and shuts the provider down when
    the interpreter exits (what ``install_tracing`` asks for). Raises ``SecretError``
    or ``ConfigError`` for a headers file that cannot be read or parsed.
    """
    if processor is None:
        url = settings.traces_url
        if url is None:
            return tracing_off()
        exporter = OTLPSpanExporter(
            endpoint=url,
            headers=read_headers_file(settings.headers_file),
            timeout=EXPORT_TIMEOUT_S,
        )
        processor = BatchSpanProcessor(exporter)
    provider = SdkTracerProvider(
        resource=service_resource(service, instance_id=instance_id),
        sampler=ParentBased(TraceIdRatioBased(settings.sample_ratio)),
        shutdown_on_exit=shutdown_on_exit,
    )
    provider.add_span_processor(processor)
    return Tracing(provider=provider, capture_content=settings.capture_content)


def install_tracing(
    settings: TracingSettings, *, service: str, instance_id: str | None = None
) -> Tracing:
    """Build this process's tracing and, when it is on, make its provider the global one
    (``keel serve`` calls this once, before building the app). Shut it down before the
    log sinks close (``with install_tracing(...):``), so the last exports' errors are
    logged; an interpreter exit without that still flushes it. Raises ``SecretError`` or
    ``ConfigError`` for a headers file that cannot be read or parsed."""
    tracing = build_tracing(
        settings, service=service, instance_id=instance_id, shutdown_on_exit=True
    )
    if tracing.enabled:
        trace.set_tracer_provider(tracing.provider)
        logger.info(
            "traces go to %s (sample ratio %g%s)",
            settings.traces_url,
            settings.sample_ratio,
            ", with prompts and replies" if settings.capture_content else "",
            extra={"event": "config"},
        )
    return tracing


def process_tracing(*, capture_content: bool = False) -> Tracing:
    """What an app built without a ``Tracing`` uses: the provider ``install_tracing`` made
    global, or no tracing when none was installed."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.NoOpTracerProvider | trace.ProxyTracerProvider):
        return tracing_off()
    return Tracing(provider=provider, capture_content=capture_content)


class ToolCallSpan:
    """The ``execute_tool`` span of one tool call (``start_tool_span``)."""

    def __init__(self, span: Span, tracing: Tracing) -> None:
        self.span = span
        self._tracing = tracing

    def finish(self, *, status: str, result: str, error: str | None = None) -> None:
        """Record how the call ended: ``keel.tool.status``, the result (content, when
        captured) and, unless it succeeded, ``error.type`` with ``error`` as the status
        description (a reason code, never content)."""
        if self.span.is_recording():
            self.span.set_attribute(semconv.KEEL_TOOL_STATUS, status)
            self._tracing.set_content(self.span, semconv.GEN_AI_TOOL_CALL_RESULT, result)
        if status != "success":
            mark_failed(self.span, status, error)


@contextmanager
def start_tool_span(
    tracing: Tracing,
    tracer: trace.Tracer,
    *,
    tool: str,
    arguments: Mapping[str, Any],
    kind: SpanKind = SpanKind.INTERNAL,
    call_id: str | None = None,
    correlation_id: str | None = None,
    parent: Context | None = None,
) -> Iterator[ToolCallSpan]:
    """The current ``execute_tool {tool}`` span of one call, with the GenAI tool
    attributes and, when captured, its arguments; ``parent`` is the caller's context
    when it is not the current one (the tool server's handler). Exceptions are not
    recorded on it: call ``finish`` with the outcome."""
    with tracer.start_as_current_span(
        semconv.span_name(semconv.OP_EXECUTE_TOOL, tool),
        context=parent,
        kind=kind,
        record_exception=False,
        set_status_on_exception=False,
    ) as span:
        if span.is_recording():
            attributes: dict[str, str] = {
                semconv.GEN_AI_OPERATION_NAME: semconv.OP_EXECUTE_TOOL,
                semconv.GEN_AI_TOOL_NAME: tool,
                semconv.GEN_AI_TOOL_TYPE: semconv.TOOL_TYPE_FUNCTION,
            }
            if call_id:
                attributes[semconv.GEN_AI_TOOL_CALL_ID] = call_id
            if correlation_id:
                attributes[semconv.KEEL_CORRELATION_ID] = correlation_id
            span.set_attributes(attributes)
            if tracing.capture_content:
                tracing.set_content(span, semconv.GEN_AI_TOOL_CALL_ARGUMENTS, _json(arguments))
        yield ToolCallSpan(span, tracing)


def read_headers_file(path: Path | None) -> dict[str, str]:
    """The ``name: value`` lines of ``tracing.headers_file`` (blank lines and ``#``
    comments skipped); empty without a file."""
    if path is None:
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SecretError(
            f"tracing.headers_file {path} cannot be read ({exc.strerror or exc}). Create it "
            "with one 'name: value' line per header (e.g. 'authorization: Bearer ...'), or "
            "unset tracing.headers_file."
        ) from exc
    headers: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition(":")
        if not sep or not name.strip() or any(c.isspace() for c in name.strip()):
            raise ConfigError(
                f"tracing.headers_file {path}, line {number}: expected 'name: value' (a "
                "header name without spaces, a colon, then the value). Fix that line."
            )
        headers[name.strip().lower()] = value.strip()
    return headers


def mark_failed(span: Span, error_type: str, description: str | None = None) -> None:
    """Set ``error.type`` and the ERROR status on ``span`` (a no-op on a span that is
    not recording)."""
    if span.is_recording():
        span.set_attribute(ERROR_TYPE, error_type)
        span.set_status(Status(StatusCode.ERROR, description))


def _redacted(text: str, redact: Redact, *, json_text: bool) -> str:
    """``text`` redacted; JSON string by string, so a replacement never breaks it."""
    if not json_text:
        return redact(text)
    try:
        value = json.loads(text)
    except ValueError:
        return redact(text)
    cleaned, changed = _redact_strings(value, redact)
    return _json(cleaned) if changed else text


def _redact_strings(value: Any, redact: Redact) -> tuple[Any, bool]:
    if isinstance(value, str):
        cleaned = redact(value)
        return cleaned, cleaned != value
    if isinstance(value, list):
        items = [_redact_strings(item, redact) for item in value]
        return [item for item, _ in items], any(changed for _, changed in items)
    if isinstance(value, dict):
        pairs = {key: _redact_strings(item, redact) for key, item in value.items()}
        return (
            {key: item for key, (item, _) in pairs.items()},
            any(changed for _, changed in pairs.values()),
        )
    return value, False


def _json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)


def _version() -> str:
    # Read when needed: the package's __init__ imports modules that import this one.
    from agentkeel import __version__

    return __version__

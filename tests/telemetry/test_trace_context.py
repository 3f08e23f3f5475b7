"""The W3C trace context on HTTP hops: outgoing requests carry the current span's
``traceparent``, incoming ones run inside the caller's trace (so their log lines carry its
trace id) with tracing on or off, a malformed header starts nothing, a caller the
middleware does not trust names no trace, and a front door never takes a caller's
baggage on."""

from __future__ import annotations

import io
import json
import logging

import httpx
from opentelemetry import baggage, context, trace
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agentkeel.config.tracing import TracingSettings
from agentkeel.telemetry.http import add_trace_context, make_async_client
from agentkeel.telemetry.logging import JsonFormatter
from agentkeel.telemetry.trace_context import (
    TraceContextMiddleware,
    TrustCaller,
    incoming_context,
    trace_log_fields,
)
from agentkeel.telemetry.tracing import build_tracing

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


def echo_app(*, trust: TrustCaller | None = None, baggage_too: bool = True) -> Starlette:
    """Answers with the current span context, the baggage it runs with, and the JSON log
    line it would write."""
    logger = logging.getLogger("agentkeel.test.trace_context")
    formatter = JsonFormatter(service="memory")

    async def echo(request: Request) -> Response:
        context = trace.get_current_span().get_span_context()
        record = logger.makeRecord(logger.name, logging.INFO, __file__, 0, "hit", (), None)
        return JSONResponse(
            {
                "valid": context.is_valid,
                "trace_id": format(context.trace_id, "032x"),
                "line": json.loads(formatter.format(record)),
                "headers": dict(request.headers),
                "baggage": dict(baggage.get_all()),
            }
        )

    return Starlette(
        routes=[Route("/echo", echo, methods=["GET"])],
        middleware=[Middleware(TraceContextMiddleware, trust=trust, baggage=baggage_too)],
    )


async def test_a_request_runs_inside_its_callers_trace() -> None:
    """With traceparent, the handler's current span is the caller's and its log line
    carries the caller's trace and span id; without one (or with a malformed one) there
    is no trace."""
    app = echo_app()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://memory"
    ) as client:
        joined = (await client.get("/echo", headers={"traceparent": TRACEPARENT})).json()
        alone = (await client.get("/echo")).json()
        garbled = (await client.get("/echo", headers={"traceparent": "00-zz-yy-01"})).json()
    assert joined["valid"] and joined["trace_id"] == TRACE_ID
    assert (joined["line"]["trace_id"], joined["line"]["span_id"]) == (TRACE_ID, SPAN_ID)
    assert not alone["valid"] and "trace_id" not in alone["line"]
    assert not garbled["valid"] and "trace_id" not in garbled["line"]


async def test_an_untrusted_caller_names_no_trace_and_a_trusted_one_does() -> None:
    """With a trust check, a caller it refuses runs in no trace (its forged, sampled
    traceparent is ignored: the work starts a trace of its own); one it accepts joins
    its trace. The check sees the request's headers."""

    def trusted(headers: Headers) -> bool:
        return headers.get("x-service") == "router"

    app = echo_app(trust=trusted)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://agent"
    ) as client:
        forged = (await client.get("/echo", headers={"traceparent": TRACEPARENT})).json()
        vouched = (
            await client.get("/echo", headers={"traceparent": TRACEPARENT, "x-service": "router"})
        ).json()
    assert not forged["valid"] and "trace_id" not in forged["line"]
    assert vouched["valid"] and vouched["trace_id"] == TRACE_ID


async def test_a_front_door_never_takes_the_callers_baggage() -> None:
    """The inner hops keep a caller's baggage (the default); with baggage=False the
    request joins the trace but carries no baggage, so none is sent on."""
    sent = {"traceparent": TRACEPARENT, "baggage": "tenant=acme"}
    for baggage_too, expected in ((True, {"tenant": "acme"}), (False, {})):
        app = echo_app(baggage_too=baggage_too)
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://agent"
        ) as client:
            seen = (await client.get("/echo", headers=sent)).json()
        assert seen["trace_id"] == TRACE_ID
        assert seen["baggage"] == expected


async def test_outgoing_requests_carry_the_current_span() -> None:
    """make_async_client's requests carry traceparent naming the span they are sent in,
    and none outside a span."""
    exporter = InMemorySpanExporter()
    tracing = build_tracing(
        TracingSettings(), service="agent", processor=SimpleSpanProcessor(exporter)
    )
    async with make_async_client(
        transport=httpx.ASGITransport(app=echo_app()), base_url="http://memory"
    ) as client:
        with tracing.tracer("agentkeel.test").start_as_current_span("memory search") as span:
            inside = (await client.get("/echo")).json()
        outside = (await client.get("/echo")).json()
    sent = span.get_span_context()
    expected = f"00-{sent.trace_id:032x}-{sent.span_id:016x}-"
    assert inside["headers"]["traceparent"].startswith(expected)
    assert inside["trace_id"] == f"{sent.trace_id:032x}"  # the server joined it
    assert "traceparent" not in outside["headers"]
    tracing.shutdown()


class Outgoing:
    """The part of an httpx or httpx2 request the hook uses."""

    def __init__(self) -> None:
        self.headers: dict[str, str] = {}


async def test_the_hook_works_on_any_request_with_headers() -> None:
    """add_trace_context only needs a mutable headers mapping (httpx and httpx2 alike)."""
    request = Outgoing()
    parent = trace.set_span_in_context(
        trace.NonRecordingSpan(
            trace.SpanContext(
                trace_id=int(TRACE_ID, 16),
                span_id=int(SPAN_ID, 16),
                is_remote=False,
                trace_flags=trace.TraceFlags(trace.TraceFlags.SAMPLED),
            )
        )
    )
    token = context.attach(parent)
    try:
        await add_trace_context(request)
    finally:
        context.detach(token)
    assert request.headers["traceparent"] == TRACEPARENT


def test_router_log_fields_of_a_raw_traceparent() -> None:
    """The router's lines get the caller's trace_id and span_id from the header bytes;
    nothing for no header or one that does not parse."""
    assert trace_log_fields(TRACEPARENT.encode()) == {"trace_id": TRACE_ID, "span_id": SPAN_ID}
    assert trace_log_fields(None) == {}
    assert trace_log_fields(b"01-not-a-traceparent") == {}
    assert incoming_context({"traceparent": "garbage"}) is None
    assert incoming_context({}) is None


def test_log_lines_without_a_span_carry_no_trace_fields() -> None:
    """The formatter adds trace ids only inside a span (the check above relies on it)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter(service="router"))
    logger = logging.getLogger("agentkeel.test.no_span")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("x", extra=trace_log_fields(TRACEPARENT.encode()))
        logger.warning("y")
    finally:
        logger.removeHandler(handler)
    with_fields, without = (json.loads(line) for line in stream.getvalue().splitlines())
    assert (with_fields["trace_id"], with_fields["span_id"]) == (TRACE_ID, SPAN_ID)
    assert "trace_id" not in without

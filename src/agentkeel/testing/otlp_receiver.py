"""A stand-in for the OpenTelemetry Collector's OTLP/HTTP trace receiver, for tests and benches.

The Collector cannot be installed here, so this plays its receiving end: it answers
``POST /v1/traces`` with an ``ExportTraceServiceRequest`` in protobuf (gzip or not), as
the OTLP/HTTP exporter sends it, decodes it with ``opentelemetry-proto`` and keeps
every span, with its resource, for the test to read. It serves over a real loopback
socket, so the exporter talks to it exactly as it would to a collector. It exports
nothing further; JSON-encoded OTLP is refused with 415. ``GET /stats`` says how many
spans and exports it got (for a receiver in another process: the benches run it so).

``python -m agentkeel.testing.otlp_receiver --port 4318`` runs one as a process of its
own until stopped.

>>> with OtlpReceiver().serving() as receiver:
...     settings = TracingSettings(otlp_endpoint=receiver.endpoint)
...     ...
...     spans = receiver.wait_for(lambda spans: len(spans) >= 3)
"""

from __future__ import annotations

import argparse
import gzip
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from agentkeel.testing._serving import serve_in_thread

__all__ = ["OtlpReceiver", "ReceivedSpan", "main"]

PROTOBUF = "application/x-protobuf"


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One span as the receiver decoded it; ids are lowercase hex."""

    name: str
    kind: str
    """``INTERNAL``, ``SERVER``, ``CLIENT``, ``PRODUCER`` or ``CONSUMER``."""
    trace_id: str
    span_id: str
    parent_span_id: str | None
    attributes: Mapping[str, Any]
    status: str
    """``UNSET``, ``OK`` or ``ERROR``."""
    status_message: str
    resource: Mapping[str, Any]
    scope: str
    schema_url: str
    duration_ns: int = 0
    events: tuple[str, ...] = field(default=())


class OtlpReceiver:
    """Keeps every span exported to it; ``endpoint`` is its base URL while it serves.

    ``keep_spans=False`` only counts them (``GET /stats``), so that a bench's receiver
    costs the machine as little as a remote collector would.
    """

    def __init__(self, *, keep_spans: bool = True) -> None:
        self.endpoint = ""
        self.keep_spans = keep_spans
        self._lock = threading.Lock()
        self._spans: list[ReceivedSpan] = []
        self._counted = 0
        self._headers: list[dict[str, str]] = []

    @property
    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._lock:
            return list(self._spans)

    @property
    def export_headers(self) -> list[dict[str, str]]:
        """The headers of each export request (lowercased names)."""
        with self._lock:
            return [dict(h) for h in self._headers]

    def clear(self) -> None:
        with self._lock:
            self._spans.clear()
            self._counted = 0
            self._headers.clear()

    def wait_for(
        self,
        done: Callable[[list[ReceivedSpan]], bool],
        *,
        timeout_s: float = 15.0,
    ) -> list[ReceivedSpan]:
        """The spans once ``done(spans)`` holds; ``TimeoutError`` naming what did arrive
        when it does not within ``timeout_s``. Blocks: from async code, run it in a
        thread."""
        deadline = time.monotonic() + timeout_s
        while True:
            spans = self.spans
            if done(spans):
                return spans
            if time.monotonic() > deadline:
                names = sorted({s.name for s in spans})
                raise TimeoutError(
                    f"the spans awaited did not arrive within {timeout_s:g}s; got "
                    f"{len(spans)}: {names}"
                )
            time.sleep(0.02)

    def app(self) -> Starlette:
        return Starlette(
            routes=[
                Route("/v1/traces", self._export, methods=["POST"]),
                Route("/stats", self._stats, methods=["GET"]),
            ]
        )

    @contextmanager
    def serving(self) -> Iterator[OtlpReceiver]:
        """Serve on a free loopback port until the block ends."""
        with serve_in_thread(self.app(), what="OTLP receiver") as url:
            self.endpoint = url
            try:
                yield self
            finally:
                self.endpoint = ""

    async def _stats(self, request: Request) -> Response:
        with self._lock:
            return JSONResponse({"spans": self._counted, "exports": len(self._headers)})

    async def _export(self, request: Request) -> Response:
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        if content_type != PROTOBUF:
            return PlainTextResponse(
                f"this receiver takes OTLP/HTTP in protobuf ({PROTOBUF}), not {content_type!r}",
                status_code=415,
            )
        body = await request.body()
        if request.headers.get("content-encoding", "").lower() == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            return PlainTextResponse(f"not an ExportTraceServiceRequest: {exc}", status_code=400)
        count = sum(len(ss.spans) for rs in message.resource_spans for ss in rs.scope_spans)
        spans = list(_spans_of(message)) if self.keep_spans else []
        with self._lock:
            self._spans.extend(spans)
            self._counted += count
            self._headers.append({k.lower(): v for k, v in request.headers.items()})
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type=PROTOBUF)


def _spans_of(message: ExportTraceServiceRequest) -> Iterator[ReceivedSpan]:
    for resource_spans in message.resource_spans:
        resource = _attributes(resource_spans.resource.attributes)
        for scope_spans in resource_spans.scope_spans:
            schema_url = scope_spans.schema_url or resource_spans.schema_url
            for span in scope_spans.spans:
                yield ReceivedSpan(
                    name=span.name,
                    kind=Span.SpanKind.Name(span.kind).removeprefix("SPAN_KIND_"),
                    trace_id=span.trace_id.hex(),
                    span_id=span.span_id.hex(),
                    parent_span_id=span.parent_span_id.hex() or None,
                    attributes=_attributes(span.attributes),
                    status=Status.StatusCode.Name(span.status.code).removeprefix("STATUS_CODE_"),
                    status_message=span.status.message,
                    resource=resource,
                    scope=scope_spans.scope.name,
                    schema_url=schema_url,
                    duration_ns=span.end_time_unix_nano - span.start_time_unix_nano,
                    events=tuple(event.name for event in span.events),
                )


def _attributes(pairs: Any) -> dict[str, Any]:
    return {pair.key: _value(pair.value) for pair in pairs if isinstance(pair, KeyValue)}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return _attributes(value.kvlist_value.values)
    return getattr(value, kind)


def main(argv: list[str] | None = None) -> None:
    """Serve a receiver on ``--host``/``--port`` until SIGTERM or Ctrl-C."""
    prog = "python -m agentkeel.testing.otlp_receiver"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="An OTLP/HTTP trace receiver that keeps what it gets (GET /stats counts "
        "it); a stand-in for the OpenTelemetry Collector in tests and benches.",
        epilog=f"Example: {prog} --port 4318",
    )
    parser.add_argument("--host", default="127.0.0.1", help="Address to listen on.")
    parser.add_argument("--port", type=int, default=4318, help="Port (OTLP/HTTP's is 4318).")
    parser.add_argument(
        "--count-only", action="store_true", help="Count the spans instead of keeping them."
    )
    args = parser.parse_args(argv)
    receiver = OtlpReceiver(keep_spans=not args.count_only)
    uvicorn.run(receiver.app(), host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()

"""The W3C trace context of incoming requests: the trace a service's work joins.

Outgoing requests carry it through ``telemetry/http.py``'s ``add_trace_context`` hook;
incoming ones are read here with the API's global propagator (W3C ``traceparent`` and
``tracestate``, plus ``baggage``; ``OTEL_PROPAGATORS`` changes it), so this works with
tracing on or off: with it off, the services record no spans, but their log lines still
carry the ``trace_id`` of a caller that traces.

Whose context is adopted. The hops inside the stack (router to replica, replica to
the memory and tool servers) are authenticated service calls and always propagate. A
public client is another matter: a ``traceparent`` it picks (a sampled flag included)
would decide what the collector keeps, whatever ``tracing.sample_ratio`` says. So the
front door (the router, or a replica a client reaches directly) adopts a client's
context only with ``tracing.trust_incoming``; otherwise the request starts a trace of
its own. A client's ``baggage`` is never adopted there, so it is never passed on.

- ``TraceContextMiddleware``: plain ASGI; the request runs inside the caller's context
  (when ``trust`` says so), so its log lines (and any span it opens) join the caller's
  trace;
- ``incoming_context``: the context a header mapping names, for handlers that run
  outside the request's task (the MCP SDK's);
- ``trace_log_fields``: ``trace_id`` and ``span_id`` of a raw ``traceparent``, for the
  router, which parses headers itself and opens no spans.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from opentelemetry import context, propagate, trace
from opentelemetry.context import Context
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = [
    "BAGGAGE",
    "CLIENT_CONTEXT_HEADERS",
    "TraceContextMiddleware",
    "TrustCaller",
    "incoming_context",
    "trace_log_fields",
]

TRACEPARENT = "traceparent"
BAGGAGE = "baggage"
CLIENT_CONTEXT_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})
"""The request headers that carry a caller's trace context (lowercase, as sent)."""

TrustCaller = Callable[[Headers], bool]
"""Whether a request's caller may name the trace it joins (given the request's headers)."""


def incoming_context(headers: Mapping[str, str]) -> Context | None:
    """The context a request's ``traceparent`` names; None when it has none, or one
    that does not parse (the work then starts a trace of its own)."""
    if not headers.get(TRACEPARENT):
        return None
    extracted = propagate.extract(headers)
    if not trace.get_current_span(extracted).get_span_context().is_valid:
        return None
    return extracted


def trace_log_fields(traceparent: bytes | None) -> dict[str, str]:
    """``{"trace_id", "span_id"}`` of the caller's span a raw ``traceparent`` header names
    (the log fields a span would add); empty when there is none or it does not parse."""
    if not traceparent:
        return {}
    extracted = incoming_context({TRACEPARENT: traceparent.decode("latin-1")})
    if extracted is None:
        return {}
    span = trace.get_current_span(extracted).get_span_context()
    return {"trace_id": format(span.trace_id, "032x"), "span_id": format(span.span_id, "016x")}


class TraceContextMiddleware:
    """Runs each HTTP request inside the trace context its headers carry (nothing to do
    for a request without ``traceparent``).

    ``trust`` (default: every caller, the hops inside the stack) decides per request
    whether the caller's context is adopted; a request it refuses runs in no trace, so
    its work starts one of its own. ``baggage=False`` never adopts the caller's baggage
    (a front door: it would ride along on every request the work sends)."""

    def __init__(
        self, app: ASGIApp, *, trust: TrustCaller | None = None, baggage: bool = True
    ) -> None:
        self.app = app
        self.trust = trust
        self.headers = (
            CLIENT_CONTEXT_HEADERS if baggage else CLIENT_CONTEXT_HEADERS - {BAGGAGE.encode()}
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        carrier = {
            key.decode("latin-1"): value.decode("latin-1")
            for key, value in scope["headers"]
            if key in self.headers
        }
        extracted = incoming_context(carrier) if carrier else None
        if extracted is None or (self.trust is not None and not self.trust(Headers(scope=scope))):
            await self.app(scope, receive, send)
            return
        token = context.attach(extracted)
        try:
            await self.app(scope, receive, send)
        finally:
            context.detach(token)

"""Outgoing HTTP clients that carry the current correlation id and trace context on every
request."""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Protocol

import httpx
from opentelemetry import propagate

from agentkeel.telemetry.correlation import HEADER, get_correlation_id


class _OutgoingRequest(Protocol):
    @property
    def headers(self) -> MutableMapping[str, str]: ...


async def add_correlation_id(request: _OutgoingRequest) -> None:
    """A request event hook that sets ``X-Correlation-ID`` to the current correlation id.

    Works for ``httpx`` and for ``httpx2`` (the MCP SDK's HTTP client) alike:

    >>> client = httpx2.AsyncClient(event_hooks={"request": [add_correlation_id]})
    """
    cid = get_correlation_id()
    if cid and HEADER not in request.headers:
        request.headers[HEADER] = cid


async def add_trace_context(request: _OutgoingRequest) -> None:
    """A request event hook that sets W3C ``traceparent`` (and ``tracestate``) to the
    current span, so the server's work joins the caller's trace; nothing without a span.

    >>> client = httpx2.AsyncClient(event_hooks={"request": [add_trace_context]})
    """
    propagate.inject(request.headers)


def make_async_client(**kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose requests carry ``X-Correlation-ID`` and the trace
    context.

    >>> client = make_async_client(base_url="http://127.0.0.1:8788", timeout=5.0)
    """
    hooks = kwargs.pop("event_hooks", {}) or {}
    request_hooks = [*hooks.get("request", []), add_correlation_id, add_trace_context]
    return httpx.AsyncClient(
        event_hooks={"request": request_hooks, "response": list(hooks.get("response", []))},
        **kwargs,
    )

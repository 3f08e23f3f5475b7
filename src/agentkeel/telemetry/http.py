"""Outgoing HTTP clients that carry the current correlation id on every request."""

from __future__ import annotations

from typing import Any

import httpx

from agentkeel.telemetry.correlation import HEADER, get_correlation_id


async def _add_correlation(request: httpx.Request) -> None:
    cid = get_correlation_id()
    if cid and HEADER not in request.headers:
        request.headers[HEADER] = cid


def make_async_client(**kwargs: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` whose requests carry ``X-Correlation-ID``.

    >>> client = make_async_client(base_url="http://127.0.0.1:8788", timeout=5.0)
    """
    hooks = kwargs.pop("event_hooks", {}) or {}
    request_hooks = [*hooks.get("request", []), _add_correlation]
    return httpx.AsyncClient(
        event_hooks={"request": request_hooks, "response": list(hooks.get("response", []))},
        **kwargs,
    )

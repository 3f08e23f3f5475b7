"""Render errors as ``{"error": {"code", "message"}}`` with the right status.

503 responses always carry ``Retry-After`` (whole seconds, at least 1); 429
responses carry it when a retry can work after a known wait (a daily budget,
a rate limit), not for limits that waiting does not lift. Anything that is not a ``KeelError``
is logged with its traceback and answered with a 500 ``internal_error`` that
names the correlation id, never with internals.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentkeel.errors import KeelError, Unauthorized
from agentkeel.telemetry.correlation import get_correlation_id

logger = logging.getLogger("agentkeel.http")

Endpoint = Callable[[Request], Awaitable[Response]]

_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "input_too_large",
    415: "unsupported_media_type",
    429: "limit_exceeded",
}


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    """The JSON body of every error response."""
    return {"error": {"code": code, "message": message}}


def retry_after_header(seconds: float | None) -> dict[str, str]:
    """``{"Retry-After": "<whole seconds>"}``, or nothing when unknown."""
    if seconds is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def error_response(exc: KeelError) -> JSONResponse:
    """The response for a ``KeelError``: its status, code and message."""
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if exc.status == 503:
        # Unavailable is transient by definition: without a better figure, ask for 1 s.
        headers = retry_after_header(retry_after if retry_after is not None else 1.0)
    elif exc.status == 429:
        # A 429 without a known time (turn limit, a spent session budget) will not
        # clear by waiting, so it carries no Retry-After.
        headers = retry_after_header(retry_after)
    if isinstance(exc, Unauthorized) and exc.www_authenticate:
        headers["WWW-Authenticate"] = exc.www_authenticate
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)


def internal_error_response(exc: BaseException) -> JSONResponse:
    """A 500 for an unexpected exception; the traceback goes to the log only."""
    cid = get_correlation_id()
    logger.error(
        "unhandled %s while serving a request",
        type(exc).__name__,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return JSONResponse(
        error_body(
            "internal_error",
            "The server failed while handling this request. Retry; if it persists report "
            f"correlation id {cid or 'unknown'}, under which the server log has the details.",
        ),
        status_code=500,
    )


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) in our error shape."""
    assert isinstance(exc, HTTPException)
    status = exc.status_code
    code = _HTTP_CODES.get(status, "http_error")
    if status == 404:
        message = f"No route {request.method} {request.url.path}. See the API under /v1/."
    elif status == 405:
        message = f"Method {request.method} is not allowed on {request.url.path}."
    else:
        message = str(exc.detail)
    headers: dict[str, Any] = dict(exc.headers or {})
    return JSONResponse(error_body(code, message), status_code=status, headers=headers)


async def keel_error_handler(request: Request, exc: Exception) -> Response:
    """A ``KeelError`` that escaped an endpoint."""
    assert isinstance(exc, KeelError)
    return error_response(exc)


def endpoint(handler: Endpoint) -> Endpoint:
    """Wrap a handler: a ``KeelError`` renders as its JSON error, anything else as a
    logged 500 that names the correlation id."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except KeelError as exc:
            return error_response(exc)
        except Exception as exc:
            return internal_error_response(exc)

    wrapped.__name__ = getattr(handler, "__name__", "endpoint")
    return wrapped

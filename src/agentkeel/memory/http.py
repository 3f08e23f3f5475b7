"""HTTP plumbing of the memory server: error rendering and request bodies.

Errors render as ``{"error": {"code", "message"}}``; 429 and 503 carry
``Retry-After``. Bodies over 1 MiB are refused before parsing (413), malformed
JSON is a 400 ``invalid_json``, wrong fields a 422 ``invalid_request``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from agentkeel.errors import InputTooLarge, InvalidRequest, KeelError, RequestError
from agentkeel.telemetry.correlation import get_correlation_id

logger = logging.getLogger("agentkeel.memory.http")

MAX_BODY_BYTES = 1024 * 1024
Endpoint = Callable[[Request], Awaitable[Response]]
_Model = TypeVar("_Model", bound=BaseModel)


def error_body(code: str, message: str) -> dict[str, dict[str, str]]:
    return {"error": {"code": code, "message": message}}


def error_response(exc: KeelError) -> JSONResponse:
    """A ``KeelError`` as its status and JSON body, with Retry-After where known."""
    headers: dict[str, str] = {}
    retry_after = getattr(exc, "retry_after", None)
    if exc.status in (429, 503) and retry_after is not None:
        headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
    return JSONResponse(exc.to_dict(), status_code=exc.status, headers=headers)


def internal_error_response(exc: BaseException) -> JSONResponse:
    """A 500 naming the correlation id; the traceback goes to the log only."""
    logger.error(
        "unhandled %s while serving a request",
        type(exc).__name__,
        exc_info=(type(exc), exc, exc.__traceback__),
    )
    return JSONResponse(
        error_body(
            "internal_error",
            "The memory server failed while handling this request. Retry; if it persists "
            f"report correlation id {get_correlation_id() or 'unknown'} (the server log has "
            "the details).",
        ),
        status_code=500,
    )


def endpoint(handler: Endpoint) -> Endpoint:
    """Render ``KeelError`` as its JSON error and anything else as a logged 500."""

    async def wrapped(request: Request) -> Response:
        try:
            return await handler(request)
        except KeelError as exc:
            return error_response(exc)
        except Exception as exc:
            return internal_error_response(exc)

    wrapped.__name__ = getattr(handler, "__name__", "endpoint")
    return wrapped


async def http_exception_handler(request: Request, exc: Exception) -> Response:
    """Starlette's own errors (unknown route, wrong method) in our error shape."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        code, message = "not_found", f"No route {request.method} {request.url.path}; see /v1/."
    elif exc.status_code == 405:
        code, message = "method_not_allowed", f"{request.method} is not allowed here."
    else:
        code, message = "http_error", str(exc.detail)
    return JSONResponse(error_body(code, message), status_code=exc.status_code)


async def parse_body(request: Request, model: type[_Model]) -> _Model:
    """The request body validated as ``model``; errors name the bad fields."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise _too_large(int(declared))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise _too_large(size)
        chunks.append(chunk)
    body = b"".join(chunks) or b"{}"
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise RequestError(
                f"The request body is not valid JSON ({errors[0]['msg']}). Send a JSON object.",
                code="invalid_json",
            ) from exc
        details = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
            for error in errors
        )
        raise InvalidRequest(f"The request body is invalid: {details}.") from exc


def _too_large(size: int) -> InputTooLarge:
    return InputTooLarge(
        f"The request body is {size} bytes or more; the limit is {MAX_BODY_BYTES} (1 MiB).",
        code="body_too_large",
    )


def json_response(data: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status_code)

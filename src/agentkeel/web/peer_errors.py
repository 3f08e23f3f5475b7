"""What an agentkeel service's error answer means to its caller: the ``KeelError``.

The other half of ``web/errors.py``: every service renders ``{"error": {code,
message}}`` with the status of its ``KeelError``, and the typed clients next to
each server (``memory/api_client.py``, ``runtime/admin_client.py``) turn that
answer back into the same error class, code, message and ``Retry-After``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import httpx

from agentkeel.errors import (
    Conflict,
    Forbidden,
    InputTooLarge,
    InvalidRequest,
    KeelError,
    LimitExceeded,
    NotFound,
    RequestError,
    SessionEnded,
    Unauthorized,
    Unavailable,
)

__all__ = ["error_from_response", "retry_after_of"]

_BY_STATUS: dict[int, type[KeelError]] = {
    400: RequestError,
    401: Unauthorized,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    410: SessionEnded,
    413: InputTooLarge,
    422: InvalidRequest,
}


def error_from_response(
    response: httpx.Response, *, peer: str, server_error_code: str = "server_error"
) -> KeelError:
    """The ``KeelError`` for an error ``response`` from ``peer`` (how messages name it,
    e.g. ``memory server (http://127.0.0.1:8788)``): its class by status, its code and
    message from the JSON body, ``Retry-After`` on 429 and 503."""
    code: str | None = None
    message = response.text[:500].strip() or response.reason_phrase
    try:
        data = response.json()
    except ValueError:
        data = None
    if isinstance(data, Mapping) and isinstance(data.get("error"), Mapping):
        error = data["error"]
        code = str(error.get("code")) if error.get("code") else None
        message = str(error.get("message") or message)
    status = response.status_code
    text = f"{peer} answered {status}: {message}"
    retry_after = retry_after_of(response)
    if status == 429:
        return LimitExceeded(text, retry_after=retry_after, code=code)
    if status == 503:
        return Unavailable(text, retry_after=retry_after, code=code or "unavailable")
    if status in _BY_STATUS:
        return _BY_STATUS[status](text, code=code)
    error_class = RequestError if 400 <= status < 500 else KeelError
    exc = error_class(text, code=code or ("bad_request" if status < 500 else server_error_code))
    exc.status = status if status >= 500 else exc.status
    return exc


def retry_after_of(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds, when the response has a usable one."""
    raw = response.headers.get("retry-after")
    if raw is None:
        return None
    try:
        value = float(raw)
    except ValueError:
        return None
    return value if math.isfinite(value) and value >= 0 else None

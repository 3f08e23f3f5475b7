"""HTTP/1.1 bytes the router writes itself: status lines and its own answers.

The router's own answers (errors, ``/health``, the admin API) use the error
shape every agentkeel service uses, ``{"error": {"code", "message"}}``, and a
503 always carries ``Retry-After``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from http import HTTPStatus
from typing import Any

from agentkeel.errors import KeelError
from agentkeel.web.errors import error_body

__all__ = ["json_response", "keel_error_response", "router_error", "status_line"]

_STATUS_LINES: dict[int, bytes] = {
    status.value: f"HTTP/1.1 {status.value} {status.phrase}\r\n".encode() for status in HTTPStatus
}
_JSON = b"application/json"


def status_line(status: int, reason: bytes = b"") -> bytes:
    """``HTTP/1.1 200 OK\\r\\n``; the standard phrase for known codes, else ``reason``."""
    line = _STATUS_LINES.get(status)
    if line is None:
        line = b"HTTP/1.1 %d %s\r\n" % (status, reason or b"Unknown")
    return line


def response_bytes(
    status: int,
    body: bytes,
    *,
    content_type: bytes = _JSON,
    headers: Iterable[tuple[bytes, bytes]] = (),
    keep_alive: bool = True,
) -> bytes:
    """A whole response with ``Content-Length``."""
    parts = [status_line(status)]
    parts.append(b"content-type: " + content_type + b"\r\n")
    parts.append(b"content-length: %d\r\n" % len(body))
    for name, value in headers:
        parts.append(name + b": " + value + b"\r\n")
    if not keep_alive:
        parts.append(b"connection: close\r\n")
    parts.append(b"\r\n")
    parts.append(body)
    return b"".join(parts)


def json_response(
    status: int,
    data: Any,
    *,
    headers: Iterable[tuple[bytes, bytes]] = (),
    keep_alive: bool = True,
) -> bytes:
    body = json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode()
    return response_bytes(status, body, headers=headers, keep_alive=keep_alive)


def router_error(
    status: int,
    code: str,
    message: str,
    *,
    retry_after_s: float | None = None,
    headers: Iterable[tuple[bytes, bytes]] = (),
    keep_alive: bool = True,
) -> bytes:
    """The router's own error answer; 503 gets ``Retry-After`` (1 s when not given)."""
    extra = list(headers)
    if status == 503 or retry_after_s is not None:
        seconds = retry_after_s if retry_after_s is not None else 1.0
        extra.append((b"retry-after", str(max(1, math.ceil(seconds))).encode()))
    return json_response(status, error_body(code, message), headers=extra, keep_alive=keep_alive)


def keel_error_response(
    exc: KeelError, *, headers: Iterable[tuple[bytes, bytes]] = (), keep_alive: bool = True
) -> bytes:
    """A ``KeelError`` as the router's answer, with its status and code."""
    retry_after = getattr(exc, "retry_after", None)
    return router_error(
        exc.status,
        exc.code,
        exc.message,
        retry_after_s=retry_after if exc.status in (429, 503) else None,
        headers=headers,
        keep_alive=keep_alive,
    )

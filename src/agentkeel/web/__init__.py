"""HTTP plumbing every agentkeel service shares: error rendering and request bodies."""

from agentkeel.web.bodies import MAX_BODY_BYTES, parse_body, read_body
from agentkeel.web.errors import (
    Endpoint,
    endpoint,
    error_body,
    error_response,
    http_exception_handler,
    internal_error_response,
    keel_error_handler,
    retry_after_header,
)

__all__ = [
    "MAX_BODY_BYTES",
    "Endpoint",
    "endpoint",
    "error_body",
    "error_response",
    "http_exception_handler",
    "internal_error_response",
    "keel_error_handler",
    "parse_body",
    "read_body",
    "retry_after_header",
]

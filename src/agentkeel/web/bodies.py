"""Request bodies: size-capped reading and validation into a pydantic model.

A body over ``MAX_BODY_BYTES`` is refused before it is parsed (413
``body_too_large``), malformed JSON is a 400 ``invalid_json``, and fields of the
wrong type or shape are a 422 ``invalid_request`` naming each field.
"""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request

from agentkeel.errors import InputTooLarge, InvalidRequest, RequestError

MAX_BODY_BYTES = 1024 * 1024
_Model = TypeVar("_Model", bound=BaseModel)


async def read_body(request: Request, *, limit: int = MAX_BODY_BYTES) -> bytes:
    """The raw body, refusing more than ``limit`` bytes whether declared or streamed."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(size, limit)
        chunks.append(chunk)
    return b"".join(chunks)


async def parse_body(
    request: Request, model: type[_Model], *, empty: bytes | None = None
) -> _Model:
    """The body validated as ``model``; ``empty`` stands in for a missing body
    (e.g. ``b"{}"`` where every field is optional)."""
    body = await read_body(request)
    if not body and empty is not None:
        body = empty
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        if any(error["type"] == "json_invalid" for error in errors):
            raise RequestError(
                f"The request body is not valid JSON ({errors[0]['msg']}). Send a JSON "
                "object with Content-Type: application/json.",
                code="invalid_json",
            ) from exc
        details = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'body'}: {error['msg']}"
            for error in errors
        )
        raise InvalidRequest(f"The request body is invalid: {details}.") from exc


def _too_large(size: int, limit: int) -> InputTooLarge:
    return InputTooLarge(
        f"The request body is {size} bytes or more; the limit is {limit} bytes. Send less.",
        code="body_too_large",
    )

"""The correlation id of the work in hand, kept in a contextvar."""

from __future__ import annotations

import re
import uuid
from contextvars import ContextVar

HEADER = "X-Correlation-ID"
_VALID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_current: ContextVar[str | None] = ContextVar("agentkeel_correlation_id", default=None)


def new_correlation_id() -> str:
    return uuid.uuid4().hex


def get_correlation_id() -> str | None:
    return _current.get()


def set_correlation_id(value: str | None) -> None:
    _current.set(value)


def accept_correlation_id(value: str | None) -> str:
    """The caller's id when it is well formed, else a new one (never trust raw header text)."""
    if value and _VALID.match(value):
        return value
    return new_correlation_id()

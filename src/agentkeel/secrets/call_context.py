"""Who a model call is made for: the ``CallContext`` of the turn that makes it.

The runtime sets it around each turn (``call_context``); the key chain reads it
(``current_call_context``) to pick the user's own key, the organization's or the
platform's. A context variable, like the correlation id: a turn's model calls
happen deep inside the user's agent code, which must not have to pass it on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field

from pydantic import SecretStr


@dataclass(frozen=True, slots=True)
class CallContext:
    """The caller of a turn's model calls."""

    user_id: str
    organization: str | None
    session_started_at: float
    request_keys: Mapping[str, SecretStr] = field(default_factory=dict)
    """Provider name -> the user's key sent with this request (only where allowed)."""


_CURRENT: ContextVar[CallContext | None] = ContextVar("agentkeel_call_context", default=None)


def current_call_context() -> CallContext | None:
    """The context of the turn running in this task; ``None`` outside a turn."""
    return _CURRENT.get()


@contextmanager
def call_context(context: CallContext) -> Iterator[CallContext]:
    """Model calls made inside the block are made for ``context``."""
    token = _CURRENT.set(context)
    try:
        yield context
    finally:
        _CURRENT.reset(token)

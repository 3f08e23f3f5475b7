"""A cheap token estimate, used before a provider reports real usage.

About four characters of English per token, plus a few tokens of framing per
message, as chat templates add. It errs slightly high on purpose: budgets are
reserved with it, and an over-reservation is released at settle time while an
under-reservation could overspend.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from agentkeel.models.types import ChatMessage, ToolSpec

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4
"""Role markers and separators a chat template wraps around each message."""
REPLY_PRIMING = 3
"""Tokens a template adds to start the assistant's reply."""


def estimate_text_tokens(text: str) -> int:
    """Tokens in a piece of text, rounded up (0 for empty text)."""
    return -(-len(text) // CHARS_PER_TOKEN)


def estimate_tokens(messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()) -> int:
    """Tokens a request of these messages and tool definitions will likely take.

    >>> estimate_tokens([ChatMessage("user", "What is 2 + 2?")])
    11
    """
    total = REPLY_PRIMING if messages else 0
    # Runs over the whole conversation on every model call: the text estimate is
    # inlined (the same arithmetic as estimate_text_tokens).
    for message in messages:
        total += MESSAGE_OVERHEAD - (-len(message.content) // CHARS_PER_TOKEN)
        if message.name:
            total += estimate_text_tokens(message.name)
        for call in message.tool_calls:
            total += MESSAGE_OVERHEAD + estimate_text_tokens(call.name)
            total += estimate_text_tokens(json.dumps(call.arguments, separators=(",", ":")))
    for tool in tools:
        spec = json.dumps(
            {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
            separators=(",", ":"),
        )
        total += MESSAGE_OVERHEAD + estimate_text_tokens(spec)
    return total

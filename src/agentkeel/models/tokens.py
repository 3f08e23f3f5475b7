"""A cheap, realistic token estimate: what fits in the context window.

About four characters of English per token, about one token per CJK character
or emoji (each byte beyond the first of a UTF-8 character adds half a token),
plus a few tokens of framing per message, as chat templates add. Context
trimming uses it; it is a guess, not a bound, and some text costs more. Budget
reservations use ``agentkeel.models.counting`` instead, whose counts are never
lower than what the provider will bill.
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
    """Tokens in a piece of text, rounded up (0 for empty text).

    >>> estimate_text_tokens("abcdefgh"), estimate_text_tokens("日本語です")
    (2, 7)
    """
    chars = len(text)
    if text.isascii():
        return -(-chars // CHARS_PER_TOKEN)
    extra = len(text.encode("utf-8", "surrogatepass")) - chars
    return -(-(chars + 2 * extra) // CHARS_PER_TOKEN)


def estimate_tokens(messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()) -> int:
    """Tokens a request of these messages and tool definitions will likely take.

    >>> estimate_tokens([ChatMessage("user", "What is 2 + 2?")])
    11
    """
    total = REPLY_PRIMING if messages else 0
    for message in messages:
        total += MESSAGE_OVERHEAD + estimate_text_tokens(message.content)
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

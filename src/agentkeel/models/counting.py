"""Upper bounds on the tokens of a model request, for budget reservations.

A token budget is only a limit if what is reserved before a call is at least
what the call will cost. Two counts therefore exist side by side:

- ``agentkeel.models.tokens.estimate_tokens``: a realistic guess, used to
  decide what fits in the context window (trimming). Too high there would drop
  tool results the model could still read.
- ``TokenCounter.prompt_tokens``: never fewer tokens than the provider will
  count for the prompt, used to reserve budget. Too high there only holds a
  little budget until the call settles.

``ByteBound`` is the bound for any tokenizer that works on UTF-8 bytes:
byte-level BPE (tiktoken, GPT-2, Llama 3, Qwen, SmolLM2) never makes more
tokens than the text has bytes, and neither does SentencePiece with byte
fallback (Llama 2, Mistral, Gemma), give or take the word-boundary marker that
the per-message allowance covers. Text that an NFC or NFKC normalizer would
lengthen (``ﷺ`` becomes 18 characters) is counted in its longest form. On top
of the text, fixed allowances cover what chat templates add around messages,
tool calls and tool definitions (role markers, separators, the plain-text
rendering of tool traffic for models without function calling, a preamble a
template injects).

Providers that know their tokenizer count exactly instead (see
``tiktoken_counter`` and ``server_counter``); every counter falls back to this
bound when it cannot count.
"""

from __future__ import annotations

import hashlib
import json
import unicodedata
from collections import OrderedDict
from collections.abc import Sequence
from typing import Protocol, runtime_checkable

from agentkeel.models.types import ChatMessage, ModelRequest, ToolCall, ToolSpec

REQUEST_ALLOWANCE = 64
"""Tokens a chat template may add once per request: begin-of-text, reply priming,
an injected preamble (Llama 3.1 adds a date line to the system prompt)."""
MESSAGE_ALLOWANCE = 32
"""Tokens a template may add around one message: role markers, separators, the
``[tool result name]`` label used for models without function calling."""
TOOL_ALLOWANCE = 32
"""Tokens a template may add around one tool call or one tool definition."""


@runtime_checkable
class TokenCounter(Protocol):
    """Counts the prompt tokens of a request, rounding up, never down.

    A provider's counter may be exact (its own tokenizer) or a bound; what it
    must never do is return fewer tokens than the provider will bill for the
    prompt, or budgets can be overspent. Output tokens are not its business:
    the reservation adds ``max_tokens``.
    """

    async def prompt_tokens(self, request: ModelRequest) -> int: ...


def text_bound(text: str) -> int:
    """At least as many tokens as any byte-level tokenizer makes of ``text``.

    >>> text_bound("hello"), text_bound("你好"), text_bound("🙂")
    (5, 6, 4)
    """
    if text.isascii():
        return len(text)
    # surrogatepass: a lone surrogate from JSON input still has a size, not an error.
    size = len(text.encode("utf-8", "surrogatepass"))
    for form in ("NFC", "NFKC"):
        if not unicodedata.is_normalized(form, text):
            normalized = unicodedata.normalize(form, text)
            size = max(size, len(normalized.encode("utf-8", "surrogatepass")))
    return size


def tool_spec_bound(tool: ToolSpec) -> int:
    """A bound on one tool definition as a provider renders it for the model."""
    # json.dumps escapes non-ASCII (6 or 12 bytes a character): never shorter than raw UTF-8.
    spec = json.dumps(
        {"name": tool.name, "description": tool.description, "parameters": tool.parameters},
        separators=(",", ":"),
        default=str,
    )
    return TOOL_ALLOWANCE + len(spec)


def tool_call_bound(call: ToolCall) -> int:
    """A bound on one tool call in the history (its id, name and JSON arguments)."""
    arguments = json.dumps(call.arguments, separators=(",", ":"), default=str)
    return TOOL_ALLOWANCE + text_bound(call.id) + text_bound(call.name) + len(arguments)


def message_bound(message: ChatMessage) -> int:
    """A bound on one message with its template framing, excluding its text when
    ``content`` is counted elsewhere (see ``bound_tokens``)."""
    total = MESSAGE_ALLOWANCE + len(message.role)
    if message.name:
        total += text_bound(message.name)
    if message.tool_call_id:
        total += text_bound(message.tool_call_id)
    for call in message.tool_calls:
        total += tool_call_bound(call)
    return total


def bound_tokens(messages: Sequence[ChatMessage], tools: Sequence[ToolSpec] = ()) -> int:
    """An upper bound on the prompt tokens of these messages and tool definitions
    for any byte-level tokenizer and any common chat template.

    >>> bound_tokens([ChatMessage("user", "What is 2 + 2?")])
    114
    """
    total = REQUEST_ALLOWANCE
    for message in messages:
        total += message_bound(message) + text_bound(message.content)
    for tool in tools:
        total += tool_spec_bound(tool)
    return total


class ByteBound:
    """The universal ``TokenCounter``: ``bound_tokens`` of the request.

    Costs one pass over the text (``str.isascii`` and, for non-ASCII text, one
    UTF-8 encode); no I/O.
    """

    async def prompt_tokens(self, request: ModelRequest) -> int:
        return bound_tokens(request.messages, request.tools)

    def __repr__(self) -> str:
        return "ByteBound()"


class CountCache:
    """Token counts of texts seen lately, least recently used out first.

    Keyed by a 16-byte BLAKE2b digest of the text, not the text: a conversation's
    long tool results would otherwise stay in memory as keys.
    """

    def __init__(self, *, size: int = 4096) -> None:
        self._counts: OrderedDict[bytes, int] = OrderedDict()
        self._size = size

    @staticmethod
    def key(text: str) -> bytes:
        return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).digest()

    def get(self, key: bytes) -> int | None:
        count = self._counts.get(key)
        if count is not None:
            self._counts.move_to_end(key)
        return count

    def put(self, key: bytes, count: int) -> None:
        self._counts[key] = count
        while len(self._counts) > self._size:
            self._counts.popitem(last=False)

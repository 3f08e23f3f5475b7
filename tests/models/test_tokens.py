from __future__ import annotations

from agentkeel.models.tokens import estimate_text_tokens, estimate_tokens
from agentkeel.models.types import ChatMessage, ToolCall, ToolSpec


def test_text_estimate_is_about_four_characters_per_token() -> None:
    """Text costs ceil(len / 4) tokens; empty text costs nothing."""
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("abcd") == 1
    assert estimate_text_tokens("abcde") == 2
    assert estimate_text_tokens("x" * 400) == 100


def test_messages_add_framing_overhead() -> None:
    """Each message adds its template framing, and the reply priming is counted once."""
    one = estimate_tokens([ChatMessage("user", "What is 2 + 2?")])
    assert one == 11
    two = estimate_tokens([ChatMessage("system", ""), ChatMessage("user", "What is 2 + 2?")])
    assert two == one + 4
    assert estimate_tokens([]) == 0


def test_tool_calls_and_tool_definitions_count() -> None:
    """Tool calls in the history and tool definitions sent along both cost tokens."""
    plain = [ChatMessage("assistant", "")]
    with_call = [
        ChatMessage(
            "assistant", "", tool_calls=(ToolCall("c1", "calculator", {"expression": "2+2"}),)
        )
    ]
    assert estimate_tokens(with_call) > estimate_tokens(plain)
    spec = ToolSpec("calculator", "Evaluates arithmetic.", {"type": "object", "properties": {}})
    assert estimate_tokens(plain, [spec]) > estimate_tokens(plain)


def test_estimate_grows_with_the_conversation() -> None:
    """A longer history never estimates fewer tokens than a shorter one."""
    history = [ChatMessage("user", "hello " * 50)]
    longer = [*history, ChatMessage("assistant", "hi " * 50)]
    assert estimate_tokens(longer) > estimate_tokens(history)

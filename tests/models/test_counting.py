"""The prompt bound that token budgets reserve with: never below what a byte-level
tokenizer and a chat template make of the request."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Callable, Sequence
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry

from agentkeel.config.settings import RetrySettings
from agentkeel.models.counting import (
    ByteBound,
    TokenCounter,
    bound_tokens,
    text_bound,
)
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.openai_provider import _plain_message
from agentkeel.models.scripted import ScriptedProvider
from agentkeel.models.tokens import estimate_text_tokens, estimate_tokens
from agentkeel.models.types import ChatMessage, ModelRequest, ToolCall, ToolSpec
from agentkeel.resilience.clock import ManualClock
from agentkeel.telemetry.metrics import ModelMetrics

Tokenizer = Callable[[str], int]


Form = Literal["NFC", "NFKC"]


def byte_tokenizer(normalization: Form | None) -> Tokenizer:
    """The worst case of a byte-level tokenizer (one token per byte, no merges) after
    the normalizer a tokenizer may apply first."""

    def count(text: str) -> int:
        if normalization is not None:
            text = unicodedata.normalize(normalization, text)
        return len(text.encode("utf-8", "surrogatepass"))

    return count


FORMS: tuple[Form | None, ...] = (None, "NFC", "NFKC")
TOKENIZERS = {form: byte_tokenizer(form) for form in FORMS}
SPECIAL = 1
"""A special token (<|im_start|>, <|im_end|>, [INST], <s>) is one token."""


def chatml(messages: Sequence[ChatMessage], tokens: Tokenizer) -> int:
    """Tokens of the request as a ChatML template renders it (SmolLM2, Qwen, OpenAI)."""
    total = SPECIAL + tokens("assistant\n")
    for m in messages:
        total += SPECIAL + tokens(f"{m.role}\n") + tokens(m.content) + SPECIAL + tokens("\n")
    return total


def llama2(messages: Sequence[ChatMessage], tokens: Tokenizer) -> int:
    """Tokens of the request in Llama 2's [INST] template, markers spelled out as text."""
    total = SPECIAL
    for m in messages:
        if m.role == "system":
            total += tokens(f"[INST] <<SYS>>\n{m.content}\n<</SYS>>\n\n")
        elif m.role == "user":
            total += tokens(f"[INST] {m.content} [/INST]")
        else:
            total += tokens(f" {m.content} ") + SPECIAL * 2
    return total


def plain_tools(messages: Sequence[ChatMessage], tokens: Tokenizer) -> int:
    """Tokens in ChatML of what the OpenAI provider sends a model without function
    calling: tool calls and results rendered as text."""
    rendered = [
        ChatMessage(role=m["role"], content=m["content"] or "")
        for m in (_plain_message(message) for message in messages)
    ]
    return chatml(rendered, tokens)


TEMPLATES = [chatml, llama2, plain_tools]

texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=300) | st.sampled_from(
    [
        "请用中文解释一下这个问题",
        "日本語のテキスト",
        "한국어 문장입니다",
        "🙂🚀👨‍👩‍👧‍👦🇯🇵",
        "\ufdfa" * 5,
        "def f(x):\n\treturn {x: [x**2]}",
    ]
)
calls = st.builds(
    ToolCall,
    id=st.text(max_size=12),
    name=st.text(min_size=1, max_size=20),
    arguments=st.dictionaries(st.text(max_size=10), texts, max_size=3),
)
messages = st.lists(
    st.one_of(
        st.builds(
            ChatMessage, role=st.sampled_from(["system", "user", "assistant"]), content=texts
        ),
        st.builds(
            ChatMessage,
            role=st.just("assistant"),
            content=texts,
            tool_calls=st.lists(calls, max_size=2).map(tuple),
        ),
        st.builds(
            ChatMessage,
            role=st.just("tool"),
            content=texts,
            tool_call_id=st.text(max_size=12),
            name=st.text(min_size=1, max_size=20),
        ),
    ),
    max_size=8,
)


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_text_bound_covers_a_byte_level_tokenizer_after_any_normalizer(text: str) -> None:
    """For any text, the bound is at least the tokens a byte-level tokenizer makes of
    it, raw or after NFC or NFKC normalization."""
    for tokens in TOKENIZERS.values():
        assert text_bound(text) >= tokens(text)


@settings(max_examples=200, deadline=None)
@given(conversation=messages)
def test_request_bound_covers_every_template(conversation: list[ChatMessage]) -> None:
    """For any conversation, the request bound is at least the tokens of ChatML,
    Llama 2 and the plain-text tool rendering under a byte-level tokenizer."""
    bound = bound_tokens(conversation)
    for tokens in TOKENIZERS.values():
        for template in TEMPLATES:
            assert bound >= template(conversation, tokens), template.__name__


def test_the_old_estimate_was_a_quarter_of_the_cost_of_cjk_text() -> None:
    """CJK text costs a token or more per character: the bound counts its bytes where
    four characters per token counted a quarter of its characters."""
    text = "東京の天気はどうですか" * 20
    assert text_bound(text) == len(text.encode("utf-8")) == 3 * len(text)
    assert text_bound(text) > 10 * -(-len(text) // 4)


def test_text_bound_of_ascii_is_its_length_and_normalizers_can_only_grow_it() -> None:
    """ASCII costs one per character; a character that NFKC spells out (U+FDFA) is
    counted in its long form; a lone surrogate is sized, not an error."""
    assert text_bound("hello world") == 11
    assert text_bound("") == 0
    assert text_bound("\ufdfa") == len(unicodedata.normalize("NFKC", "\ufdfa").encode())
    assert text_bound("\ud800") == 3


def test_tool_definitions_and_calls_are_counted_with_their_json() -> None:
    """Tool definitions and tool calls add at least their JSON bytes to the bound."""
    spec = ToolSpec("lookup", "查找一个词", {"type": "object", "properties": {"q": {}}})
    plain = [ChatMessage("assistant", "")]
    call = ToolCall("c1", "lookup", {"q": "東京"})
    with_call = [ChatMessage("assistant", "", tool_calls=(call,))]
    assert bound_tokens(plain, [spec]) - bound_tokens(plain) >= len(
        json.dumps(
            {"name": spec.name, "description": spec.description, "parameters": spec.parameters}
        )
        .replace(", ", ",")
        .replace(": ", ":")
    )
    assert bound_tokens(with_call) - bound_tokens(plain) >= len(json.dumps(call.arguments))


@pytest.mark.parametrize(
    ("text", "expected"),
    [("abcdefgh", 2), ("日本語です", 7), ("🙂", 2), ("привет", 5)],
)
def test_the_realistic_estimate_counts_non_ascii_text_higher(text: str, expected: int) -> None:
    """Trimming's estimate stays four ASCII characters per token and now gives CJK
    about a token per character, emoji two, Cyrillic under one."""
    assert estimate_text_tokens(text) == expected


def test_the_estimate_stays_below_the_bound_for_english() -> None:
    """For English the realistic estimate is about a quarter of the bound: trimming
    does not drop tool results as early as the bound would."""
    conversation = [ChatMessage("user", "Please summarise the quarterly report. " * 40)]
    assert estimate_tokens(conversation) * 3 < bound_tokens(conversation)


async def test_byte_bound_is_a_token_counter() -> None:
    """ByteBound satisfies the TokenCounter Protocol and returns bound_tokens."""
    request = ModelRequest(messages=[ChatMessage("user", "你好")])
    counter = ByteBound()
    assert isinstance(counter, TokenCounter)
    assert await counter.prompt_tokens(request) == bound_tokens(request.messages)


class Fixed:
    def __init__(self, count: int) -> None:
        self.count = count
        self.closed = False

    async def prompt_tokens(self, request: ModelRequest) -> int:
        return self.count

    async def aclose(self) -> None:
        self.closed = True


def gateway_with(counters: dict[str, TokenCounter], names: Sequence[str]) -> ModelGateway:
    clock = ManualClock()
    return ModelGateway(
        providers=[ScriptedProvider(name=name, clock=clock) for name in names],
        breakers={},
        retry=RetrySettings(max_attempts=1),
        metrics=ModelMetrics(CollectorRegistry()),
        clock=clock,
        counters=counters,
    )


async def test_gateway_counts_the_largest_of_its_providers() -> None:
    """Any provider of the chain may answer: the gateway's count is the largest of
    the providers' counts, the byte bound for a provider without a counter."""
    request = ModelRequest(messages=[ChatMessage("user", "hello")])
    bound = bound_tokens(request.messages)
    assert await gateway_with({}, ["a"]).prompt_tokens(request) == bound
    assert await gateway_with({"a": Fixed(5)}, ["a"]).prompt_tokens(request) == 5
    assert await gateway_with({"a": Fixed(5)}, ["a", "b"]).prompt_tokens(request) == bound
    big = Fixed(bound + 100)
    gateway = gateway_with({"a": Fixed(5), "b": big}, ["a", "b"])
    assert await gateway.prompt_tokens(request) == bound + 100
    await gateway.aclose()
    assert big.closed

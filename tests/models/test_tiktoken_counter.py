"""TiktokenCounter: exact OpenAI counts when the encoding loads, the byte bound until
then and whenever it cannot."""

from __future__ import annotations

import logging
import threading
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentkeel.models.counting import TokenCounter, bound_tokens, text_bound
from agentkeel.models.tiktoken_counter import PER_MESSAGE, PER_REQUEST, TiktokenCounter
from agentkeel.models.types import ChatMessage, ModelRequest

REQUEST = ModelRequest(
    messages=[
        ChatMessage("system", "You are a helpful assistant."),
        ChatMessage("user", "What is the capital of France?"),
    ]
)


class WordEncoding:
    """A stand-in encoding: one token per whitespace-separated word."""

    def encode_ordinary(self, text: str) -> list[int]:
        return [0] * len(text.split())


async def test_counts_with_the_encoding_once_it_has_loaded() -> None:
    """Before the encoding has loaded the count is the byte bound; after, message text
    is counted by the encoding plus OpenAI's per-message framing."""
    gate = threading.Event()
    seen: list[tuple[str, str | None]] = []

    def load(model: str, encoding: str | None) -> WordEncoding:
        seen.append((model, encoding))
        gate.wait(5)
        return WordEncoding()

    counter = TiktokenCounter(model="gpt-4o-mini", load=load)
    assert isinstance(counter, TokenCounter)
    assert await counter.prompt_tokens(REQUEST) == bound_tokens(REQUEST.messages)
    assert not counter.exact
    gate.set()
    assert counter.wait_loaded(5)
    assert counter.exact
    words = sum(len(m.content.split()) + 1 for m in REQUEST.messages)  # content + role
    assert await counter.prompt_tokens(REQUEST) == PER_REQUEST + 2 * PER_MESSAGE + words
    assert seen == [("gpt-4o-mini", None)]


async def test_an_encoding_that_cannot_load_leaves_the_byte_bound(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """When tiktoken is missing or cannot fetch its file, every count is the byte
    bound and one warning names the model and what to do."""

    def load(model: str, encoding: str | None) -> Any:
        raise OSError("no route to host")

    counter = TiktokenCounter(model="gpt-4o", load=load)
    with caplog.at_level(logging.WARNING, logger="agentkeel.models.tiktoken_counter"):
        assert await counter.prompt_tokens(REQUEST) == bound_tokens(REQUEST.messages)
        assert counter.wait_loaded(5)
        assert await counter.prompt_tokens(REQUEST) == bound_tokens(REQUEST.messages)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1
    assert "gpt-4o" in lines[0] and "TIKTOKEN_CACHE_DIR" in lines[0]
    assert not counter.exact


def offline_cl100k() -> Any:
    """tiktoken's cl100k_base when installed and in TIKTOKEN_CACHE_DIR, never downloaded."""
    tiktoken = pytest.importorskip("tiktoken")
    load = pytest.importorskip("tiktoken.load")
    original = load.read_file

    def local_only(blobpath: str) -> bytes:
        if "://" in blobpath:
            raise OSError(f"not downloading {blobpath} in a test")
        return bytes(original(blobpath))

    load.read_file = local_only
    try:
        return tiktoken.get_encoding("cl100k_base")
    except OSError:
        pytest.skip("tiktoken's cl100k_base is not in TIKTOKEN_CACHE_DIR (it cannot be fetched)")
    finally:
        load.read_file = original


@settings(max_examples=200, deadline=None)
@given(text=st.text(alphabet=st.characters(codec="utf-8")))
def test_the_byte_bound_covers_tiktoken_exactly_counted(text: str) -> None:
    """For any text, cl100k_base makes no more tokens than the byte bound."""
    encoding = offline_cl100k()
    assert text_bound(text) >= len(encoding.encode_ordinary(text))


async def test_real_tiktoken_counts_below_the_bound_and_above_the_text() -> None:
    """With the real cl100k_base encoding English counts far below the byte bound, and
    never below the text's own tokens plus framing."""
    encoding = offline_cl100k()
    counter = TiktokenCounter(model="gpt-4", load=lambda model, name: encoding)
    counter.start()
    assert counter.wait_loaded(5) and counter.exact
    request = ModelRequest(messages=[ChatMessage("user", "Please summarise the report. " * 20)])
    count = await counter.prompt_tokens(request)
    text = len(encoding.encode_ordinary(request.messages[0].content))
    assert text + PER_MESSAGE < count < bound_tokens(request.messages) / 3

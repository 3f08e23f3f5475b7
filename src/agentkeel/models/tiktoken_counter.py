"""Exact prompt counts for OpenAI models with ``tiktoken``, when its encoding is at hand.

``tiktoken`` is optional (``pip install 'agentkeel[tiktoken]'``), and it
downloads its encoding files on first use, which a machine without internet
access cannot do: point ``TIKTOKEN_CACHE_DIR`` at a directory that holds them.
The encoding loads in a daemon thread on the first count, so a download that
hangs never holds up a turn or the process's exit; until it has loaded, and
for good if it cannot, prompts are counted with the byte bound.

Message text is counted exactly, plus the framing OpenAI documents for chat
models (a few tokens per message and for the reply) with a small margin. Tool
definitions and tool calls are rendered by OpenAI in a format it does not
publish: they are counted with the byte bound.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Protocol

from agentkeel.models.counting import CountCache, bound_tokens, tool_call_bound, tool_spec_bound
from agentkeel.models.types import ModelRequest

logger = logging.getLogger(__name__)

PER_MESSAGE = 4
"""Three tokens of framing per message as OpenAI documents, plus one of margin."""
PER_NAME = 1
PER_REQUEST = 8
"""Three tokens prime the reply; the rest is margin for template changes."""
DEFAULT_ENCODING = "o200k_base"
"""For model names tiktoken does not know (newer than the installed tiktoken)."""


class Encoding(Protocol):
    """The part of ``tiktoken.Encoding`` this counter uses."""

    def encode_ordinary(self, text: str) -> list[int]: ...


def load_tiktoken(model: str, encoding: str | None) -> Encoding:
    """The tiktoken encoding named, or the one tiktoken maps ``model`` to."""
    import tiktoken

    if encoding is None:
        try:
            encoding = tiktoken.encoding_name_for_model(model)
        except KeyError:
            encoding = DEFAULT_ENCODING
    loaded: Encoding = tiktoken.get_encoding(encoding)
    return loaded


class TiktokenCounter:
    """A ``TokenCounter`` for OpenAI models: tiktoken when loaded, the byte bound otherwise.

    >>> counter = TiktokenCounter(model="gpt-4o-mini")
    >>> await counter.prompt_tokens(ModelRequest(messages=[ChatMessage("user", "hi")]))

    ``load`` is called once, in a thread, with the model and encoding name.
    """

    def __init__(
        self,
        *,
        model: str,
        encoding: str | None = None,
        load: Callable[[str, str | None], Encoding] = load_tiktoken,
        cache_size: int = 4096,
    ) -> None:
        self.model = model
        self.encoding_name = encoding
        self._load = load
        self._encoding: Encoding | None = None
        self._started = False
        self._lock = threading.Lock()
        self._loaded = threading.Event()
        self._cache = CountCache(size=cache_size)

    @property
    def exact(self) -> bool:
        """Whether counts come from tiktoken (True) or from the byte bound (False)."""
        return self._encoding is not None

    def start(self) -> None:
        """Start loading the encoding in a daemon thread (once; later calls do nothing)."""
        with self._lock:
            if self._started:
                return
            self._started = True
        threading.Thread(target=self._load_encoding, name="keel-tiktoken", daemon=True).start()

    def wait_loaded(self, timeout: float | None = None) -> bool:
        """Block until loading finished (either way); whether it did within ``timeout``."""
        return self._loaded.wait(timeout)

    async def prompt_tokens(self, request: ModelRequest) -> int:
        encoding = self._encoding
        if encoding is None:
            self.start()
            return bound_tokens(request.messages, request.tools)
        total = PER_REQUEST
        count = self._count_text
        for message in request.messages:
            total += PER_MESSAGE + count(message.role) + count(message.content)
            if message.name:
                total += PER_NAME + count(message.name)
            if message.tool_call_id:
                total += count(message.tool_call_id)
            for call in message.tool_calls:
                total += tool_call_bound(call)
        for tool in request.tools:
            total += tool_spec_bound(tool)
        return total

    def _count_text(self, text: str) -> int:
        key = self._cache.key(text)
        count = self._cache.get(key)
        if count is None:
            assert self._encoding is not None
            count = len(self._encoding.encode_ordinary(text))
            self._cache.put(key, count)
        return count

    def _load_encoding(self) -> None:
        try:
            self._encoding = self._load(self.model, self.encoding_name)
        except Exception as exc:
            # Any failure (not installed, no network, a corrupt cache) leaves the byte bound.
            logger.warning(
                "tiktoken encoding for model '%s' could not be loaded (%s: %s); token budgets "
                "reserve with the UTF-8 byte bound instead. Install agentkeel[tiktoken] and put "
                "the encoding file in TIKTOKEN_CACHE_DIR, or set models[].tokenizer: bytes",
                self.model,
                type(exc).__name__,
                exc,
            )
        else:
            logger.info("token counts for model '%s' use tiktoken", self.model)
        finally:
            self._loaded.set()

    def __repr__(self) -> str:
        return f"TiktokenCounter(model={self.model!r}, exact={self.exact})"

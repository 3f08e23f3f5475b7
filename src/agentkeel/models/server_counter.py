"""Prompt counts from a llama.cpp server's own tokenizer.

Two servers speak the OpenAI protocol over llama.cpp and both can tokenize:

- llama.cpp's own server: ``POST /tokenize {"content": ...}`` → ``{"tokens": [...]}``;
- llama-cpp-python's server (what ``keel up`` runs):
  ``POST /extras/tokenize/count {"input": ...}`` → ``{"count": n}``.

Each message's text is counted once and remembered (a conversation re-sends
its history on every call, so usually only the newest message costs a
request); framing is the byte bound's allowance, since the chat template is
the server's. A count that fails or takes longer than ``timeout_s`` falls back
to the byte bound for the whole request: never fewer tokens than the model
will see, whatever the server does.

The cost is a loopback round trip per new message. llama-cpp-python's server
runs tokenize behind the same lock as generation, so while it is generating
a reply for another turn a count waits (and times out to the byte bound):
that is why ``keel up`` leaves the local model on ``tokenizer: bytes``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, Literal

import httpx

from agentkeel.models.counting import (
    REQUEST_ALLOWANCE,
    CountCache,
    bound_tokens,
    message_bound,
    tool_spec_bound,
)
from agentkeel.models.types import ModelRequest

logger = logging.getLogger(__name__)

Flavour = Literal["llama.cpp", "llama-cpp-python"]


def server_root(base_url: str) -> str:
    """The server's root URL from an OpenAI-compatible base URL (``…/v1`` stripped)."""
    root = base_url.rstrip("/")
    return root[: -len("/v1")] if root.endswith("/v1") else root


class ServerTokenCounter:
    """A ``TokenCounter`` that asks the model's server to tokenize.

    >>> counter = ServerTokenCounter(base_url="http://127.0.0.1:8090/v1",
    ...     flavour="llama-cpp-python", model="smollm2-135m-instruct", timeout_s=0.25)
    >>> await counter.prompt_tokens(request)
    """

    def __init__(
        self,
        *,
        base_url: str,
        flavour: Flavour,
        model: str,
        timeout_s: float,
        http_client: httpx.AsyncClient | None = None,
        cache_size: int = 4096,
    ) -> None:
        self.root = server_root(base_url)
        self.flavour = flavour
        self.model = model
        self.timeout_s = timeout_s
        self._client = http_client or httpx.AsyncClient(timeout=timeout_s)
        self._owns_client = http_client is None
        self._cache = CountCache(size=cache_size)
        self._failing = False
        self.fallbacks = 0
        """Requests counted with the byte bound because the server did not answer in time."""

    async def prompt_tokens(self, request: ModelRequest) -> int:
        known: dict[str, int] = {}
        missing: list[tuple[str, bytes]] = []
        for text in dict.fromkeys(m.content for m in request.messages if m.content):
            key = self._cache.key(text)
            count = self._cache.get(key)
            if count is None:
                missing.append((text, key))
            else:
                known[text] = count
        if missing:
            try:
                counts = await asyncio.wait_for(
                    asyncio.gather(*(self._count(text) for text, _ in missing)), self.timeout_s
                )
            except (httpx.HTTPError, TimeoutError, ValueError, KeyError, TypeError) as exc:
                self._fell_back(exc)
                return bound_tokens(request.messages, request.tools)
            for (text, key), count in zip(missing, counts, strict=True):
                known[text] = count
                self._cache.put(key, count)
            if self._failing:
                self._failing = False
                logger.info("tokenizer of %s answers again; exact prompt counts resume", self.root)
        total = REQUEST_ALLOWANCE
        for message in request.messages:
            total += message_bound(message) + (known[message.content] if message.content else 0)
        for tool in request.tools:
            total += tool_spec_bound(tool)
        return total

    async def aclose(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def _count(self, text: str) -> int:
        if self.flavour == "llama.cpp":
            body: dict[str, Any] = {"content": text, "add_special": False}
            response = await self._client.post(f"{self.root}/tokenize", json=body)
            response.raise_for_status()
            return len(response.json()["tokens"])
        body = {"input": text, "model": self.model}
        response = await self._client.post(f"{self.root}/extras/tokenize/count", json=body)
        response.raise_for_status()
        return int(response.json()["count"])

    def _fell_back(self, exc: BaseException) -> None:
        self.fallbacks += 1
        if self._failing:
            return
        self._failing = True
        reason = f"no answer within {self.timeout_s:g}s" if isinstance(exc, TimeoutError) else exc
        logger.warning(
            "tokenizer of %s (%s) failed (%s); token budgets reserve with the UTF-8 byte "
            "bound until it answers. Raise models[].tokenizer_timeout_s, or set "
            "models[].tokenizer: bytes",
            self.root,
            self.flavour,
            reason,
        )

    def __repr__(self) -> str:
        return f"ServerTokenCounter(root={self.root!r}, flavour={self.flavour!r})"

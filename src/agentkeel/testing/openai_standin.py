"""A stand-in for an OpenAI-compatible model server that checks the bearer key.

Not a model: it answers ``POST /v1/chat/completions`` (JSON, and SSE when
``stream`` is true) with a canned reply, for a configurable set of accepted
API keys, and 401 (as OpenAI does) for any other key. The accepted set can be
changed while it runs (``accept``, ``revoke``), which is how tests rotate or
revoke a key. It serves over a real loopback socket, so the official SDK talks
to it unchanged, and records which key each call used.

>>> with OpenAIStandin(keys={"sk-platform-0123"}).serving() as standin:
...     settings = {"kind": "openai", "base_url": standin.base_url, ...}
...     standin.calls_by_key["sk-platform-0123"]
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentkeel.testing._serving import serve_in_thread

__all__ = ["OpenAIStandin"]

DEFAULT_REPLY = "Hello from the stand-in."


class OpenAIStandin:
    """The stand-in server's state: accepted keys, the canned reply, calls seen."""

    def __init__(
        self, *, keys: Iterable[str], reply: str = DEFAULT_REPLY, model: str = "standin"
    ) -> None:
        self.reply = reply
        self.model = model
        self.base_url = ""
        self._lock = threading.Lock()
        self._keys = set(keys)
        self.calls_by_key: Counter[str] = Counter()
        """Accepted calls per key (tests assert which key served a call)."""
        self.rejected_by_key: Counter[str] = Counter()
        """401 answers per presented key."""

    def accept(self, *keys: str) -> None:
        """Accept ``keys`` from now on (in addition to the current ones)."""
        with self._lock:
            self._keys.update(keys)

    def revoke(self, *keys: str) -> None:
        """Answer 401 to ``keys`` from now on."""
        with self._lock:
            self._keys.difference_update(keys)

    def set_keys(self, keys: Iterable[str]) -> None:
        """Accept exactly ``keys``."""
        with self._lock:
            self._keys = set(keys)

    @property
    def total_calls(self) -> int:
        return sum(self.calls_by_key.values()) + sum(self.rejected_by_key.values())

    def app(self) -> Starlette:
        return Starlette(routes=[Route("/v1/chat/completions", self._complete, methods=["POST"])])

    @contextmanager
    def serving(self) -> Iterator[OpenAIStandin]:
        """Serve on a free loopback port until the block ends; ``base_url`` ends in ``/v1``."""
        with serve_in_thread(self.app(), what="OpenAI stand-in") as url:
            self.base_url = f"{url}/v1"
            try:
                yield self
            finally:
                self.base_url = ""

    async def _complete(self, request: Request) -> Response:
        auth = request.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        with self._lock:
            accepted = key in self._keys
            (self.calls_by_key if accepted else self.rejected_by_key)[key] += 1
        if not accepted:
            return JSONResponse(
                {
                    "error": {
                        "message": "Incorrect API key provided.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
                status_code=401,
            )
        body = await request.json()
        created = int(time.time())
        usage = {"prompt_tokens": 7, "completion_tokens": 5, "total_tokens": 12}
        if body.get("stream"):
            return StreamingResponse(self._chunks(created, usage), media_type="text/event-stream")
        return JSONResponse(
            {
                "id": "chatcmpl-standin",
                "object": "chat.completion",
                "created": created,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": self.reply},
                        "finish_reason": "stop",
                    }
                ],
                "usage": usage,
            }
        )

    async def _chunks(self, created: int, usage: dict[str, int]) -> AsyncIterator[str]:
        def chunk(delta: dict[str, str], finish: str | None) -> str:
            data = {
                "id": "chatcmpl-standin",
                "object": "chat.completion.chunk",
                "created": created,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
            }
            return f"data: {json.dumps(data)}\n\n"

        yield chunk({"role": "assistant", "content": ""}, None)
        for i, word in enumerate(self.reply.split(" ")):
            yield chunk({"content": word if i == 0 else " " + word}, None)
        yield chunk({}, "stop")
        tail = {
            "id": "chatcmpl-standin",
            "object": "chat.completion.chunk",
            "created": created,
            "model": self.model,
            "choices": [],
            "usage": usage,
        }
        yield f"data: {json.dumps(tail)}\n\n"
        yield "data: [DONE]\n\n"

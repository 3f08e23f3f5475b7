"""A stand-in model server on loopback that speaks the OpenAI and Anthropic wire protocols.

It serves ``POST /v1/chat/completions`` (JSON and SSE streaming, tool calls,
``stream_options.include_usage``) and ``POST /v1/messages`` (JSON and SSE
events, tool_use blocks) from a real uvicorn server in a background thread,
so the official SDKs talk to it exactly as to the real thing.

The requested ``model`` picks the behaviour:

    text           a short text reply
    tool           one tool call: calculator {"expression": "2 + 2"}
    no-usage       a text reply without any usage report
    rate-limited   HTTP 429 with Retry-After: 7
    server-error   HTTP 500
    overloaded     HTTP 529 (Anthropic's overload status)
    unauthorized   HTTP 401
    slow           never answers; waits until the client gives up

Every request is recorded (path, headers, JSON body) for assertions.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agentkeel.models.types import ToolSpec

REPLY_WORDS = ["Hello", " from", " the", " fake", " endpoint."]
REPLY_TEXT = "".join(REPLY_WORDS)
TOOL_ARGUMENT_PIECES = ['{"expression"', ': "2 + ', '2"}']
INPUT_TOKENS = 21
OUTPUT_TOKENS = 5


@dataclass
class RecordedRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class FakeEndpoints:
    """The running server: its base URL and what it has received."""

    base_url: str = ""
    requests: list[RecordedRequest] = field(default_factory=list)

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]


def _error_status(model: str) -> tuple[int, dict[str, str]] | None:
    return {
        "rate-limited": (429, {"retry-after": "7"}),
        "server-error": (500, {}),
        "overloaded": (529, {}),
        "unauthorized": (401, {}),
    }.get(model)


async def _wait_for_disconnect(request: Request) -> None:
    """Hold the request open until the client hangs up (its timeout), at most 10 s."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(10):
            while (await request.receive())["type"] != "http.disconnect":
                pass


def _sse(events: list[str]) -> StreamingResponse:
    async def body() -> AsyncIterator[str]:
        for event in events:
            yield event
            await asyncio.sleep(0)

    return StreamingResponse(body(), media_type="text/event-stream")


# --- OpenAI chat completions -------------------------------------------------------------


def _openai_chunk(model: str, delta: dict[str, Any], finish: str | None = None) -> str:
    chunk = {
        "id": "chatcmpl-fake",
        "object": "chat.completion.chunk",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(chunk)}\n\n"


def _openai_usage() -> dict[str, int]:
    return {
        "prompt_tokens": INPUT_TOKENS,
        "completion_tokens": OUTPUT_TOKENS,
        "total_tokens": INPUT_TOKENS + OUTPUT_TOKENS,
    }


async def _chat_completions(request: Request, state: FakeEndpoints) -> Response:
    body = await request.json()
    state.requests.append(RecordedRequest(request.url.path, dict(request.headers), body))
    model = body.get("model", "")
    error = _error_status(model)
    if error is not None:
        status, headers = error
        return JSONResponse(
            {"error": {"message": f"fake {status}", "type": "fake_error", "code": None}},
            status_code=status,
            headers=headers,
        )
    if model == "slow":
        await _wait_for_disconnect(request)
        return Response(status_code=204)
    with_usage = model != "no-usage"
    if body.get("stream"):
        events = [_openai_chunk(model, {"role": "assistant", "content": ""})]
        if model == "tool":
            events.append(
                _openai_chunk(
                    model,
                    {
                        "tool_calls": [
                            {
                                "index": 0,
                                "id": "call_abc",
                                "type": "function",
                                "function": {"name": "calculator", "arguments": ""},
                            }
                        ]
                    },
                )
            )
            for piece in TOOL_ARGUMENT_PIECES:
                events.append(
                    _openai_chunk(
                        model, {"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}
                    )
                )
            events.append(_openai_chunk(model, {}, "tool_calls"))
        else:
            events.extend(_openai_chunk(model, {"content": word}) for word in REPLY_WORDS)
            events.append(_openai_chunk(model, {}, "stop"))
        if with_usage and (body.get("stream_options") or {}).get("include_usage"):
            usage_chunk = {
                "id": "chatcmpl-fake",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": model,
                "choices": [],
                "usage": _openai_usage(),
            }
            events.append(f"data: {json.dumps(usage_chunk)}\n\n")
        events.append("data: [DONE]\n\n")
        return _sse(events)
    message: dict[str, Any] = {"role": "assistant", "content": REPLY_TEXT}
    finish = "stop"
    if model == "tool":
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_abc",
                    "type": "function",
                    "function": {"name": "calculator", "arguments": "".join(TOOL_ARGUMENT_PIECES)},
                }
            ],
        }
        finish = "tool_calls"
    completion: dict[str, Any] = {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
    }
    if with_usage:
        completion["usage"] = _openai_usage()
    return JSONResponse(completion)


# --- Anthropic messages --------------------------------------------------------------------


def _anthropic_event(kind: str, data: dict[str, Any]) -> str:
    return f"event: {kind}\ndata: {json.dumps({'type': kind, **data})}\n\n"


async def _messages(request: Request, state: FakeEndpoints) -> Response:
    body = await request.json()
    state.requests.append(RecordedRequest(request.url.path, dict(request.headers), body))
    model = body.get("model", "")
    error = _error_status(model)
    if error is not None:
        status, headers = error
        kind = "rate_limit_error" if status == 429 else "api_error"
        return JSONResponse(
            {"type": "error", "error": {"type": kind, "message": f"fake {status}"}},
            status_code=status,
            headers=headers,
        )
    if model == "slow":
        await _wait_for_disconnect(request)
        return Response(status_code=204)
    tool = model == "tool"
    stop_reason = "tool_use" if tool else "end_turn"
    if body.get("stream"):
        events = [
            _anthropic_event(
                "message_start",
                {
                    "message": {
                        "id": "msg_fake",
                        "type": "message",
                        "role": "assistant",
                        "model": model,
                        "content": [],
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": 1},
                    }
                },
            ),
            _anthropic_event("ping", {}),
        ]
        if tool:
            events.append(
                _anthropic_event(
                    "content_block_start",
                    {
                        "index": 0,
                        "content_block": {
                            "type": "tool_use",
                            "id": "toolu_abc",
                            "name": "calculator",
                            "input": {},
                        },
                    },
                )
            )
            events.extend(
                _anthropic_event(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "input_json_delta", "partial_json": piece}},
                )
                for piece in TOOL_ARGUMENT_PIECES
            )
        else:
            events.append(
                _anthropic_event(
                    "content_block_start",
                    {"index": 0, "content_block": {"type": "text", "text": ""}},
                )
            )
            events.extend(
                _anthropic_event(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "text_delta", "text": word}},
                )
                for word in REPLY_WORDS
            )
        events += [
            _anthropic_event("content_block_stop", {"index": 0}),
            _anthropic_event(
                "message_delta",
                {
                    "delta": {"stop_reason": stop_reason, "stop_sequence": None},
                    "usage": {"output_tokens": OUTPUT_TOKENS},
                },
            ),
            _anthropic_event("message_stop", {}),
        ]
        return _sse(events)
    content: list[dict[str, Any]] = (
        [
            {
                "type": "tool_use",
                "id": "toolu_abc",
                "name": "calculator",
                "input": {"expression": "2 + 2"},
            }
        ]
        if tool
        else [{"type": "text", "text": REPLY_TEXT}]
    )
    return JSONResponse(
        {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": INPUT_TOKENS, "output_tokens": OUTPUT_TOKENS},
        }
    )


def create_app(state: FakeEndpoints) -> Starlette:
    async def chat(request: Request) -> Response:
        return await _chat_completions(request, state)

    async def messages(request: Request) -> Response:
        return await _messages(request, state)

    return Starlette(
        routes=[
            Route("/v1/chat/completions", chat, methods=["POST"]),
            Route("/v1/messages", messages, methods=["POST"]),
        ]
    )


@contextmanager
def serve_fake_endpoints() -> Iterator[FakeEndpoints]:
    """Run the stand-in server on a free loopback port for the duration of the block."""
    state = FakeEndpoints()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        create_app(state),
        log_level="warning",
        lifespan="off",
        ws="none",
        http="h11",
        timeout_graceful_shutdown=2,
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("The fake model endpoint did not start.")
        time.sleep(0.01)
    state.base_url = f"http://127.0.0.1:{port}"
    try:
        yield state
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


# A tool that both providers' tests offer the model.
CALCULATOR = ToolSpec(
    "calculator",
    "Evaluates arithmetic.",
    {"type": "object", "properties": {"expression": {"type": "string"}}},
)

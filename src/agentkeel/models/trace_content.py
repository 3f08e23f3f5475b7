"""Messages as the GenAI conventions put them on a span, for ``tracing.capture_content``.

``gen_ai.input.messages`` and ``gen_ai.output.messages`` are JSON arrays of
``{"role", "parts": [...]}`` (``finish_reason`` on output messages), each part a
``text``, a ``tool_call`` (``id``, ``name``, ``arguments``) or a
``tool_call_response`` (``id``, ``response``). Only built when content is captured:
prompts and replies may hold personal data.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from agentkeel.models.types import ChatMessage, ModelResponse, ToolCall

__all__ = ["input_messages_json", "output_messages_json", "text_message_json"]


def input_messages_json(messages: Sequence[ChatMessage]) -> str:
    """``gen_ai.input.messages`` of a request."""
    return _dumps([_message(m) for m in messages])


def output_messages_json(response: ModelResponse) -> str:
    """``gen_ai.output.messages`` of a reply: one assistant message."""
    parts: list[dict[str, Any]] = []
    if response.content:
        parts.append({"type": "text", "content": response.content})
    parts.extend(_tool_call(call) for call in response.tool_calls)
    return _dumps([{"role": "assistant", "parts": parts, "finish_reason": response.finish_reason}])


def text_message_json(role: str, text: str, *, finish_reason: str | None = None) -> str:
    """One message of plain text (a turn's input or reply)."""
    message: dict[str, Any] = {"role": role, "parts": [{"type": "text", "content": text}]}
    if finish_reason is not None:
        message["finish_reason"] = finish_reason
    return _dumps([message])


def _message(message: ChatMessage) -> dict[str, Any]:
    if message.role == "tool":
        return {
            "role": "tool",
            "parts": [
                {
                    "type": "tool_call_response",
                    "id": message.tool_call_id,
                    "response": message.content,
                }
            ],
        }
    parts: list[dict[str, Any]] = []
    if message.content:
        parts.append({"type": "text", "content": message.content})
    parts.extend(_tool_call(call) for call in message.tool_calls)
    return {"role": message.role, "parts": parts}


def _tool_call(call: ToolCall) -> dict[str, Any]:
    return {"type": "tool_call", "id": call.id, "name": call.name, "arguments": call.arguments}


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))

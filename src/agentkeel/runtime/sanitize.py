"""Output sanitization in a turn: secrets out of replies, streamed tokens and tool results.

``AgentService`` uses one ``OutputSanitizer`` (when ``guardrails.redact_secrets``):

- tool results are redacted as the tool set returns them (``RedactingToolSet``),
  so neither the model, the stream, nor the stored turn ever holds the secret;
- streamed ``token`` events go through a ``StreamRedactor`` (the unfinished
  word is held back, so a secret split across two tokens is still caught;
  any other event flushes it first); the turn's end flushes the rest;
- the final reply and the messages kept as context are redacted before the
  turn is stored and returned; only this final pass is counted
  (``agent_output_redactions_total{where="reply"}``), so a secret that was
  also streamed counts once.

>>> sanitizer = OutputSanitizer(SecretRedactor(known=known))
>>> toolset = sanitizer.tools(toolset)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from agentkeel.models.types import ChatMessage, ToolSpec
from agentkeel.runtime.guards import EventSink
from agentkeel.runtime.types import Reply
from agentkeel.secrets.redact import SecretRedactor, StreamRedactor
from agentkeel.tools.types import ToolContext, ToolResult, ToolSet

__all__ = ["OutputSanitizer", "RedactedToolError", "RedactingToolSet", "SanitizedStream"]


class RedactedToolError(Exception):
    """A tool's exception whose text held a secret, with the secret replaced."""


class RedactingToolSet:
    """A ``ToolSet`` whose results come back with secrets replaced.

    >>> tools = RedactingToolSet(inner, redactor)
    """

    def __init__(self, inner: ToolSet, redactor: SecretRedactor) -> None:
        self.inner = inner
        self._redactor = redactor

    async def list_tools(self) -> Sequence[ToolSpec]:
        return await self.inner.list_tools()

    async def call(
        self, name: str, arguments: dict[str, Any], *, context: ToolContext
    ) -> ToolResult:
        try:
            result = await self.inner.call(name, arguments, context=context)
        except Exception as exc:
            # The runtime shows a tool's exception text to the model: clean it too.
            message = str(exc)
            cleaned_message = self._redactor.redact(message, where="tool_result")
            if cleaned_message is message:
                raise
            raise RedactedToolError(f"{type(exc).__name__}: {cleaned_message}") from None
        cleaned = self._redactor.redact(result.content, where="tool_result")
        return result if cleaned is result.content else replace(result, content=cleaned)


class SanitizedStream:
    """A turn's event sink with secrets held back and replaced in ``token`` events."""

    def __init__(self, sink: EventSink, redactor: SecretRedactor) -> None:
        self._sink = sink
        self._tokens = StreamRedactor(redactor, where="reply")

    async def __call__(self, event: str, data: Mapping[str, Any]) -> None:
        if event == "token":
            text = self._tokens.feed(str(data.get("text", "")))
            if text:
                await self._sink(event, {**data, "text": text})
            return
        await self.flush()
        await self._sink(event, data)

    async def flush(self) -> None:
        """Pass on the tokens held back (the end of a model step or of the turn)."""
        rest = self._tokens.flush()
        if rest:
            await self._sink("token", {"text": rest})


class OutputSanitizer:
    """The three places a turn's output is scanned, over one ``SecretRedactor``."""

    def __init__(self, redactor: SecretRedactor) -> None:
        self.redactor = redactor

    def tools(self, toolset: ToolSet | None) -> ToolSet | None:
        return RedactingToolSet(toolset, self.redactor) if toolset is not None else None

    def stream(self, sink: EventSink | None) -> SanitizedStream | None:
        return SanitizedStream(sink, self.redactor) if sink is not None else None

    def reply(self, reply: Reply) -> Reply:
        """The reply with secrets replaced in its content (counted) and in the messages
        kept as context (already counted there, or as tool results)."""
        content = self.redactor.redact(reply.content, where="reply")
        messages = [self._message(message) for message in reply.messages]
        if content is reply.content and all(
            new is old for new, old in zip(messages, reply.messages, strict=True)
        ):
            return reply
        return replace(reply, content=content, messages=messages)

    def _message(self, message: ChatMessage) -> ChatMessage:
        cleaned = self.redactor.redact(message.content, where="reply", record=False)
        return message if cleaned is message.content else replace(message, content=cleaned)

"""``ToolAgent``: the built-in agent, configured from settings.

It runs the usual loop: ask the model, run the tools it asks for, give it the
results, and repeat until it answers without calling a tool. Guardrails end
the loop early (a tool storm, the step limit); the agent then answers
without tools, or with a plain reply saying why it stopped, so the user
always gets a reply and the turn is stored.
"""

from __future__ import annotations

from collections.abc import Sequence

from agentkeel.config.settings import KeelSettings
from agentkeel.models.types import ChatMessage, ModelResponse, ToolSpec
from agentkeel.runtime.guards import StepLimitReached
from agentkeel.runtime.types import Reply, Turn


class ToolAgent:
    """Answer with a model and tools.

    ``system_prompt`` opens every request (``None`` or blank: no system
    message). ``tools`` narrows the tools offered to the model (``None``: every
    tool the turn allows). ``history_turns`` is how many earlier turns of the
    session the model sees (``None``: all of them, as far as the context window
    allows; ``0``: none). ``max_output_tokens`` caps each model call; the
    runtime's ``guardrails.max_output_tokens`` caps it too.

    >>> agent = ToolAgent(system_prompt="You are terse.", tools=["calculator"], history_turns=4)
    """

    def __init__(
        self,
        *,
        system_prompt: str | None = None,
        tools: Sequence[str] | None = None,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
        history_turns: int | None = None,
    ) -> None:
        if history_turns is not None and history_turns < 0:
            raise ValueError(
                f"history_turns is {history_turns}; use 0 (no history), a positive number "
                "of turns, or None (all of them)."
            )
        self.system_prompt = system_prompt
        self.tools = tuple(tools) if tools is not None else None
        self.temperature = temperature
        self.max_output_tokens = max_output_tokens
        self.history_turns = history_turns

    @classmethod
    def from_settings(cls, settings: KeelSettings) -> ToolAgent:
        """The agent that ``agent.*`` describes; its reply cap is ``agent.max_output_tokens``
        within the turn's ``guardrails.max_output_tokens``. It offers every tool the turn allows
        (``agent.tools``, which a flag or an override may change per turn)."""
        return cls(
            system_prompt=settings.agent.system_prompt,
            tools=None,
            temperature=settings.agent.temperature,
            # The guarded model caps every call at the turn's guardrails.max_output_tokens
            # (live: a flag may raise it); only the agent's own cap is fixed here.
            max_output_tokens=settings.agent.max_output_tokens,
            history_turns=settings.agent.history_turns,
        )

    async def respond(self, turn: Turn) -> Reply:
        specs = [
            spec
            for spec in await turn.tools.list_tools()
            if self.tools is None or spec.name in self.tools
        ]
        conversation: list[ChatMessage] = []
        if self.system_prompt and self.system_prompt.strip():
            conversation.append(ChatMessage(role="system", content=self.system_prompt))
        conversation.extend(recent_turns(turn.history, self.history_turns))
        conversation.append(ChatMessage(role="user", content=turn.content))
        exchange: list[ChatMessage] = []
        while turn.tools.stopped is None:
            try:
                response = await self._ask(turn, [*conversation, *exchange], with_tools=specs)
            except StepLimitReached as stop:
                return _final(stop.reply, exchange)
            if not response.tool_calls:
                return _final(response.content, exchange)
            exchange.append(
                ChatMessage(
                    role="assistant", content=response.content, tool_calls=response.tool_calls
                )
            )
            for call in response.tool_calls:
                result = await turn.tools.call(call)
                exchange.append(
                    ChatMessage(
                        role="tool", content=result.content, tool_call_id=call.id, name=call.name
                    )
                )
        reason = turn.tools.stopped
        turn.log.info("tool loop stopped: %s", reason, extra={"event": "guardrail"})
        fallback = f"I had to stop using tools before finishing. {reason}"
        try:
            response = await self._ask(turn, [*conversation, *exchange], with_tools=())
        except StepLimitReached:
            return _final(fallback, exchange)
        # Without tools on offer a model may still ask for one; the user gets
        # the reason instead of an empty answer.
        if response.tool_calls or not response.content.strip():
            return _final(fallback, exchange)
        return _final(response.content, exchange)

    async def _ask(
        self, turn: Turn, messages: Sequence[ChatMessage], *, with_tools: Sequence[ToolSpec]
    ) -> ModelResponse:
        return await turn.model.complete(
            messages,
            tools=with_tools,
            max_tokens=self.max_output_tokens,
            temperature=self.temperature,
        )


def recent_turns(history: Sequence[ChatMessage], turns: int | None) -> list[ChatMessage]:
    """The messages of the last ``turns`` turns of ``history`` (``None``: all of it).

    A turn starts at a user message and holds what followed it: tool calls,
    tool results and the answer, so a turn is never cut in half.

    >>> history = [ChatMessage("user", "a"), ChatMessage("assistant", "1"),
    ...            ChatMessage("user", "b"), ChatMessage("assistant", "2")]
    >>> [message.content for message in recent_turns(history, 1)]
    ['b', '2']
    """
    if turns is None:
        return list(history)
    if turns == 0:
        return []
    starts = [index for index, message in enumerate(history) if message.role == "user"]
    if len(starts) <= turns:
        return list(history)
    return list(history[starts[-turns] :])


def _final(content: str, exchange: list[ChatMessage]) -> Reply:
    return Reply(
        content=content, messages=[*exchange, ChatMessage(role="assistant", content=content)]
    )

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

    ``tools`` narrows the tools offered to the model (``None``: every tool the
    turn allows). ``max_output_tokens`` caps each model call; the runtime's
    ``guardrails.max_output_tokens`` caps it too.

    >>> agent = ToolAgent(system_prompt="You are terse.", tools=["calculator"])
    """

    def __init__(
        self,
        *,
        system_prompt: str,
        tools: Sequence[str] | None = None,
        temperature: float | None = None,
        max_output_tokens: int | None = None,
    ) -> None:
        self.system_prompt = system_prompt
        self.tools = tuple(tools) if tools is not None else None
        self.temperature = temperature
        self.max_output_tokens = max_output_tokens

    @classmethod
    def from_settings(cls, settings: KeelSettings) -> ToolAgent:
        """The agent that ``agent.*`` and ``guardrails.max_output_tokens`` describe."""
        return cls(
            system_prompt=settings.agent.system_prompt,
            tools=settings.agent.tools,
            temperature=settings.agent.temperature,
            max_output_tokens=settings.guardrails.max_output_tokens,
        )

    async def respond(self, turn: Turn) -> Reply:
        specs = [
            spec
            for spec in await turn.tools.list_tools()
            if self.tools is None or spec.name in self.tools
        ]
        conversation: list[ChatMessage] = [
            ChatMessage(role="system", content=self.system_prompt),
            *turn.history,
            ChatMessage(role="user", content=turn.content),
        ]
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
        turn.log.info("tool loop stopped: %s", reason, extra={"category": "guardrail"})
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


def _final(content: str, exchange: list[ChatMessage]) -> Reply:
    return Reply(
        content=content, messages=[*exchange, ChatMessage(role="assistant", content=content)]
    )

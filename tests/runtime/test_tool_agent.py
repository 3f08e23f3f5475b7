"""ToolAgent: the model → tools → model loop, and how it ends under guardrails."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from agentkeel.config.settings import KeelSettings, RetrySettings
from agentkeel.models.gateway import ModelGateway
from agentkeel.models.scripted import CallTools, OnEnd, Say, ScriptedProvider, StepLike
from agentkeel.models.types import ChatMessage, ToolCall
from agentkeel.resilience.clock import ManualClock
from agentkeel.runtime.guards import GuardedModel, GuardedTools, TurnLog
from agentkeel.runtime.tool_agent import ToolAgent
from agentkeel.runtime.types import Agent, Turn
from agentkeel.telemetry.metrics import AgentMetrics, ModelMetrics
from agentkeel.tools.builtins import builtin_toolset
from agentkeel.tools.types import ToolContext

LOG = TurnLog(logging.getLogger("agentkeel.test.tool_agent"), {"agent_id": "a"})


def make_turn(
    script: Sequence[StepLike],
    *,
    content: str = "What is 6 * 7?",
    history: Sequence[ChatMessage] = (),
    max_steps: int = 10,
    storm_threshold: int = 3,
    on_end: OnEnd = "echo",
) -> tuple[Turn, ScriptedProvider, GuardedTools]:
    registry = CollectorRegistry()
    clock = ManualClock()
    metrics = AgentMetrics(registry)
    provider = ScriptedProvider(script=script, clock=clock, on_end=on_end)
    gateway = ModelGateway(
        providers=[provider],
        breakers={},
        retry=RetrySettings(max_attempts=1),
        metrics=ModelMetrics(registry),
        clock=clock,
    )
    model = GuardedModel(
        gateway=gateway,
        metrics=metrics,
        log=LOG,
        agent_id="a",
        session_id="s",
        user_id="u",
        max_steps=max_steps,
        max_output_tokens=256,
        context_trim_ratio=0.85,
    )
    tools = GuardedTools(
        toolset=builtin_toolset(["calculator", "current_time"], clock=clock),
        context=ToolContext(agent_id="a", session_id="s", user_id="u", turn=1),
        metrics=metrics,
        log=LOG,
        clock=clock,
        storm_threshold=storm_threshold,
    )
    turn = Turn(
        session_id="s",
        user_id="u",
        agent_id="a",
        number=1,
        content=content,
        history=list(history),
        model=model,
        tools=tools,
        log=LOG,
    )
    return turn, provider, tools


def agent(**options: Any) -> ToolAgent:
    return ToolAgent(system_prompt="You are terse.", **options)


def test_tool_agent_is_an_agent() -> None:
    """ToolAgent satisfies the Agent Protocol."""
    assert isinstance(agent(), Agent)


def test_from_settings_uses_the_agent_section() -> None:
    """The prompt, temperature, history length and own reply cap come from agent.*; the
    tools and the guardrail cap are the turn's (live), applied by the guarded handles."""
    settings = KeelSettings.model_validate(
        {
            "agent": {
                "system_prompt": "Be kind.",
                "tools": ["calculator"],
                "temperature": 0.5,
                "history_turns": 3,
                "max_output_tokens": None,
            },
            "guardrails": {"max_output_tokens": 77},
        }
    )
    built = ToolAgent.from_settings(settings)
    assert built.system_prompt == "Be kind."
    assert built.tools is None
    assert built.temperature == 0.5
    assert built.max_output_tokens is None
    assert built.history_turns == 3


@pytest.mark.parametrize(
    ("agent_cap", "guardrail_cap", "expected"),
    [(None, 300, None), (40, 300, 40), (500, 300, 500)],
)
def test_reply_cap_is_the_agents_own(
    agent_cap: int | None, guardrail_cap: int, expected: int | None
) -> None:
    """The agent asks for agent.max_output_tokens; the turn's guardrails.max_output_tokens
    (live) is applied by the guarded model (tests/runtime/test_live_turns.py)."""
    settings = KeelSettings.model_validate(
        {
            "agent": {"max_output_tokens": agent_cap},
            "guardrails": {"max_output_tokens": guardrail_cap},
        }
    )
    assert ToolAgent.from_settings(settings).max_output_tokens == expected


async def test_plain_reply_without_tools() -> None:
    """A reply with no tool calls ends the turn; the prompt is system + history + user."""
    history = [
        ChatMessage(role="user", content="Hi"),
        ChatMessage(role="assistant", content="Hello"),
    ]
    turn, provider, _ = make_turn(["Forty-two."], history=history)
    reply = await agent(temperature=0.1, max_output_tokens=64).respond(turn)
    assert reply.content == "Forty-two."
    assert [m.role for m in reply.messages] == ["assistant"]
    request = provider.requests[0]
    assert [m.role for m in request.messages] == ["system", "user", "assistant", "user"]
    assert request.messages[0].content == "You are terse."
    assert request.messages[-1].content == "What is 6 * 7?"
    assert request.temperature == 0.1
    assert request.max_tokens == 64
    assert {tool.name for tool in request.tools} == {"calculator", "current_time"}


def three_turns_of_history() -> list[ChatMessage]:
    """Three earlier turns; the second called a tool before answering."""
    return [
        ChatMessage(role="user", content="first"),
        ChatMessage(role="assistant", content="one"),
        ChatMessage(role="user", content="second"),
        ChatMessage(
            role="assistant",
            content="",
            tool_calls=(ToolCall(id="c1", name="calculator", arguments={"expression": "1+1"}),),
        ),
        ChatMessage(role="tool", content="2", tool_call_id="c1", name="calculator"),
        ChatMessage(role="assistant", content="two"),
        ChatMessage(role="user", content="third"),
        ChatMessage(role="assistant", content="three"),
    ]


async def test_history_turns_keeps_only_the_most_recent_whole_turns() -> None:
    """history_turns=2 sends the last two turns, tool calls and results included, and
    never half a turn."""
    turn, provider, _ = make_turn(["ok"], history=three_turns_of_history())
    await agent(history_turns=2).respond(turn)
    sent = provider.requests[0].messages
    assert [m.content for m in sent] == [
        "You are terse.",
        "second",
        "",
        "2",
        "two",
        "third",
        "three",
        "What is 6 * 7?",
    ]


async def test_history_turns_zero_sends_no_history_and_none_sends_all() -> None:
    """0 sends only the system prompt and the new message; None sends every earlier turn."""
    history = three_turns_of_history()
    turn, provider, _ = make_turn(["ok"], history=history)
    await agent(history_turns=0).respond(turn)
    assert [m.role for m in provider.requests[0].messages] == ["system", "user"]
    turn, provider, _ = make_turn(["ok"], history=history)
    await agent(history_turns=None).respond(turn)
    assert len(provider.requests[0].messages) == len(history) + 2
    turn, provider, _ = make_turn(["ok"], history=history)
    await agent(history_turns=10).respond(turn)
    assert len(provider.requests[0].messages) == len(history) + 2


def test_negative_history_turns_is_refused() -> None:
    """A negative history_turns is a ValueError that says which values work."""
    with pytest.raises(ValueError, match="history_turns is -1"):
        agent(history_turns=-1)


@pytest.mark.parametrize("prompt", [None, "", "   "])
async def test_no_system_prompt_sends_no_system_message(prompt: str | None) -> None:
    """A None or blank system prompt leaves the system message out entirely."""
    turn, provider, _ = make_turn(["ok"])
    await ToolAgent(system_prompt=prompt).respond(turn)
    assert [m.role for m in provider.requests[0].messages] == ["user"]


async def test_tool_loop_runs_tools_and_feeds_results_back() -> None:
    """Tool calls run, their results go back to the model, and the exchange is kept."""
    turn, provider, _ = make_turn(
        [CallTools.one("calculator", expression="6 * 7"), Say("It is 42.")]
    )
    reply = await agent().respond(turn)
    assert reply.content == "It is 42."
    roles = [m.role for m in reply.messages]
    assert roles == ["assistant", "tool", "assistant"]
    assert reply.messages[0].tool_calls[0].name == "calculator"
    assert reply.messages[1].content == "42"
    assert reply.messages[1].tool_call_id == reply.messages[0].tool_calls[0].id
    second = provider.requests[1].messages
    assert second[-1].role == "tool"
    assert second[-1].content == "42"


async def test_tools_option_narrows_what_the_model_is_offered() -> None:
    """ToolAgent(tools=[...]) offers only those tools."""
    turn, provider, _ = make_turn(["ok"])
    await agent(tools=["current_time"]).respond(turn)
    assert [tool.name for tool in provider.requests[0].tools] == ["current_time"]


async def test_tool_storm_ends_with_a_reply_from_a_call_without_tools() -> None:
    """After a storm the agent asks the model once more, with no tools on offer."""
    same = CallTools.one("calculator", expression="1 + 1")
    turn, provider, tools = make_turn([same, same, same, Say("Two, I think.")])
    reply = await agent().respond(turn)
    assert tools.stopped is not None
    assert reply.content == "Two, I think."
    assert provider.requests[-1].tools == ()
    assert len(provider.requests) == 4
    statuses = [call["status"] for call in tools.calls]
    assert statuses == ["success", "success", "rejected"]


async def test_tool_storm_with_a_model_that_insists_gives_a_plain_reply() -> None:
    """When the last model call still asks for tools the reply states why it stopped."""
    turn, _, _ = make_turn([CallTools.one("calculator", expression="1 + 1")], on_end="repeat")
    reply = await agent().respond(turn)
    assert reply.content.startswith("I had to stop using tools before finishing.")
    assert "'calculator' was called 3 times" in reply.content
    assert reply.messages[-1] == ChatMessage(role="assistant", content=reply.content)


async def test_step_limit_ends_with_a_reply_saying_so() -> None:
    """At the step limit the agent replies that it stopped instead of raising."""
    script = [CallTools.one("calculator", expression=f"{n} + 1") for n in range(10)]
    turn, provider, _ = make_turn(script, max_steps=3)
    reply = await agent().respond(turn)
    assert len(provider.requests) == 3
    assert "3 model steps" in reply.content
    assert [m.role for m in reply.messages] == [
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
        "tool",
        "assistant",
    ]


async def test_storm_then_step_limit_still_replies() -> None:
    """If the storm leaves no step for the final call, the reply is the plain reason."""
    same = CallTools.one("calculator", expression="2 * 2")
    turn, provider, _ = make_turn([same, same, same, Say("never")], max_steps=3)
    reply = await agent().respond(turn)
    assert len(provider.requests) == 3
    assert reply.content.startswith("I had to stop using tools")

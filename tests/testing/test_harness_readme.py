from __future__ import annotations

from agentkeel.testing import AgentHarness, CallTools, Say, ScriptStep


async def test_readme_example_agent_uses_the_calculator() -> None:
    """The README's harness example works as written: a scripted tool call, then a reply."""
    script: list[ScriptStep] = [CallTools.one("calculator", expression="6*7"), Say("42")]
    async with AgentHarness(script=script) as h:
        outcome = await h.say("what is 6*7?")
    assert outcome.reply == "42"
    assert [call["name"] for call in outcome.tool_calls] == ["calculator"]
    assert outcome.tool_calls[0]["status"] == "success"

from __future__ import annotations

from pathlib import Path

import pytest

from agentkeel.errors import ConfigError, ProviderError, ProviderRateLimited, ProviderTimeout
from agentkeel.models.scripted import CallTools, Fail, Say, ScriptedProvider, Wait, parse_step
from agentkeel.models.types import ChatMessage, ModelProvider, ModelRequest
from agentkeel.resilience.clock import ManualClock


def ask(text: str, *history: ChatMessage) -> ModelRequest:
    return ModelRequest(
        messages=[ChatMessage("system", "Be brief."), *history, ChatMessage("user", text)]
    )


def test_is_a_model_provider() -> None:
    """ScriptedProvider satisfies the ModelProvider Protocol."""
    assert isinstance(ScriptedProvider(script=[], clock=ManualClock()), ModelProvider)


async def test_steps_are_consumed_in_order_then_echo() -> None:
    """Replies follow the script; past its end the provider echoes the last user message."""
    provider = ScriptedProvider(script=["one", Say("two")], clock=ManualClock())
    assert (await provider.complete(ask("hi"))).content == "one"
    assert (await provider.complete(ask("hi"))).content == "two"
    response = await provider.complete(ask("hi"))
    assert response.content == "echo: hi"
    assert response.provider == "scripted"
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


async def test_repeat_keeps_calling_the_same_tool_forever() -> None:
    """on_end='repeat' repeats the last step: a model stuck calling one tool."""
    provider = ScriptedProvider(
        script=[CallTools.one("search", query="x")], on_end="repeat", clock=ManualClock()
    )
    calls = [(await provider.complete(ask("loop"))).tool_calls for _ in range(4)]
    assert all(c[0].name == "search" and c[0].arguments == {"query": "x"} for c in calls)
    assert [c[0].id for c in calls] == ["call_1", "call_2", "call_3", "call_4"]


async def test_each_conversation_has_its_own_cursor() -> None:
    """Two conversations (different first user messages) each start at the top of the script;
    later turns of one conversation continue where it left off."""
    provider = ScriptedProvider(script=["first", "second"], clock=ManualClock())
    assert (await provider.complete(ask("conversation A"))).content == "first"
    assert (await provider.complete(ask("conversation B"))).content == "first"
    follow_up = ask(
        "and then?", ChatMessage("user", "conversation A"), ChatMessage("assistant", "first")
    )
    assert (await provider.complete(follow_up)).content == "second"


async def test_global_cursor_shares_one_position() -> None:
    """cursor='global' walks the script once across all conversations."""
    provider = ScriptedProvider(script=["first", "second"], cursor="global", clock=ManualClock())
    assert (await provider.complete(ask("A"))).content == "first"
    assert (await provider.complete(ask("B"))).content == "second"


async def test_fail_steps_raise_provider_errors() -> None:
    """Error steps raise what a real endpoint's failure would become."""
    provider = ScriptedProvider(
        script=[
            Fail("timeout"),
            Fail("rate_limited", retry_after=3),
            Fail("server_error"),
            Fail("bad_request"),
            "ok",
        ],
        clock=ManualClock(),
    )
    with pytest.raises(ProviderTimeout) as timeout:
        await provider.complete(ask("x"))
    assert timeout.value.retryable
    with pytest.raises(ProviderRateLimited) as limited:
        await provider.complete(ask("x"))
    assert limited.value.retry_after == 3 and limited.value.status_code == 429
    with pytest.raises(ProviderError) as server:
        await provider.complete(ask("x"))
    assert server.value.retryable and server.value.status_code == 500
    with pytest.raises(ProviderError) as bad:
        await provider.complete(ask("x"))
    assert not bad.value.retryable
    assert (await provider.complete(ask("x"))).content == "ok"


async def test_latency_and_wait_steps_sleep_on_the_clock() -> None:
    """latency_s and Wait steps go through the injected clock, so tests never sleep."""
    clock = ManualClock()
    provider = ScriptedProvider(script=[Wait(5), "late"], latency_s=0.5, clock=clock)
    assert (await provider.complete(ask("x"))).content == "late"
    assert clock.slept == [0.5, 5]
    assert clock.monotonic() == 5.5


async def test_streams_words_to_on_token() -> None:
    """With on_token the reply arrives in pieces that join to the whole text."""
    provider = ScriptedProvider(script=["Hello there, friend."], clock=ManualClock())
    pieces: list[str] = []

    async def on_token(piece: str) -> None:
        pieces.append(piece)

    response = await provider.complete(ask("x"), on_token=on_token)
    assert len(pieces) == 3
    assert "".join(pieces) == response.content == "Hello there, friend."


async def test_records_requests_for_assertions() -> None:
    """Every request is kept in .requests; reset() forgets them and the cursors."""
    provider = ScriptedProvider(script=["a"], clock=ManualClock())
    await provider.complete(ask("x"))
    assert provider.requests[0].messages[-1].content == "x"
    provider.reset()
    assert provider.requests == []
    assert (await provider.complete(ask("x"))).content == "a"


async def test_from_file_reads_a_yaml_script(tmp_path: Path) -> None:
    """A YAML script sets the steps and on_end."""
    path = tmp_path / "script.yaml"
    path.write_text(
        "on_end: repeat\n"
        "steps:\n"
        "  - say: Let me check.\n"
        "  - tool_calls:\n"
        "      - {tool: calculator, arguments: {expression: '2 + 2'}}\n"
        "  - error: rate_limited\n"
        "    retry_after: 2\n"
        "  - error: server_error\n"
        "    streamed: It is\n"
        "  - wait: 1.5\n"
        "  - It is 4.\n",
        encoding="utf-8",
    )
    clock = ManualClock()
    provider = ScriptedProvider.from_file(path, clock=clock, name="demo")
    assert provider.steps == (
        Say("Let me check."),
        CallTools(calls=(("calculator", {"expression": "2 + 2"}),)),
        Fail("rate_limited", retry_after=2.0),
        Fail("server_error", streamed="It is"),
        Wait(1.5),
        Say("It is 4."),
    )
    assert (await provider.complete(ask("q"))).content == "Let me check."
    assert (await provider.complete(ask("q"))).tool_calls[0].name == "calculator"
    with pytest.raises(ProviderRateLimited):
        await provider.complete(ask("q"))
    streamed: list[str] = []

    async def on_token(text: str) -> None:
        streamed.append(text)

    with pytest.raises(ProviderError, match="server error"):
        await provider.complete(ask("q"), on_token=on_token)
    assert "".join(streamed) == "It is"
    assert (await provider.complete(ask("q"))).content == "It is 4."
    assert (await provider.complete(ask("q"))).content == "It is 4."
    assert clock.slept == [1.5]


def test_bad_scripts_say_what_to_write(tmp_path: Path) -> None:
    """Unknown step shapes and errors fail with a ConfigError naming the valid forms."""
    with pytest.raises(ConfigError, match="say, tool_calls, error, wait"):
        parse_step({"shout": "hi"})
    with pytest.raises(ConfigError, match="timeout, rate_limited"):
        parse_step({"error": "meltdown"})
    path = tmp_path / "bad.yaml"
    path.write_text("steps: [\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ScriptedProvider.from_file(path)
    with pytest.raises(ConfigError, match="cannot be read"):
        ScriptedProvider.from_file(tmp_path / "missing.yaml")
